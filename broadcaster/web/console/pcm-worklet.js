// Runs on the audio thread: turns the microphone's samples (at the context's rate, usually
// 48 kHz) into 20 ms frames of 16 kHz mono s16le for the paging socket, and measures the level.
// Downsampling averages the input over each output sample's span (a box filter): a plain
// low-pass that keeps speech and removes most of what would fold back above 8 kHz.

const TARGET = 16000;
const FRAME = TARGET / 50; // samples in 20 ms

class PcmCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / TARGET;
    this.phase = 0;
    this.acc = 0;
    this.count = 0;
    this.frame = new Int16Array(FRAME);
    this.n = 0;
    this.peak = 0;
    this.sumsq = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const ch = input[0];
    for (let i = 0; i < ch.length; i++) {
      let x = ch[i];
      for (let c = 1; c < input.length; c++) x = (x + input[c][i]) / 2; // mix down, rarely
      this.acc += x;
      this.count += 1;
      this.phase += 1;
      if (this.phase >= this.ratio) {
        this.phase -= this.ratio;
        const y = Math.max(-1, Math.min(1, this.acc / this.count));
        this.acc = 0;
        this.count = 0;
        this.frame[this.n++] = y < 0 ? y * 0x8000 : y * 0x7fff;
        const a = Math.abs(y);
        if (a > this.peak) this.peak = a;
        this.sumsq += y * y;
        if (this.n === FRAME) {
          const pcm = this.frame.buffer;
          this.port.postMessage({ pcm, peak: this.peak, rms: Math.sqrt(this.sumsq / FRAME) }, [pcm]);
          this.frame = new Int16Array(FRAME);
          this.n = 0;
          this.peak = 0;
          this.sumsq = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("pcm-capture", PcmCapture);

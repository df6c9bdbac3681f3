"""The sound card: consumes 20 ms frames at their play instants, records what it played, and feeds
a real output (aplay, or any player command) when the speaker has one."""

from __future__ import annotations

import json
import wave
from pathlib import Path

from broadcaster.endpoint.outputs import PipeOutput
from broadcaster.protocol.playout import Frame


class SoundCard:
    """Writes played frames to DIR/<speaker>/<broadcast>.wav; appends a line to playout.jsonl."""

    def __init__(
        self,
        speaker_id: str,
        broadcast: str,
        rate: int,
        record_dir: Path | None,
        output: PipeOutput | None = None,
        wav: bool = True,  # a light speaker (scale runs) keeps only its playout line
    ) -> None:
        self.rate = rate
        self.samples = 0
        self.output = output
        self._wav: wave.Wave_write | None = None
        self._dir = Path(record_dir) / speaker_id if record_dir else None
        if self._dir is not None:
            self._dir.mkdir(parents=True, exist_ok=True)
        if self._dir is not None and wav:
            safe = "".join(c for c in broadcast if c.isalnum() or c in "-_") or "broadcast"
            # open for the whole broadcast, closed in close()
            self._wav = wave.open(str(self._dir / f"{safe}.wav"), "wb")  # noqa: SIM115
            self._wav.setnchannels(1)
            self._wav.setsampwidth(2)
            self._wav.setframerate(rate)

    def play(self, frame: Frame) -> None:
        """Output one frame (silence when its packet never came)."""
        n = self.rate // 50
        pcm = frame.pcm if frame.pcm is not None else bytes(2 * n)
        self.samples += len(pcm) // 2
        if self._wav is not None:
            self._wav.writeframesraw(pcm)
        if self.output is not None:
            self.output.write(pcm)

    def close(self, report: dict) -> None:
        """Finish the recording and log the broadcast's playout record."""
        if self._wav is not None:
            self._wav.close()
            self._wav = None
        if self.output is not None:
            self.output.close()
            self.output = None
        if self._dir is not None:
            with open(self._dir / "playout.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(report, ensure_ascii=False) + "\n")

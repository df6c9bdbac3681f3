"""Audio sources a broadcast plays from: a file, a library clip, TTS, a sequence, live audio."""

"""Audio sources a broadcast plays from: an uploaded file, a library clip, TTS text, a sequence, live audio."""

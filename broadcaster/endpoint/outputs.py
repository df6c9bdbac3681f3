"""Audio outputs of a real speaker: the PCM a broadcast plays, piped to a player such as aplay."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shlex
import subprocess
import sys
import threading
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

log = logging.getLogger(__name__)
DRAIN_LIMIT = 5.0  # seconds a player may take to drain and exit before it is killed


def output_command(spec: str) -> str:
    """The shell command for an --output spec: `alsa[:DEVICE]` or `pipe:COMMAND`.

    COMMAND reads mono s16le PCM on stdin; `{rate}`, `{speaker}` and `{broadcast}` are filled in.
    """
    if spec == "alsa" or spec.startswith("alsa:"):
        device = spec.partition(":")[2] or "default"
        return f"aplay -q -t raw -f S16_LE -c 1 -r {{rate}} -D {shlex.quote(device)}"
    if spec.startswith("pipe:") and spec[5:].strip():
        return spec[5:]
    raise ValueError(f"unknown output {spec!r}: use alsa[:DEVICE] or pipe:COMMAND")


class PipeOutput:
    """One broadcast's audio written, at the volume set, into a player process's stdin."""

    def __init__(self, command: str, rate: int, volume: int, speaker: str, broadcast: str) -> None:
        safe = "".join(c for c in broadcast if c.isalnum() or c in "-_")
        cmd = command.format(rate=rate, speaker=shlex.quote(speaker), broadcast=safe)
        self.volume = volume
        self.dropped = 0
        self.reaped = threading.Event()  # set once the player process has exited and been reaped
        self._proc = subprocess.Popen(
            ["/bin/sh", "-c", cmd], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
        )
        assert self._proc.stdin is not None
        self._fd = self._proc.stdin.fileno()
        # never let a stuck player block the event loop: a full pipe drops the frame instead
        fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) | os.O_NONBLOCK)

    def write(self, pcm: bytes) -> None:
        """Queue one frame for the player."""
        if self.volume != 100:
            pcm = audioop.mul(pcm, 2, self.volume / 100)
        if sys.byteorder != "little":
            pcm = audioop.byteswap(pcm, 2)
        try:
            os.write(self._fd, pcm)
        except BlockingIOError:
            self.dropped += 1
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            self.dropped += 1

    def close(self) -> None:
        """End the player's input; it drains and is reaped off the event loop (never waited on).

        Waiting here blocked the speaker's loop for as long as the player took to drain (up to
        the output latency, seconds for a slow player), so an emergency's /play waited behind it.
        """
        try:
            self._proc.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        if self.dropped:
            log.warning("output dropped %d frames (player too slow)", self.dropped)
        threading.Thread(target=self._reap, name=f"reap-{self._proc.pid}", daemon=True).start()

    def _reap(self) -> None:
        try:
            self._proc.wait(timeout=DRAIN_LIMIT)
        except subprocess.TimeoutExpired:
            log.warning(
                "output player %d did not exit in %.0f s: killed", self._proc.pid, DRAIN_LIMIT
            )
            self._proc.kill()
            self._proc.wait()
        self.reaped.set()

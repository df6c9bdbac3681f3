"""Network helpers for tests: free loopback ports, and what this process may ask of the kernel."""

from __future__ import annotations

import os
import socket
import threading


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_even_port() -> int:
    """A free even UDP port on 127.0.0.1 (RTP; RTCP takes the next)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port % 2 == 0:
            return port


def may_realtime() -> bool:
    """Whether this process may give a thread a real-time priority (root, CAP_SYS_NICE)."""
    ok: list[bool] = []

    def probe() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
            ok.append(True)
        except OSError:
            ok.append(False)

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return ok[0]

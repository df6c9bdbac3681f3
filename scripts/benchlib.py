"""Helpers shared by scripts/bench and scripts/bench_snapcast: percentiles, process CPU from
/proc, free loopback ports, tables. Standard library only; no timing assertions anywhere."""

from __future__ import annotations

import math
import os
import socket
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


def ensure_venv() -> None:
    """Re-exec this script with the project's venv python when started with another one."""
    if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), sys.argv[0], *sys.argv[1:]])


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    if len(vals) == 1:
        return vals[0]
    pos = (len(vals) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


def summary(values: list[float], scale: float = 1.0) -> dict:
    """n, p50, p99, max (and min, mean) of values, multiplied by scale (1000 for ms)."""
    vals = [v * scale for v in values if v is not None]
    if not vals:
        return {
            "n": 0,
            "p50": None,
            "p99": None,
            "max": None,
            "min": None,
            "mean": None,
            "p1": None,
        }
    return {
        "n": len(vals),
        "p1": percentile(vals, 1),
        "p50": percentile(vals, 50),
        "p99": percentile(vals, 99),
        "max": max(vals),
        "min": min(vals),
        "mean": statistics.fmean(vals),
    }


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc/<pid>/stat, in seconds."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is state (field 3 of stat); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process: Python's own work vs. the kernel's for it."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


class MachineMeter:
    """The whole machine's CPU over an interval, from /proc/stat: how busy its cores were and
    how much time the hypervisor took from them (steal) — what a figure measured beside other
    work needs said of it."""

    def __init__(self) -> None:
        self._t0 = self._read()

    @staticmethod
    def _read() -> list[int]:
        # user nice system idle iowait irq softirq steal
        return [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]

    def result(self) -> dict:
        """Busy and steal, % of all cores since this meter was made."""
        d = [b - a for a, b in zip(self._t0, self._read(), strict=True)]
        total = sum(d) or 1
        return {
            "busy_pct": round(100 * (total - d[3] - d[4]) / total, 1),
            "steal_pct": round(100 * d[7] / total, 1),
        }


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on host right now (the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def fmt(v, digits: int = 1) -> str:
    """A number for a table cell; '-' for None."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def table(headers: list[str], rows: list[list], digits: int = 1) -> str:
    """A plain text table with right-aligned numbers."""
    cells = [[fmt(c, digits) if not isinstance(c, str) else c for c in r] for r in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(
        h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths))
    )
    out = [line, "-" * len(line)]
    for r in cells:
        out.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
            )
        )
    return "\n".join(out)


def stat_row(label: str, s: dict, unit: str = "ms") -> list:
    """One table row: label, p50, p99, max, n."""
    return [label, s.get("p50"), s.get("p99"), s.get("max"), str(s.get("n", "")), unit]


STAT_HEADERS = ["metric", "p50", "p99", "max", "n", "unit"]

"""A bare event loop beside a benchmark: the loop lag this machine gives a loop doing nothing.

`python scripts/loop_probe.py OUT` runs an asyncio loop with only `LoopWatch` in it and writes
its snapshot (p99, max; and the own part, net of waiting for a core) to OUT every second. A
benchmark runs it on the controller's loop's cores, at the controller's priority: a stall that
the bare loop shows as well is the machine's (a virtual machine's host taking the core, memory
given back and faulted in again), not the controller's.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from broadcaster.core.loopwatch import LoopWatch  # noqa: E402


async def main(out: str) -> None:
    watch = LoopWatch()
    watch.start()
    while True:
        await asyncio.sleep(1.0)
        snap = watch.snapshot()
        tmp = out + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(snap, fh)
        os.replace(tmp, out)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

"""A serving controller's worker threads are all started before its sockets open: none is
started (and waited for) in a turn of the loop later."""

from __future__ import annotations

import asyncio
import threading

from broadcaster.web.server import warm_executor


def workers() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("asyncio_")}


async def test_every_worker_thread_is_started_before_it_is_needed():
    loop = asyncio.get_running_loop()
    before = workers()
    pool = warm_executor(loop, 4)
    started = workers() - before
    assert len(started) == 4
    # four calls at once run on the threads already there: none is started for them
    gate = threading.Barrier(4)
    names = await asyncio.gather(
        *(
            asyncio.to_thread(lambda: (gate.wait(5), threading.current_thread().name)[1])
            for _ in range(4)
        )
    )
    assert set(names) == started
    assert workers() - before == started
    pool.shutdown(wait=True)

"""The journal: append-only JSON-lines logs under one directory (the failure log IEC 60849 asks
for), written in order by one thread of their own.

Callers on the event loop only queue. A record may be given as a function that builds it
(`Broadcast.to_dict`): it is then built on the journal's thread when the line is written, so a
broadcast to a thousand speakers is never serialised on the event loop (it held the loop 5–10 ms
at each end, docs/scale.md). A file that cannot be written (disk full, read-only) is logged and
the line lost; a broadcast never stops for its journal.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broadcaster import jsonio

log = logging.getLogger(__name__)

Record = dict[str, Any] | Callable[[], dict[str, Any]]


class Journal:
    """JSON-lines files in `directory`, one line per record, in the order appended."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="journal")
        self._pool.submit(int)  # its thread started now, not at the first line (a wait then)
        self._closed = False

    def append(self, name: str, record: Record) -> None:
        """Queue one line for `directory/name` (a dict, or a function returning one)."""
        if self._closed:
            log.error("journal closed: a line for %s was not written", name)
            return
        self._pool.submit(self._write, name, record)

    def _write(self, name: str, record: Record) -> None:
        try:
            d = record() if callable(record) else record
            line = jsonio.dumps(d, default=str) + b"\n"
            with open(self.directory / name, "ab") as fh:
                fh.write(line)
        except OSError as exc:  # a full disk must not stop a broadcast
            log.error("cannot write %s: %s", name, exc)
        except Exception:  # a record that cannot be built or written is logged, never raised
            log.exception("journal: a line for %s could not be made", name)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every line queued so far is written; False on timeout."""
        if self._closed:
            return True
        try:
            self._pool.submit(lambda: None).result(timeout)
        except concurrent.futures.TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        self._closed = True
        self._pool.shutdown(wait=True)

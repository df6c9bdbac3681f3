"""Records whose JSON row is built once and kept until one of their fields is set.

A district's speaker list and a broadcast to a thousand speakers are turned into rows again and
again (every request for the list; every change of the broadcast, for the history and the
journal) while most of their records have not changed since: each record keeps its row and
forgets it whenever a field is set. A field that holds a dict or list must be replaced whole,
never changed in place, for the change to be seen.
"""

from __future__ import annotations


class KeptRow:
    """Mixin (of a dataclass): `row()` built by `_build_row()`, kept until a field is set."""

    def __setattr__(self, name: str, value: object) -> None:
        d = self.__dict__
        d[name] = value
        d.pop("_row", None)

    def row(self) -> dict:
        """The row, shared: read it, do not change it (`dict(x.row())` for one's own)."""
        d = self.__dict__
        row = d.get("_row")
        if row is None:
            row = d["_row"] = self._build_row()
        return row

    def _build_row(self) -> dict:
        raise NotImplementedError

"""Records whose JSON row is built once and kept until one of their fields is set.

A district's speaker list is turned into rows on every request for it while most speakers have
not changed since: each record keeps its row and forgets it whenever a field is set. A field that
holds a dict or list must be replaced whole, never changed in place, for the change to be seen.

Every field set then costs a Python call (about 0.4 µs): right for records made once and read
often (a speaker's state), wrong for ones made by the thousand in one turn of the loop. A
broadcast's per-speaker results were kept this way for a while: making 1,000 of them at set-up
took 4.9 ms instead of 0.6, in the turn that is already the loop's longest, for 1 ms saved at
each save of the broadcast.
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

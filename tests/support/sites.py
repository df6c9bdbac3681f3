"""A small site written on the fly, for tests that need their own zones file."""

from __future__ import annotations

import random
from pathlib import Path


def small_site(
    path: Path,
    *,
    villages: int = 2,
    horns: int = 3,
    columns: int = 2,
    village_multicast: bool = False,
    static: dict[str, str] | None = None,
) -> Path:
    """Write a zones.yaml with one area; random multicast groups keep concurrent runs apart."""
    rng = random.Random()
    static = static or {}

    def spk(sid: str, kind: str) -> str:
        addr = f', address: "{static[sid]}"' if sid in static else ""
        return f"      - {{id: {sid}, kind: {kind}{addr}}}\n"

    out = [
        "site:\n  id: sd\n  name: 测试街道\n  seat:\n    id: seat\n    name: 驻地\n    speakers:\n"
    ]
    out += [
        spk(f"col-{i}", "column").replace("      -", "      -", 1) for i in range(1, columns + 1)
    ]
    out.append("  areas:\n    - id: a1\n      name: 一管区\n      villages:\n")
    for v in range(1, villages + 1):
        out.append(f"        - id: v{v}\n          name: 村{v}\n")
        if village_multicast:
            group = f"239.77.{rng.randrange(1, 250)}.{rng.randrange(1, 250)}"
            out.append(f'          multicast: "{group}:{2 * rng.randrange(20000, 30000)}"\n')
        out.append("          speakers:\n")
        out += ["    " + spk(f"h{v}-{h}", "horn") for h in range(1, horns + 1)]
    path.write_text("".join(out), encoding="utf-8")
    return path

"""The layout holds: packages import in one direction, each library sits behind one module.

Every module under broadcaster/ and audio_library/ is parsed with `ast` (nothing is imported),
and the import graph of our own modules is checked against the layer table, which is the same
table docs/architecture.md shows (a test below keeps the two equal). Imports inside functions
count: a late import hides a dependency from the interpreter, not from the design.
"""

from __future__ import annotations

import ast
import itertools
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = ("broadcaster", "audio_library")
DOC = ROOT / "docs" / "architecture.md"

# What each sub-package of broadcaster may import, besides itself (lowest layer first).
# `errors` and `jsonio` are the modules broadcaster/errors.py and broadcaster/jsonio.py;
# `audio_library` is the separate package.
# layers 0 and 1, minus storage
_WIRE = frozenset({"errors", "jsonio", "site", "protocol", "net"})
_BELOW_CORE = _WIRE | {"storage", "access", "sources", "audio_library"}
LAYERS: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "jsonio": frozenset(),
    "site": frozenset({"errors", "jsonio"}),
    "protocol": frozenset({"errors", "jsonio"}),
    "net": frozenset({"errors", "jsonio"}),
    "storage": frozenset({"errors", "jsonio"}),
    "access": frozenset({"errors", "jsonio", "site", "storage"}),
    "sources": _WIRE | {"audio_library"},
    "drivers": _WIRE,
    "endpoint": _WIRE,
    "core": _BELOW_CORE | {"drivers"},
    "scheduler": _BELOW_CORE | {"core"},
    "web": _BELOW_CORE | {"core", "scheduler"},
    "cli": _BELOW_CORE | {"core", "scheduler", "web", "endpoint"},
}

# Each third-party library is imported only here (a path ending in "/" is a whole folder).
LIBRARY_HOMES: dict[str, tuple[str, ...]] = {
    "zeroconf": ("broadcaster/net/mdns.py",),
    "pylibsrtp": ("broadcaster/protocol/srtp.py",),
    "sqlite_utils": ("broadcaster/storage/", "audio_library/storage.py"),
    "pydub": ("broadcaster/sources/sequence.py",),
    "argon2": ("broadcaster/access/accounts.py",),
    "apscheduler": ("broadcaster/scheduler/",),
    "orjson": ("broadcaster/jsonio.py",),
}

# The core knows drivers only through the seam: the protocol and the name -> class registry.
DRIVER_SEAM = frozenset(
    {"broadcaster.drivers", "broadcaster.drivers.base", "broadcaster.drivers.registry"}
)

# broadcaster uses the audio library through its package API; the CLI also mounts its commands.
LIBRARY_API: dict[str, frozenset[str]] = {
    "audio_library": frozenset(LAYERS),
    "audio_library.cli": frozenset({"cli"}),
}

# Known breaches, each with the fix that removes it. An entry that no longer matches an import
# fails test_known_breaches_are_still_real, so this list can only shrink.
KNOWN_BREACHES: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Import:
    """One import statement's target, resolved to an absolute dotted name."""

    importer: str  # dotted module name
    target: str  # dotted name of the module imported (or its package, for `from X import obj`)
    path: str  # importer's file, relative to the repository
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} imports {self.target}"


def module_name(path: Path) -> str:
    """Dotted module name of a file under the repository root."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of our two packages, by dotted name."""
    found: dict[str, Path] = {}
    for top in OURS:
        for path in sorted((ROOT / top).rglob("*.py")):
            found[module_name(path)] = path
    return found


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base.pop()
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_in(name: str, path: Path) -> list[Import]:
    """Every import in one module (top level, in functions, in conditionals)."""
    rel = path.relative_to(ROOT).as_posix()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    known = modules()
    out: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [Import(name, a.name, rel, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, path.name == "__init__.py", node)
            if base == "__future__":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                # `from pkg import submodule` depends on the submodule, not only on pkg
                out.append(Import(name, sub if sub in known else base, rel, node.lineno))
    return list(dict.fromkeys(out))  # `from x import a, b` is one dependency, not two


@cache
def all_imports() -> tuple[Import, ...]:
    """Every import in broadcaster/ and audio_library/."""
    return tuple(i for name, path in modules().items() for i in imports_in(name, path))


def unit(dotted: str) -> str | None:
    """The part a module belongs to: a broadcaster sub-package, `errors`, or `audio_library`."""
    parts = dotted.split(".")
    if parts[0] == "audio_library":
        return "audio_library"
    if parts[0] == "broadcaster" and len(parts) > 1:
        return parts[1]
    return None


def top(dotted: str) -> str:
    """The distribution-level name of an import (`zeroconf.asyncio` -> `zeroconf`)."""
    return dotted.split(".")[0]


def internal(imports: Iterable[Import]) -> list[Import]:
    """Imports between different parts of broadcaster (and into audio_library), minus the
    known breaches."""
    return [
        i
        for i in imports
        if unit(i.importer)
        and unit(i.target)
        and unit(i.importer) != unit(i.target)
        and (i.importer, i.target) not in KNOWN_BREACHES
    ]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of a directed graph as a path [a, b, …, a], or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


# --- the tests --------------------------------------------------------------------------------


def test_the_parser_finds_our_imports():
    names = {(i.importer, i.target) for i in all_imports()}
    assert ("broadcaster.site.loader", "broadcaster.site.model") in names  # `from .model import`
    assert ("audio_library.library", "audio_library.chimes") in names  # `from . import chimes`
    assert ("broadcaster.web.api", "broadcaster.core.operations") in names
    assert len(modules()) > 60


def test_find_cycle_reports_the_path():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_every_subpackage_is_in_the_layer_table():
    parts = {unit(name) for name in modules() if name.startswith("broadcaster.")}
    missing = sorted(p for p in parts if p not in LAYERS)
    assert not missing, (
        f"broadcaster/{missing} has no row in the layer table: add one to "
        "LAYERS in tests/test_architecture.py and to docs/architecture.md"
    )


def test_no_import_cycles_between_subpackages():
    graph: dict[str, set[str]] = {}
    witness: dict[tuple[str, str], Import] = {}
    for i in internal(all_imports()):
        a, b = unit(i.importer), unit(i.target)
        if a in LAYERS and b in LAYERS:
            graph.setdefault(a, set()).add(b)  # type: ignore[arg-type]
            witness.setdefault((a, b), i)  # type: ignore[arg-type]
    cycle = find_cycle(graph)
    if cycle:
        edges = "\n  ".join(str(witness[(a, b)]) for a, b in itertools.pairwise(cycle))
        raise AssertionError(f"import cycle between sub-packages: {' -> '.join(cycle)}\n  {edges}")


def test_subpackages_import_only_what_their_layer_allows():
    wrong = []
    for i in internal(all_imports()):
        src, dst = unit(i.importer), unit(i.target)
        if src == "audio_library" or src not in LAYERS:
            continue
        if dst not in LAYERS[src]:
            allowed = ", ".join(sorted(LAYERS[src])) or "nothing of ours"
            wrong.append(f"{i}, but {src} may import only: {allowed}")
    assert not wrong, "imports against the layer table:\n" + "\n".join(wrong)


def test_core_reaches_drivers_only_through_the_seam():
    wrong = [
        f"{i}; the core may use only {', '.join(sorted(DRIVER_SEAM))}"
        for i in internal(all_imports())
        if unit(i.importer) == "core"
        and unit(i.target) == "drivers"
        and i.target not in DRIVER_SEAM
    ]
    assert not wrong, "\n".join(wrong)


def test_broadcaster_uses_the_audio_library_through_its_api():
    wrong = []
    for i in internal(all_imports()):
        if unit(i.importer) == "audio_library" or unit(i.target) != "audio_library":
            continue
        if unit(i.importer) not in LIBRARY_API.get(i.target, frozenset()):
            wrong.append(f"{i}; use the package API (`from audio_library import …`)")
    assert not wrong, "\n".join(wrong)


def test_audio_library_never_imports_broadcaster():
    wrong = [
        str(i)
        for i in all_imports()
        if unit(i.importer) == "audio_library" and top(i.target) == "broadcaster"
    ]
    assert not wrong, "audio_library must stay apart from broadcaster:\n" + "\n".join(wrong)


def test_broadcaster_never_imports_tests():
    wrong = [
        str(i)
        for i in all_imports()
        if top(i.importer) == "broadcaster" and top(i.target) in ("tests", "conftest")
    ]
    assert not wrong, "test-only code imported by the installed package:\n" + "\n".join(wrong)


def test_each_library_is_imported_in_its_one_home():
    wrong = []
    for i in all_imports():
        homes = LIBRARY_HOMES.get(top(i.target))
        if homes and not any(
            i.path == h or (h.endswith("/") and i.path.startswith(h)) for h in homes
        ):
            wrong.append(f"{i}; {top(i.target)} belongs only in {' or '.join(homes)}")
    assert not wrong, "\n".join(wrong)


def test_known_breaches_are_still_real():
    present = {(i.importer, i.target) for i in all_imports()}
    fixed = [f"{a} -> {b}" for a, b in KNOWN_BREACHES if (a, b) not in present]
    assert not fixed, f"no longer imported; remove from KNOWN_BREACHES: {fixed}"


def test_the_architecture_doc_shows_the_same_layer_table():
    """Rows of the doc's table under its "may import" heading: | `pkg` | layer | `a`, `b` … |."""
    text = DOC.read_text(encoding="utf-8")
    section = re.search(
        r"^## [^\n]*may import[^\n]*$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL
    )
    assert section, "docs/architecture.md has no '## … may import' section"
    rows: dict[str, frozenset[str]] = {}
    for line in section.group(1).splitlines():
        m = re.match(r"\|\s*`(\w+)`\s*\|[^|]*\|([^|]*)\|", line)
        if m:
            rows[m.group(1)] = frozenset(re.findall(r"`(\w+)`", m.group(2)))
    differ = sorted(p for p in set(rows) | set(LAYERS) if rows.get(p) != LAYERS.get(p))
    assert not differ, f"docs/architecture.md and LAYERS disagree on {differ}: " + "; ".join(
        f"{p}: doc {sorted(rows.get(p, ()))} test {sorted(LAYERS.get(p, ()))}" for p in differ
    )


if __name__ == "__main__":  # print the graph: python tests/test_architecture.py
    for imp in internal(all_imports()):
        print(imp, file=sys.stdout)

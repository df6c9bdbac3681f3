"""Command line for the audio library: `broadcaster library ARGS...` forwards here."""

from __future__ import annotations

import argparse
import json
import os
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from . import chimes
from .errors import LibraryError
from .library import Library
from .storage import Clip

COMMANDS = ("add", "list", "show", "rename", "tag", "remove", "tts", "export", "chimes")


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so a host program keeps running."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    """Bad command-line usage."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subcommand per library operation."""
    parser = _Parser(prog="library", description="Manage the broadcast audio library.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("add", help="ingest audio files; prints each new clip's id")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--title", help="title (only with a single FILE; default: the file name)")
    p.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
    p.add_argument("--category", default="")
    p.add_argument("--by", default="", help="who is adding it")
    p = sub.add_parser("list", help="list clips, optionally filtered")
    p.add_argument("--json", action="store_true")
    p.add_argument("--search", metavar="Q", help="text in title, tags, category or TTS text")
    p.add_argument("--tag", metavar="T")
    p.add_argument("--category", metavar="C")
    p = sub.add_parser("show", help="show one clip's details")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("rename", help="change a clip's title")
    p.add_argument("id")
    p.add_argument("title")
    p = sub.add_parser("tag", help="replace a clip's tags")
    p.add_argument("id")
    p.add_argument("--set", required=True, metavar="A,B", help="comma-separated tags ('' clears)")
    p = sub.add_parser("remove", help="delete a clip and its audio")
    p.add_argument("id")
    p = sub.add_parser("tts", help="speak Mandarin text into a new clip; prints its id")
    p.add_argument("text")
    p.add_argument("--title")
    p.add_argument("--tag", action="append", default=[])
    p.add_argument("--category", default="tts")
    p.add_argument("--by", default="")
    p = sub.add_parser("export", help="write a clip at a rate as WAV or raw G.711 u-law")
    p.add_argument("id")
    p.add_argument("--rate", type=int, default=8000)
    p.add_argument("--format", choices=("wav", "pcmu"), default="wav")
    p.add_argument("--out", required=True, type=Path)
    p = sub.add_parser("chimes", help="add the built-in chimes to the library and list them")
    p.add_argument("--json", action="store_true")
    return parser


def main(
    argv: Sequence[str],
    data_dir: Path,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one library command; returns the exit status (0 ok, 1 failed, 2 bad usage)."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        args = build_parser().parse_args(list(argv))
    except _UsageError as exc:
        print(exc, file=err)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    try:
        with Library(data_dir) as lib:
            return _HANDLERS[args.command](lib, args, out, err)
    except LibraryError as exc:
        print(f"error: {exc.message}", file=err)
        return 1


def _add(lib: Library, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.title is not None and len(args.files) > 1:
        print("error: --title needs a single FILE", file=err)
        return 2
    failed = 0
    total = len(args.files)
    for n, name in enumerate(args.files, 1):
        try:
            clip, new = lib.ingest(
                Path(name),
                title=args.title,
                tags=args.tag,
                category=args.category,
                added_by=args.by,
            )
        except LibraryError as exc:
            failed += 1
            print(f"[{n}/{total}] error: {exc.message}", file=err)
            continue
        what = "added" if new else "already in the library as"
        print(
            f"[{n}/{total}] {Path(name).name}: {what} {clip.id} ({clip.duration:.1f} s, "
            f"{clip.loudness_before:.1f} -> {clip.loudness_after:.1f} LUFS)",
            file=err,
        )
        print(clip.id, file=out)
    if total > 1:
        print(f"{total - failed} of {total} files in the library, {failed} failed", file=err)
    return 1 if failed else 0


def _list(lib: Library, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    clips = lib.search(args.search, tag=args.tag, category=args.category)
    if args.json:
        json.dump([c.to_dict() for c in clips], out, ensure_ascii=False, indent=2)
        out.write("\n")
        return 0
    rows = [[c.id, f"{c.duration:.1f}s", c.category, ",".join(c.tags), c.title] for c in clips]
    _table(["ID", "LENGTH", "CATEGORY", "TAGS", "TITLE"], rows, out)
    return 0


def _show(lib: Library, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    clip = lib.get(args.id)
    if args.json:
        json.dump(clip.to_dict(), out, ensure_ascii=False, indent=2)
        out.write("\n")
    else:
        _describe(clip, out)
    return 0


def _describe(clip: Clip, out: TextIO) -> None:
    for key, value in clip.to_dict().items():
        if key == "tags":
            value = ", ".join(value)
        if value in (None, ""):
            continue
        print(f"{key:16} {value}", file=out)


def _rename(lib: Library, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    clip = lib.rename(args.id, args.title)
    print(f"{clip.id}: {clip.title}", file=out)
    return 0


def _tag(lib: Library, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    clip = lib.retag(args.id, args.set.split(","))
    print(f"{clip.id}: {', '.join(clip.tags) or '(no tags)'}", file=out)
    return 0


def _remove(lib: Library, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    clip = lib.remove(args.id)
    print(f"removed {clip.id} ({clip.title})", file=out)
    return 0


def _tts(lib: Library, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    clip = lib.tts(
        args.text, title=args.title, tags=args.tag, category=args.category, added_by=args.by
    )
    print(clip.id, file=out)
    return 0


def _export(lib: Library, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    path = lib.export(args.id, args.out, rate=args.rate, fmt=args.format)
    print(f"wrote {path} ({args.format}, {args.rate} Hz)", file=err)
    return 0


def _chimes(lib: Library, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    rows: list[dict[str, Any]] = []
    for name in chimes.chime_names():
        clip = lib.add_chime(name)
        rows.append(
            {
                "name": name,
                "id": clip.id,
                "duration": clip.duration,
                "description": chimes.lookup(name).description,
            }
        )
    if args.json:
        json.dump(rows, out, ensure_ascii=False, indent=2)
        out.write("\n")
    else:
        _table(
            ["NAME", "ID", "LENGTH", "DESCRIPTION"],
            [[r["name"], r["id"], f"{r['duration']:.1f}s", r["description"]] for r in rows],
            out,
        )
    return 0


_HANDLERS = {
    "add": _add,
    "list": _list,
    "show": _show,
    "rename": _rename,
    "tag": _tag,
    "remove": _remove,
    "tts": _tts,
    "export": _export,
    "chimes": _chimes,
}


def _width(text: str) -> int:
    # Chinese characters take two terminal columns.
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _table(header: list[str], rows: list[list[str]], out: TextIO) -> None:
    widths = [max(_width(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [cell + " " * (widths[i] - _width(cell)) for i, cell in enumerate(row)]
        print("  ".join(cells).rstrip(), file=out)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], Path(os.environ.get("BROADCASTER_DATA", "data"))))

"""The library command line: every subcommand, its output, its errors, and its documentation."""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path

import pytest

from audio_library import Library
from audio_library.cli import COMMANDS, build_parser, main

README = Path(__file__).resolve().parents[2] / "audio_library" / "README.md"


def cli(data_dir: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), data_dir, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_add_list_show_rename_tag_remove(data_dir: Path, formats: dict[str, Path]) -> None:
    code, out, err = cli(
        data_dir,
        "add",
        str(formats["mp3"]),
        str(formats["amr_nb"]),
        "--tag",
        "防火",
        "--tag",
        "通知",
        "--category",
        "campaign",
        "--by",
        "宣传办",
    )
    assert code == 0, err
    ids = out.split()
    assert len(ids) == 2 and "[1/2]" in err and "[2/2]" in err
    code, out, _ = cli(data_dir, "list", "--json", "--tag", "防火")
    listed = json.loads(out)
    assert {c["id"] for c in listed} == set(ids)
    assert listed[0]["added_by"] == "宣传办" and listed[0]["category"] == "campaign"
    code, out, _ = cli(data_dir, "list")
    assert code == 0
    assert out.splitlines()[0].split() == ["ID", "LENGTH", "CATEGORY", "TAGS", "TITLE"]
    assert cli(data_dir, "rename", ids[0][:6], "防火 通知")[0] == 0
    assert cli(data_dir, "tag", ids[0], "--set", "a,b")[1].strip().endswith("a, b")
    code, out, _ = cli(data_dir, "show", ids[0], "--json")
    shown = json.loads(out)
    assert (shown["title"], shown["tags"]) == ("防火 通知", ["a", "b"])
    assert "loudness_after" in cli(data_dir, "show", ids[0])[1]
    assert json.loads(cli(data_dir, "list", "--json", "--search", "防火")[1])[0]["id"] == ids[0]
    assert cli(data_dir, "remove", ids[1])[0] == 0
    assert [c["id"] for c in json.loads(cli(data_dir, "list", "--json")[1])] == [ids[0]]


def test_batch_with_a_bad_file(data_dir: Path, formats: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not audio")
    code, out, err = cli(data_dir, "add", str(formats["flac"]), str(bad), str(formats["flac"]))
    assert code == 1
    assert len(out.split()) == 2 and len(set(out.split())) == 1  # the duplicate prints its id
    assert "error: notes.txt: not a recognised audio format" in err
    assert "already in the library" in err and "2 of 3 files" in err


def test_tts_and_export(data_dir: Path, tmp_path: Path) -> None:
    code, out, err = cli(data_dir, "tts", "请注意，现在广播。", "--title", "广播")
    assert code == 0, err
    clip_id = out.strip()
    wav = tmp_path / "out.wav"
    assert (
        cli(data_dir, "export", clip_id, "--rate", "16000", "--format", "wav", "--out", str(wav))[0]
        == 0
    )
    with wave.open(str(wav)) as src:
        assert (src.getframerate(), src.getnchannels()) == (16000, 1)
        frames = src.getnframes()
    ulaw = tmp_path / "out.ul"
    assert cli(data_dir, "export", clip_id, "--format", "pcmu", "--out", str(ulaw))[0] == 0
    assert abs(ulaw.stat().st_size - frames / 2) <= 2  # one byte per 8 kHz sample
    with Library(data_dir) as lib:
        assert lib.get(clip_id).text == "请注意，现在广播。"


def test_chimes(data_dir: Path) -> None:
    code, out, _ = cli(data_dir, "chimes", "--json")
    names = {c["name"] for c in json.loads(out)}
    assert {"two-tone", "four-tone"} <= names
    assert cli(data_dir, "chimes")[1].count("\n") == len(names) + 1


def test_errors_are_plain_and_nonzero(data_dir: Path, tmp_path: Path) -> None:
    code, out, err = cli(data_dir, "show", "0123456789abcdef")
    assert (code, out) == (1, "") and err == "error: no clip with id '0123456789abcdef'\n"
    code, _, err = cli(data_dir, "add", str(tmp_path / "missing.mp3"))
    assert code == 1 and "missing.mp3: no such file" in err
    assert cli(data_dir, "frobnicate")[0] == 2
    assert cli(data_dir, "export", "abcd")[0] == 2  # --out is required
    assert cli(data_dir, "add", "a.wav", "b.wav", "--title", "x")[0] == 2
    assert "Traceback" not in err


def test_help_does_not_exit(data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--help"], data_dir) == 0
    assert "add" in capsys.readouterr().out


def test_every_command_is_documented() -> None:
    text = README.read_text()
    parser_commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore
    assert parser_commands == set(COMMANDS)
    for command in COMMANDS:
        assert f"- `{command}" in text, f"{command} is missing from audio_library/README.md"


def test_package_never_imports_broadcaster() -> None:
    package = README.parent
    for module in package.glob("*.py"):
        for line in module.read_text().splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]):
                assert not words[1].startswith("broadcaster"), f"{module.name}: {line}"

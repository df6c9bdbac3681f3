"""The journal: JSON lines in real files, written in order on a thread of its own."""

from __future__ import annotations

import json
import logging
import threading

from broadcaster.storage.journal import Journal


def lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_lines_land_in_order_and_a_built_record_is_built_off_the_callers_thread(tmp_path):
    j = Journal(tmp_path / "log")
    built_on: list[str] = []
    state = {"n": 0}

    def record() -> dict:
        built_on.append(threading.current_thread().name)
        return {"kind": "built", "n": state["n"]}

    for i in range(500):
        j.append("events.jsonl", {"kind": "tick", "i": i})
    j.append("broadcasts.jsonl", record)
    assert j.flush(5)
    assert [e["i"] for e in lines(tmp_path / "log" / "events.jsonl")] == list(range(500))
    assert lines(tmp_path / "log" / "broadcasts.jsonl") == [{"kind": "built", "n": 0}]
    assert built_on and not built_on[0].startswith("MainThread")
    j.close()


def test_what_json_has_no_type_for_is_written_as_text(tmp_path):
    j = Journal(tmp_path)
    j.append("x.jsonl", {"path": tmp_path, "n": 2**70})
    j.close()
    assert lines(tmp_path / "x.jsonl") == [{"path": str(tmp_path), "n": 2**70}]


def test_a_record_that_cannot_be_made_is_logged_and_the_rest_written(tmp_path, caplog):
    j = Journal(tmp_path)

    def broken() -> dict:
        raise KeyError("speaker")

    with caplog.at_level(logging.ERROR):
        j.append("x.jsonl", {"n": 1})
        j.append("x.jsonl", broken)
        j.append("x.jsonl", {"n": 3})
        assert j.flush(5)
    assert lines(tmp_path / "x.jsonl") == [{"n": 1}, {"n": 3}]
    assert "x.jsonl could not be made" in caplog.text
    j.close()


def test_an_unwritable_file_is_logged_and_never_raised(tmp_path, caplog):
    j = Journal(tmp_path)
    (tmp_path / "events.jsonl").mkdir()  # not a file: every append fails
    with caplog.at_level(logging.ERROR):
        j.append("events.jsonl", {"n": 1})
        j.append("other.jsonl", {"n": 2})
        assert j.flush(5)
    assert "cannot write events.jsonl" in caplog.text
    assert lines(tmp_path / "other.jsonl") == [{"n": 2}]
    j.close()


def test_close_writes_what_is_queued_and_later_lines_are_refused(tmp_path, caplog):
    j = Journal(tmp_path)
    for i in range(200):
        j.append("x.jsonl", {"i": i})
    j.close()
    assert len(lines(tmp_path / "x.jsonl")) == 200
    with caplog.at_level(logging.ERROR):
        j.append("x.jsonl", {"i": 200})
    assert "journal closed" in caplog.text
    assert len(lines(tmp_path / "x.jsonl")) == 200
    assert j.flush(1)

"""A broadcast's record, saved at each change, follows each speaker's report; a record already
handed out stays as it was."""

from __future__ import annotations

from broadcaster.core.broadcast import Broadcast, SpeakerResult, outcome
from broadcaster.drivers.base import Report


def test_a_broadcasts_record_follows_each_speakers_report():
    b = Broadcast("b1", ["village-01"], {"kind": "file"}, "pcmu")
    b.results = {s: SpeakerResult(s) for s in ("h-2", "h-1")}
    before = b.to_dict()
    assert [s["speaker"] for s in before["speakers"]] == ["h-1", "h-2"]
    assert [s["state"] for s in before["speakers"]] == ["pending", "pending"]

    outcome(b.results["h-1"], Report("end", 8000, 50, 0), 50, stopped=False)
    outcome(b.results["h-2"], Report("end", 8000, 20, 30), 50, stopped=False)
    after = b.to_dict()
    h1, h2 = after["speakers"]
    assert (h1["state"], h1["played"], h1["packets"], h1["frames_sent"]) == ("played", True, 50, 50)
    assert (h2["state"], h2["lost"]) == ("partial", 30)
    assert after["summary"]["states"] == {"played": 1, "partial": 1}
    assert before["speakers"][0]["state"] == "pending"  # a record already saved stays as it was

    outcome(b.results["h-2"], None, 50, stopped=False)  # never reported: unreachable, said so
    assert b.to_dict()["speakers"][1]["state"] == "unreachable"
    assert "never reported" in b.to_dict()["speakers"][1]["error"]

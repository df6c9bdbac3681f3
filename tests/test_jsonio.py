"""JSON to bytes: every encodable value comes out, whichever way it takes."""

import json
from datetime import date

from broadcaster import jsonio


def test_string_keys_number_keys_big_integers_and_defaults_all_encode():
    plain = {"speakers": [{"id": "horn-01", "online": True, "lag": 0.5}], "n": 1}
    assert json.loads(jsonio.dumps(plain)) == plain
    # number keys are written as strings (orjson's slower option, taken only when needed)
    assert json.loads(jsonio.dumps({"frames": {3: "lost", 4: "late"}})) == {
        "frames": {"3": "lost", "4": "late"}
    }
    # past 64 bits orjson refuses: the standard module writes it
    assert json.loads(jsonio.dumps({"n": 1 << 70})) == {"n": 1 << 70}
    # what JSON has no type for goes through `default`, in every path
    assert json.loads(jsonio.dumps({"on": date(2026, 11, 29)}, default=str)) == {"on": "2026-11-29"}
    assert json.loads(jsonio.dumps({7: date(2026, 11, 29)}, default=str)) == {"7": "2026-11-29"}
    assert jsonio.dumps({"名": "喇叭"}) == '{"名":"喇叭"}'.encode()

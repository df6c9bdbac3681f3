"""The page's first message: each wrong field is a 400 naming the field and its real choices."""

from __future__ import annotations

import pytest

from broadcaster.errors import InvalidInput
from broadcaster.protocol.codecs import CODECS
from broadcaster.web.paging import PRIORITIES, parse_start


def refusal(obj: object) -> InvalidInput:
    with pytest.raises(InvalidInput) as exc:
        parse_start(obj)
    assert exc.value.status == 400
    return exc.value


@pytest.mark.parametrize("codec", ["g722", 3, None, ""])
def test_a_wrong_codec_names_every_codec_there_is(codec):
    err = refusal({"to": "v1", "codec": codec})
    assert err.code == "bad_codec" and "'codec'" in str(err)
    assert all(name in str(err) for name in CODECS)  # opus too, and whatever comes next


def test_every_codec_and_any_case_is_accepted():
    for name in CODECS:
        assert parse_start({"to": "v1", "codec": name.upper()}).codec == name


def test_a_wrong_priority_names_the_choices_and_what_came():
    err = refusal({"to": ["v1"], "priority": "background"})
    assert err.code == "bad_priority" and "background" in str(err)
    assert all(p in str(err) for p in PRIORITIES)


@pytest.mark.parametrize(
    ("obj", "code", "word"),
    [
        ([], "bad_start", "JSON object"),
        ({"type": "end"}, "bad_start", "start"),
        ({"to": []}, "no_target", "'to'"),
        ({"to": "v1", "rate": 1234}, "bad_rate", "1234"),
        ({"to": "v1", "rate": True}, "bad_rate", "'rate'"),
        ({"to": "v1", "chime": 5}, "bad_field", "'chime'"),
    ],
)
def test_other_wrong_fields_are_named(obj, code, word):
    err = refusal(obj)
    assert err.code == code and word in str(err)

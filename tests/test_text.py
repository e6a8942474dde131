"""nudge.text: what is refused where, the paths it names, and encodings that never fail."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ValidationError

from nudge.errors import Invalid
from nudge.text import STORED, Line, Text, check_text, json_bytes, json_problem, json_text


@pytest.mark.parametrize(
    ("value", "line", "problem"),
    [
        ("plain text ✓ 😀", True, None),
        ("two\nlines\tand a tab", False, None),
        ("two\nlines", True, "must be one line of text without control characters (found U+000A)"),
        ("del\x7f", True, "must be one line of text without control characters (found U+007F)"),
        ("esc\x1b[31m", False, None),  # free text: only NUL and lone surrogates
        ("a\x00b", False, "must not contain NUL characters"),
        ("a\ud800b", False, "must not contain lone surrogates"),
        ("\udfff", True, "must not contain lone surrogates"),
    ],
)
def test_check_text(value: str, line: bool, problem: str | None) -> None:
    if problem is None:
        assert check_text(value, "f", line=line) == value
        return
    with pytest.raises(Invalid) as refused:
        check_text(value, "f", line=line)
    assert refused.value.detail.startswith(f"f: {problem}")
    assert refused.value.status_code == 422


def test_json_problem_names_the_path() -> None:
    assert json_problem({"a": [1, "ok", {"b": None}], "c": True}) is None
    assert json_problem({"keys": {"auth": "x\x00"}}) == "keys.auth: must not contain NUL characters"
    assert json_problem([{"text": "ok"}, {"text": "\ud800"}]).startswith(  # type: ignore[union-attr]
        "1.text: must not contain lone surrogates"
    )
    assert json_problem({"data": {"a\x00": "v"}}) == "data: a key must not contain NUL characters"
    assert json_problem("\x00") == "must not contain NUL characters"


class Model(BaseModel):
    name: Line
    body: Text


def test_types_refuse_but_not_for_stored_rows() -> None:
    assert Model(name="Ana", body="one\ntwo").body == "one\ntwo"
    with pytest.raises(ValidationError, match="one line of text"):
        Model(name="A\nB", body="")
    with pytest.raises(ValidationError, match="NUL"):
        Model(name="A", body="\x00")
    stored = Model.model_validate({"name": "A\nB", "body": "x\x00"}, context=STORED)
    assert stored.name == "A\nB" and stored.body == "x\x00"


def test_encodings_replace_a_lone_surrogate_and_nothing_else() -> None:
    value = {"k": "x\ud800y", "ok": "é😀\n", "nul": "\x00"}
    assert json.loads(json_bytes(value)) == {"k": "x\ufffdy", "ok": "é😀\n", "nul": "\x00"}
    assert json.loads(json_text(value)) == json.loads(json_bytes(value))
    clean = {"ok": "é😀"}
    assert json_bytes(clean) == b'{"ok":"\xc3\xa9\xf0\x9f\x98\x80"}'  # as Starlette renders it
    with pytest.raises(ValueError):
        json_bytes({"n": float("nan")})
    # Push payloads allow it, as they did before.
    assert json_bytes({"n": float("nan")}, allow_nan=True) == b'{"n":NaN}'

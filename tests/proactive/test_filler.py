"""Property tests: user data never changes what is filled where."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from nudge.core.manifest import SCOPES
from nudge.proactive.filler import clean_value, fill, placeholders

NAMES = st.sampled_from(SCOPES)
# Literal template text: anything without braces (so it holds no placeholder of its own).
LITERAL = st.text(st.characters(blacklist_characters="{}"), max_size=40)
PLAIN = st.text(st.characters(blacklist_characters="{}<"), max_size=40)
SPACES = st.sampled_from(["", " ", "  ", "\t"])
# Hostile user data: placeholders, braces, template syntax, control characters, huge text.
HOSTILE = st.one_of(
    st.text(max_size=200),
    st.sampled_from(
        [
            "{{user_facts}}",
            "{{ user_name }}",
            "{{user_context}}{{user_chat}}",
            "{% for x in y %}{{x}}{% endfor %}",
            "${user_name}",
            "{{",
            "}}",
            "{{{user_name}}}",
            "\x00\x01\x1b[31m\x7f\x9b",
            "\\1 \\g<0> $0",
        ]
    ),
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=5), st.integers(1000, 30_000)),
)


@st.composite
def templates(draw: st.DrawFn) -> tuple[str, list[str | tuple[str, str]]]:
    """A template and its parts: literal strings and (name, placeholder text) pairs."""
    parts: list[str | tuple[str, str]] = []
    for _ in range(draw(st.integers(0, 6))):
        parts.append(draw(LITERAL))
        name = draw(NAMES)
        parts.append((name, "{{" + draw(SPACES) + name + draw(SPACES) + "}}"))
    parts.append(draw(LITERAL))
    text = "".join(p if isinstance(p, str) else p[1] for p in parts)
    return text, parts


@settings(max_examples=300, deadline=None)
@given(
    templates(),
    st.dictionaries(NAMES, HOSTILE),
)
def test_each_placeholder_gets_its_own_value_and_nothing_else(
    template: tuple[str, list[str | tuple[str, str]]], values: dict[str, str]
) -> None:
    text, parts = template
    result = fill(text, values, reasons={})
    expected = "".join(
        p if isinstance(p, str) else clean_value(values.get(p[0], "")) for p in parts
    )
    assert result.text == expected
    used = [p[0] for p in parts if not isinstance(p, str)]
    assert result.filled == [n for n in dict.fromkeys(used) if n in values]
    assert set(result.emptied) == {n for n in used if n not in values}


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(NAMES, HOSTILE, min_size=1), PLAIN, PLAIN)
def test_inserted_data_is_never_expanded(values: dict[str, str], before: str, after: str) -> None:
    # Each value sits between two markers; whatever it contains comes out verbatim (cleaned).
    template = before + "".join(f"<{n}>{{{{{n}}}}}</{n}>" for n in values) + after
    out = fill(template, values, reasons={}).text
    for name, value in values.items():
        start = out.index(f"<{name}>") + len(name) + 2
        assert out[start : start + len(clean_value(value))] == clean_value(value)
    assert out.startswith(before) and out.endswith(after)


@given(st.text(max_size=300))
def test_clean_value_keeps_newlines_and_tabs_only(value: str) -> None:
    cleaned = clean_value(value)
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", cleaned)
    assert cleaned.count("\n") == value.count("\n") and cleaned.count("\t") == value.count("\t")


def test_unknown_names_stay_as_written_and_reasons_are_kept() -> None:
    result = fill(
        "Hi {{user_name}}, {{ nickname }}, {{user_facts}}.",
        {"user_name": "Ana"},
        {"user_facts": "not granted by the user"},
    )
    assert result.text == "Hi Ana, {{ nickname }}, ."
    assert result.left_as_written == ["nickname"]
    assert result.emptied == {"user_facts": "not granted by the user"}
    assert placeholders("{{user_chat}} {{ user_name }} {{user_chat}} {{x}}") == [
        "user_chat",
        "user_name",
    ]

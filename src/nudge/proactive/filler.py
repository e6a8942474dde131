"""Fill ``{{ name }}`` placeholders of an app's prompt with the user's context, as data.

One left-to-right pass: inserted text is never scanned again, so user data containing
``{{user_facts}}`` or braces stays literal; no template language runs. ``Filled.parts`` keeps which
pieces are user data, so the generation step can fence them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from nudge.core.manifest import SCOPES

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_value(value: str) -> str:
    return _CONTROL.sub("", value)


def placeholders(template: str) -> list[str]:
    """The scope names a template uses, in order of first use."""
    names = (m.group(1) for m in PLACEHOLDER.finditer(template))
    return list(dict.fromkeys(n for n in names if n in SCOPES))


@dataclass(frozen=True)
class Filled:
    text: str
    filled: list[str] = field(default_factory=list)  # scopes that received the user's data
    emptied: dict[str, str] = field(default_factory=dict)  # scope -> why it got nothing
    left_as_written: list[str] = field(default_factory=list)  # names that are not scopes
    # The text in order: (piece, None) for the app's template text, (value, scope) for user data.
    parts: tuple[tuple[str, str | None], ...] = ()


def fill(template: str, values: Mapping[str, str], reasons: Mapping[str, str]) -> Filled:
    """Replace scope placeholders: by ``values[name]`` when present, else by nothing, noting
    ``reasons[name]`` (why that scope does not count)."""
    filled: list[str] = []
    emptied: dict[str, str] = {}
    other: list[str] = []
    cleaned = {name: clean_value(value) for name, value in values.items()}
    parts: list[tuple[str, str | None]] = []
    end = 0
    for match in PLACEHOLDER.finditer(template):
        name = match.group(1)
        if name not in SCOPES:
            other.append(name)
            continue
        parts.append((template[end : match.start()], None))
        end = match.end()
        if name in cleaned:
            filled.append(name)
            parts.append((cleaned[name], name))
        else:
            emptied[name] = reasons.get(name, "not granted")
    parts.append((template[end:], None))
    kept = tuple(p for p in parts if p[0])
    text = "".join(piece for piece, _ in kept)
    return Filled(text, list(dict.fromkeys(filled)), emptied, list(dict.fromkeys(other)), kept)

"""Fill ``{{ name }}`` placeholders of an app's prompt with the user's context, as data.

One left-to-right pass: inserted text is never scanned again, so user data containing
``{{user_facts}}`` or braces stays literal; no template language runs. ``Filled.parts`` keeps which
pieces are user data, so the generation step can fence them. The live transcript is not a scope:
as in Omi, the app writes it into its own prompt; the lines of it that the platform recognises
(``live``) are user data too (fenced as ``LIVE``)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from nudge.core.manifest import SCOPES
from nudge.llm.writer import LIVE

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
LIVE_MIN_CHARS = 8  # shorter segments ("Okay.") could match the app's own words
# What may separate two quoted segments of one block: spaces, or a line break and a speaker
# label ("\nAna: ", "\nSPEAKER_01: ").
_BETWEEN_LINES = re.compile(r"[ \t]*(?:\n[ \t]*(?:[^\n:]{1,40}:)?[ \t]*)?")


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


def _quoted(piece: str, live: Sequence[str]) -> list[tuple[int, int, int]]:
    """Where ``piece`` quotes the live segment texts (``live``, longest first): (start, end,
    length) of each quote, in order, none overlapping a longer one. ``str.find`` per segment:
    a pattern of up to QUOTED_SEGMENTS alternatives cost ~1 ms to compile on every fill."""
    found: list[tuple[int, int, int]] = []
    for text in live:
        at = piece.find(text)
        while at != -1:
            stop = at + len(text)
            if not any(a < stop and at < b for a, b, _ in found):
                found.append((at, stop, len(text)))
            at = piece.find(text, stop)
    return sorted(found)


def _app_text(piece: str, live: Sequence[str]) -> list[tuple[str, str | None]]:
    """The app's ``piece`` of text, with each run of live segment texts it quotes (only line
    breaks and speaker labels between them) as user data; a run of only short segments
    ("Okay.") could be the app's own words and stays its text."""
    runs: list[list[int]] = []  # start, end, longest segment
    for start, stop, length in _quoted(piece, live):
        if runs and _BETWEEN_LINES.fullmatch(piece, runs[-1][1], start):
            runs[-1][1:] = [stop, max(runs[-1][2], length)]
        else:
            runs.append([start, stop, length])
    parts: list[tuple[str, str | None]] = []
    end = 0
    for start, stop, longest in runs:
        if longest >= LIVE_MIN_CHARS:
            parts += [(piece[end:start], None), (piece[start:stop], LIVE)]
            end = stop
    return [*parts, (piece[end:], None)]


def fill(
    template: str,
    values: Mapping[str, str],
    reasons: Mapping[str, str],
    live: Iterable[str] = (),
) -> Filled:
    """Replace scope placeholders: by ``values[name]`` when present, else by nothing, noting
    ``reasons[name]`` (why that scope does not count). The live conversation's segment texts
    (``live``) that the app's text quotes become user data."""
    filled: list[str] = []
    emptied: dict[str, str] = {}
    other: list[str] = []
    cleaned = {name: clean_value(value) for name, value in values.items()}
    quoted = sorted({s.strip() for s in live if s.strip()}, key=len, reverse=True)
    parts: list[tuple[str, str | None]] = []
    end = 0
    for match in PLACEHOLDER.finditer(template):
        name = match.group(1)
        if name not in SCOPES:
            other.append(name)
            continue
        parts += _app_text(template[end : match.start()], quoted)
        end = match.end()
        if name in cleaned:
            filled.append(name)
            parts.append((cleaned[name], name))
        else:
            emptied[name] = reasons.get(name, "not granted")
    parts += _app_text(template[end:], quoted)
    kept = tuple(p for p in parts if p[0])
    text = "".join(piece for piece, _ in kept)
    return Filled(text, list(dict.fromkeys(filled)), emptied, list(dict.fromkeys(other)), kept)

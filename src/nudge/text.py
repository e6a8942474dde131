"""Hostile text: refused once where it comes in, and never able to break a read.

Two kinds of character are refused in every string a request brings, with a 422 that names the
field:

- NUL: PostgreSQL cannot store it in text.
- A lone surrogate (half of a UTF-16 pair, which a JSON ``\\ud800`` escape can carry): UTF-8 cannot
  encode it, so neither SQLite's driver nor an answer could take it.

One-line fields (ids, names, types, URLs, tokens) also refuse the other C0 control characters and
DEL; free text (messages, facts, transcripts) keeps its newlines and tabs. Where it is checked:
every FastAPI route's path and query parameters and whole JSON body (``api.deps.check_text_input``),
the plain-ASGI routes and the WebSocket with :func:`check_text`, and the fields of request models
typed :data:`Line` or :data:`Text`.

Rows stored before these checks are still read: :func:`json_text` and :func:`json_bytes` put
U+FFFD where a lone surrogate would make the encoding fail, and models validated from stored rows
skip the checks (``context=STORED``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Annotated, Any

from pydantic import AfterValidator, ValidationInfo

from nudge.errors import Invalid
from nudge.sdk.errors import LONE_SURROGATE

_TEXT = re.compile("[\x00\ud800-\udfff]")
_LINE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")

# Validation context for models read back from the database: what is stored is shown as it is.
STORED = {"stored": True}


def text_problem(value: str, *, line: bool = False) -> str | None:
    """What is wrong with ``value`` (None: nothing). ``line``: a one-line field (an id, name,
    type, URL or token), where control characters make no sense either."""
    found = (_LINE if line else _TEXT).search(value)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return "must not contain NUL characters"
    if _SURROGATE.match(char):
        return LONE_SURROGATE
    return f"must be one line of text without control characters (found U+{ord(char):04X})"


def check_text(value: str, field: str, *, line: bool = False) -> str:
    """``value``, or a 422 naming ``field``."""
    problem = text_problem(value, line=line)
    if problem is not None:
        raise Invalid(f"{field}: {problem}")
    return value


def json_problem(value: Any, path: str = "") -> str | None:
    """The first bad string (key or value) in a decoded JSON value, as ``path: problem``;
    None if there is none."""
    children: list[tuple[str, Any]]
    if isinstance(value, str):
        problem = text_problem(value)
        return f"{path}: {problem}" if problem and path else problem
    if isinstance(value, dict):
        children = [(str(key), item) for key, item in value.items()]
        for key, _ in children:
            problem = text_problem(key)
            if problem is not None:
                return f"{path}: a key {problem}" if path else f"a key {problem}"
    elif isinstance(value, list):
        children = [(str(index), item) for index, item in enumerate(value)]
    else:
        return None
    for key, item in children:
        problem = json_problem(item, f"{path}.{key}" if path else key)
        if problem is not None:
            return problem
    return None


def _checker(line: bool) -> AfterValidator:
    def check(value: str, info: ValidationInfo) -> str:
        if info.context is not None and info.context.get("stored"):
            return value
        problem = text_problem(value, line=line)
        if problem is not None:
            raise ValueError(problem)
        return value

    return AfterValidator(check)


# Pydantic field types: free text (newlines and tabs allowed) and one line. (Any JSON body that a
# FastAPI route parsed is also walked whole at the edge: api.deps.check_text_input.)
Text = Annotated[str, _checker(line=False)]
Line = Annotated[str, _checker(line=True)]


def _scrub(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text)


def json_text(value: Any) -> str:
    """Compact JSON that UTF-8 can always encode (see the module docstring)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if text.isascii() or not _SURROGATE.search(text):  # isascii: O(1) for an ASCII-only str
        return text
    return _scrub(text)


def json_bytes(value: Any, *, allow_nan: bool = False) -> bytes:
    """Compact JSON in UTF-8, as Starlette's ``JSONResponse`` renders it (no NaN unless asked); a
    lone surrogate becomes U+FFFD instead of failing (the search runs only when encoding did)."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=allow_nan, separators=(",", ":"))
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _scrub(text).encode()


# Words: the content words of a text, for search and for checking what a message mentions.
WORD = re.compile(r"[^\W\d_]{3,}")
_STOPWORDS = """
    about above after again against all also and any are aren because been before being
    below between both but can cannot could did didn does doesn doing don down during each
    few for from further had hadn has hasn have haven having her here hers herself him
    himself his how into isn its itself just let like more most mustn myself nor not now off
    once only other ought our ours ourselves out over own really same shan she should
    shouldn some such than that the their theirs them themselves then there these they this
    those through too under until very was wasn way were weren what when where which while
    who whom why will with won would wouldn yeah yes you your yours yourself yourselves okay
    think know going get got want said say see one two well thing things something
"""
STOPWORDS = frozenset(_STOPWORDS.split())


def keywords(transcript: str, limit: int = 12) -> list[str]:
    """The transcript's most frequent content words (later words win ties)."""
    words = [w for w in WORD.findall(transcript.lower()) if w not in STOPWORDS]
    counts = Counter(words)
    last_seen = {w: i for i, w in enumerate(words)}
    return sorted(counts, key=lambda w: (-counts[w], -last_seen[w]))[:limit]

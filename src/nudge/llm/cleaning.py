"""Turn raw model output into a notification: plain whole sentences, bounded in length.

Small models wrap their answer in quotes, labels ("Notification:"), markdown and lists, repeat
themselves and stop mid-sentence. Cleaning keeps what reads as a message and drops the rest.
"""

from __future__ import annotations

import re

# Answers that mean "nothing to say" (the system prompt asks for SKIP).
QUIET_WORDS = {"skip", "none", "nothing", "n/a", "no notification", "no message", "empty"}

_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_SPECIAL = re.compile(r"<\|[^|>]*\|>")
_LABEL = re.compile(
    r"^\s*(notification|message|push notification|answer|response|assistant|output|user|mentor"
    r"|speaker[ _]?\d+|(?:the |my )?(?:advice|tip|suggestion)(?: (?:to|for) (?:the user|you))?"
    r"(?: is)?)\s*:\s*",
    re.IGNORECASE,
)
_LIST_MARKER = re.compile(r"^\s*(?:[-*•·–—>#]+|\(?\d{1,2}[.)]|\(?[a-zA-Z][.)])\s+")
_MARKDOWN = re.compile(r"(\*\*|__|`+|~~|\*|#+\s)")
_SENTENCE = re.compile(r"[^.!?…]+(?:[.!?…]+[\"”’)]*|$)")
_QUOTES = "\"'“”‘’`"


def _lines(text: str) -> list[str]:
    out = []
    for raw in text.splitlines():
        line = _LIST_MARKER.sub("", raw).strip()
        line = _MARKDOWN.sub("", line).strip()
        if line:
            out.append(line)
    return out


def _sentences(text: str) -> list[str]:
    found = [m.group(0).strip() for m in _SENTENCE.finditer(text)]
    return [s for s in found if s]


def clean_output(raw: str, max_chars: int = 300) -> str:
    """The notification text, or "" when the model chose to stay quiet or said nothing usable."""
    text = _SPECIAL.sub("", _THINK.sub("", raw))
    text = _LABEL.sub("", text.strip())
    text = " ".join(_lines(text))
    text = re.sub(r"\s+", " ", "".join(c for c in text if c.isprintable() or c == " ")).strip()
    text = text.strip(_QUOTES).strip()
    text = _LABEL.sub("", text).strip(_QUOTES).strip()
    if text.lower().rstrip(".!") in QUIET_WORDS:
        return ""
    sentences: list[str] = []
    seen: set[str] = set()
    for sentence in _sentences(text):
        key = re.sub(r"\W+", " ", sentence.lower()).strip()
        if not key or key in seen:  # small models loop: drop repeats
            continue
        seen.add(key)
        sentences.append(sentence)
    complete = [s for s in sentences if s[-1] in '.!?…"”’)']
    # Whole sentences only; an unfinished tail is kept only when it is all there is.
    chosen = complete or sentences
    out = ""
    for sentence in chosen:
        candidate = f"{out} {sentence}".strip()
        if len(candidate) > max_chars:
            break
        out = candidate
    if not out and chosen:  # one over-long sentence: cut at a word boundary
        cut = chosen[0][: max_chars - 1].rsplit(" ", 1)[0].rstrip(",;:")
        out = cut + "…"
    return _balance(re.sub(r"\s+([,;:.!?])", r"\1", out))


def _balance(text: str) -> str:
    """Drop closing brackets that close nothing (a cut-off or copied fragment)."""
    depth, out = 0, []
    for c in text:
        if c == "(":
            depth += 1
        elif c == ")":
            if depth == 0:
                continue
            depth -= 1
        out.append(c)
    return "".join(out).strip()

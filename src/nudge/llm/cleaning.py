"""Turn raw model output into a notification: one or two plain, whole sentences, bounded in length.

Small models wrap their answer in quotes, preambles ("Here's a rewritten version of the
advice:"), labels ("Notification:"), markdown, numbered lists and stray tags, talk about
themselves, copy the prompt, loop and stop mid-sentence. Cleaning keeps what reads as a message
and records every piece it removed, with why (the trace shows it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Answers that mean "nothing to say" (the system prompt asks for SKIP in free text).
QUIET_WORDS = {"skip", "none", "nothing", "n/a", "no notification", "no message", "empty", ""}

# Chat-format control markers of the common model families: ChatML and Llama-3 style <|...|>,
# Llama-2 [INST]/<<SYS>>, <s>/</s>, Gemma's turns. Never meaningful in a notification, and never
# let through as markup in user data (nudge.llm.writer removes them there too).
CONTROL_MARKERS = re.compile(
    r"<\|[^|<>]{0,40}\|>|\[/?INST\]|<</?SYS>>|</?s>|<(?:start|end)_of_turn>", re.IGNORECASE
)
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL | re.IGNORECASE)
_TAG = re.compile(r"<{1,2}/?[A-Za-z_|][^<>\n]{0,30}>{1,2}|<{1,2}|>{2,}")
_LIST_MARKER = re.compile(r"^\s*(?:[-*•·–—>#]+|\(?\d{1,2}[.)]|\(?[a-zA-Z][.)])\s+")
_INLINE_NUMBER = re.compile(r"(?<=[\s;:,])\(?\d{1,2}[.)]\s+(?=[A-Z])")
_MARKDOWN = re.compile(r"\*\*|__|`+|~~|\*|#+\s")
_DOUBLE_QUOTES = re.compile(r"[\"“”«»„]")
_LABEL = re.compile(
    r"^\s*(?:notification|message|push notification|answer|response|assistant|output|user|a|q"
    r"|system|mentor|coach|app|reminder|note|tip|advice|suggestion|speaker[ _]?\d+"
    r"|(?:the |my |[\w']+'s )?(?:advice|tip|suggestion|message)"
    r"(?: (?:to|for) (?:the user|you|\w+))?"
    r"(?: is)?)\s*:\s*",
    re.IGNORECASE,
)
_PREAMBLES = tuple(
    (why, re.compile(pattern, re.IGNORECASE))
    for why, pattern in (
        ("preamble", r"^(?:sure|certainly|of course|okay|ok|absolutely|alright|great)\b[,.!:]*\s*"),
        ("preamble", r"^(?:here(?:'s| is| are)|below is|this is)\b[^:.!?]{0,80}[:.!]\s*"),
        ("preamble", r"^to (?:the user|you|them)\s*[:,]\s*"),
        (
            "preamble",
            r"^(?:to help (?:you|them|him|her)[^:.!?]{0,40}"
            r"|i(?:'d| would) (?:say|suggest|recommend)"
            r"|my (?:advice|answer|suggestion)(?: is)?)\s*:\s*",
        ),
        (
            "preamble",
            r"^(?:the|my) (?:advice|tip|suggestion)(?: (?:to|for) \w+)? is(?: to)?\s*[:,]?\s*",
        ),
        ("greeting", r"^(?:hi|hello|hey|dear)\b[^,.!?:]{0,30}[,!.:]\s*"),
        ("chat reply opener", r"^(?:you'?re right|same thing)\b[^,.!?]{0,20}[,.!]\s*"),
    )
)
# Sentences in which the model talks about itself, the task or the message instead of writing it.
_META = re.compile(
    r"\bI'?m sorry\b|\bI apologi[sz]e\b|\bas an AI\b|\blanguage model\b|\brewritten\b"
    r"|\btwo(?:-| )(?:short )?sentences?\b|(?-i:\bSKIP\b)"
    r"|\bhere(?:'s| is) (?:a|the|my|your|how|some)\b"
    r"|\b(?:the|this|my) (?:advice|tip|notification|message) (?:to|is|would be)\b"
    r"|\bI'?m (?:\w+ )?(?:here|happy|glad|ready) to (?:help|share|assist|offer|support)\b"
    r"|^as (?:a|an|your) [^,.!?]{0,30}\b(?:mentor|coach|buddy|assistant|AI|checker|helper)\b"
    r"|\bI'll (?:provide|write)\b|\blet me know\b|\bI'?m not sure\b|\bI'?m an? \b"
    r"|\bthe user\b|^you help\b"
    # the app's role for the model, repeated to the user ("You're a health coach for Tom",
    # "You, Leo, are a travel buddy", "You, spending buddy for Nina")
    r"|(?:\byou(?:'re| are) (?:a|an|my|the)\b[^.!?]{0,40}|^you,[^.!?]{0,60})"
    r"\b(?:coach|mentor|buddy|assistant|checker|helper)\b",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"[^.!?…]+(?:[.!?…]+[)'’]*|$)")
_VOCATIVE = re.compile(r"^you\b[\s,]*(?:[\w']+)?[\s,]*[.!?]*$", re.IGNORECASE)
_COMPLETE = re.compile(r"[.!?…][)'’]*$")
# A sentence sharing this many characters with the prompt is a copy (a little under the
# 40 that bench/quality.py counts over the whole message, so a copy that runs one character
# into the next sentence is caught too).
ECHO_CHARS = 35
# "Name:", "SPEAKER_01:", "User:", "Facts:" at the start of a line: dialogue or prompt text.
_SPEAKER_LINE = re.compile(
    r"^\s*(?:[A-Z][\w'’]*(?: [A-Z][\w'’]*){0,2}|SPEAKER_\d+|user|app|assistant|system)\s*:\s+"
)


@dataclass(frozen=True)
class Removed:
    text: str
    why: str


@dataclass(frozen=True)
class Cleaned:
    text: str  # "" when nothing usable is left
    removed: tuple[Removed, ...] = ()

    def removed_as_dicts(self) -> list[dict[str, str]]:
        return [{"text": r.text, "why": r.why} for r in self.removed]


def is_quiet_answer(text: str) -> bool:
    """The model's way of saying "nothing to say" (SKIP, none, an empty answer)."""
    bare = re.sub(r"[^\w/ ]+", "", text).strip().lower()
    return bare in QUIET_WORDS


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def copied_from(text: str, source: str, size: int = ECHO_CHARS) -> str | None:
    """The first ``size``-char piece of ``text`` that also appears in ``source``, if any."""
    out, src = _norm(text), _norm(source)
    for start in range(max(len(out) - size + 1, 0)):
        if out[start : start + size] in src:
            return out[start : start + size]
    return None


class _Cleaner:
    def __init__(self) -> None:
        self.removed: list[Removed] = []

    def sub(self, pattern: re.Pattern[str], text: str, why: str, repl: str = " ") -> str:
        def note(match: re.Match[str]) -> str:
            if match.group(0).strip():
                self.removed.append(Removed(match.group(0).strip(), why))
            return repl

        return pattern.sub(note, text)

    def drop(self, sentence: str, why: str) -> None:
        self.removed.append(Removed(sentence, why))


def clean_output(raw: str, max_chars: int = 300, prompt: str = "") -> Cleaned:
    """The notification text and what was removed; text "" when nothing usable is left.
    ``prompt`` (the text the model was given) lets sentences copied from it be dropped."""
    c = _Cleaner()
    text = c.sub(_THINK, raw, "reasoning block")
    text = c.sub(CONTROL_MARKERS, text, "control marker")
    text = c.sub(_TAG, text, "markup tag")
    lines: list[str] = []
    for line in text.splitlines():
        line = c.sub(_LIST_MARKER, line, "list marker", "")
        line = c.sub(_MARKDOWN, line, "markdown", "")
        if not line.strip():
            continue
        if _SPEAKER_LINE.match(line):
            if lines:  # after the message: the model goes on with a dialogue or the prompt
                c.drop(line.strip(), "a line of dialogue or of the prompt")
                continue
            line = c.sub(_SPEAKER_LINE, line, "label", "")
        lines.append(line.strip())
    text = " ".join(lines)
    text = "".join(ch for ch in text if ch.isprintable())
    text = c.sub(_DOUBLE_QUOTES, text, "quotes", "")
    text = re.sub(r"\s+", " ", text).strip().strip("'‘’").strip()
    for _ in range(3):  # "Sure! Here's the advice: Notification: ..." peels off in turns
        before = text
        text = c.sub(_LABEL, text, "label", "").strip()
        for why, pattern in _PREAMBLES:
            text = c.sub(pattern, text, why, "").strip()
        if text == before:
            break
    text = c.sub(_INLINE_NUMBER, text, "list number", "")
    text = re.sub(r"\s+([,;:.!?])", r"\1", re.sub(r"\s+", " ", text)).strip()
    if is_quiet_answer(text):
        return Cleaned("", tuple(c.removed))
    text = re.sub(r"\s+([,;:.!?])", r"\1", _whole_sentences(c, text, max_chars, prompt))
    return Cleaned(_balance(text), tuple(c.removed))


def plain(raw: str, max_chars: int = 300) -> str:
    """``raw`` without control markers or tags, on one line, at most ``max_chars`` (cut at a word):
    what the fake provider's answers become (see nudge.llm.fake)."""
    text = re.sub(r"\s+", " ", _TAG.sub("", CONTROL_MARKERS.sub(" ", raw))).strip()
    if len(text) <= max_chars:
        return text
    return text[: max_chars - 1].rsplit(" ", 1)[0] + "…"


def _whole_sentences(c: _Cleaner, text: str, max_chars: int, prompt: str) -> str:
    sentences: list[str] = []
    seen: set[str] = set()
    for found in _SENTENCE.finditer(text):
        sentence = found.group(0).strip()
        key = re.sub(r"\W+", " ", sentence.lower()).strip()
        if not key:
            continue
        if key in seen:  # small models loop
            c.drop(sentence, "repeated sentence")
        elif _VOCATIVE.match(sentence):
            c.drop(sentence, "a name or 'you' alone, not a sentence")
        elif _META.search(sentence):
            c.drop(sentence, "talks about itself or the task, not to the user")
        elif prompt and copied_from(sentence, prompt):
            c.drop(sentence, f"copies {ECHO_CHARS}+ characters of the prompt")
        else:
            sentences.append(sentence[0].upper() + sentence[1:])
        seen.add(key)
    complete = [s for s in sentences if _COMPLETE.search(s)]
    if complete and len(complete) < len(sentences):
        for s in sentences:
            if s not in complete:
                c.drop(s, "unfinished sentence")
    chosen = complete or sentences
    for extra in chosen[2:]:
        c.drop(extra, "over two sentences")
    chosen = chosen[:2]
    out = ""
    for sentence in chosen:
        candidate = f"{out} {sentence}".strip()
        if len(candidate) > max_chars:
            c.drop(sentence, f"over {max_chars} characters")
            break
        out = candidate
    if not out and chosen:  # one over-long sentence: cut at a word boundary
        cut = chosen[0][: max_chars - 1].rsplit(" ", 1)[0].rstrip(",;:")
        out = cut + "…"
    return out


def _balance(text: str) -> str:
    """Drop brackets that close nothing or are never closed (a cut-off or copied fragment)."""
    depth, out = 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                continue
            depth -= 1
        out.append(ch)
    text = "".join(out)
    return (text.replace("(", "") if depth else text).strip()

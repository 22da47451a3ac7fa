"""The `agentops` CLI on bad input: one `error: ...` line naming the cause, a non-zero exit
code (2 for usage and configuration), never a traceback. Client commands talk to local
loopback servers started here."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agentops import cli
from agentops.agents.loader import shipped_specs
from agentops.protocol import subjects


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """main(argv)'s exit code (argparse's SystemExit included) and its stderr."""
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


class _Recorder:
    """A loopback HTTP server answering every request with 200 `{"ok": true}` (or what a
    subclass's `route` says) and keeping each request's method, path, headers and JSON body."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                recorder.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": json.loads(raw) if raw else None,
                    }
                )
                status, body = recorder.route(self.command, self.path)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def route(self, method: str, path: str) -> tuple[int, Any]:
        return 200, {"ok": True}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def no_supervisor(monkeypatch: pytest.MonkeyPatch) -> None:
    """`agentops up` must fail before it starts anything."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        pytest.fail("the supervisor was started")

    monkeypatch.setattr(cli, "Supervisor", refuse)
    monkeypatch.delenv("NATS_URL", raising=False)


@pytest.fixture
def recorder() -> Iterator[_Recorder]:
    server = _Recorder()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[[bytes | None], str]]:
    """A loopback TCP server that accepts connections and sends `reply` (None: nothing,
    keeping the connection open until the test ends). Returns its URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)
    stop = threading.Event()
    conns: list[socket.socket] = []
    reply_box: list[bytes | None] = [None]

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conns.append(conn)
            reply = reply_box[0]
            if reply is not None:
                conn.recv(65536)
                conn.sendall(reply)
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def start(reply: bytes | None) -> str:
        reply_box[0] = reply
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    try:
        yield start
    finally:
        stop.set()
        thread.join()
        for conn in conns:
            conn.close()
        listener.close()


# ---- 1. --nats-port and --port ----


@pytest.mark.parametrize("value", ["99999", "-1", "0", "65536", "x"])
@pytest.mark.usefixtures("no_supervisor")
def test_nats_port_out_of_range_is_a_usage_error(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _run(["up", f"--nats-port={value}"], capsys)
    assert code == 2
    assert "argument --nats-port:" in err
    assert err.strip().splitlines()[-1].startswith("agentops up: error: ")


@pytest.mark.usefixtures("no_supervisor")
def test_port_equal_to_nats_port_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["up", "--port", "4333", "--nats-port", "4333"], capsys)
    assert code == 2
    assert err.startswith("error: the edge port and --nats-port are both 4333")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.usefixtures("no_supervisor")
def test_port_from_environment_equal_to_default_nats_port_is_rejected(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTOPS_PORT", "4222")
    code, err = _run(["up"], capsys)
    assert code == 2
    assert "both 4222" in err


# ---- 3. --timeout ----


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "-inf", "soon"])
def test_timeout_must_be_finite_and_positive(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _run(["health", f"--timeout={value}"], capsys)
    assert code == 2
    assert "argument --timeout:" in err
    assert "cannot reach" not in err


# ---- 4. header values, and what each request failure is called ----


def test_non_ascii_token_names_the_variable_not_the_value(
    recorder: _Recorder, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTOPS_API_TOKEN", "tökén-secret")
    code, err = _run(["health", "--url", recorder.url], capsys)
    assert code == 2
    assert err.startswith("error: AGENTOPS_API_TOKEN has character 2, which is not printable")
    assert "secret" not in err and "ö" not in err
    assert recorder.requests == []


@pytest.mark.parametrize("key", ["kéy", "a\nb", "a\rb", "tab\there"])
def test_bad_idempotency_key_names_the_header(
    key: str,
    recorder: _Recorder,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AGENTOPS_API_TOKEN", raising=False)
    argv = ["submit", "backend_developer", "x", "--idempotency-key", key, "--url", recorder.url]
    code, err = _run(argv, capsys)
    assert code == 2
    assert err.startswith("error: the Idempotency-Key header has the character ")
    assert "printable ASCII" in err
    assert "cannot reach" not in err
    assert recorder.requests == []


def test_printable_ascii_headers_are_sent(
    recorder: _Recorder, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTOPS_API_TOKEN", "tok~en 1")
    argv = ["submit", "backend_developer", "x", "--idempotency-key", "k 1", "--url", recorder.url]
    assert _run(argv, capsys) == (0, "")
    headers = recorder.requests[0]["headers"]
    assert headers["Authorization"] == "Bearer tok~en 1"
    assert headers["Idempotency-Key"] == "k 1"


def test_connection_refused_is_cannot_reach(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    code, err = _run(["health", "--url", url], capsys)
    assert code == 1
    assert err.startswith(f"error: cannot reach AgentOps at {url}: ")


def test_no_answer_is_a_timeout_not_unreachable(
    raw_server: Callable[[bytes | None], str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = raw_server(None)
    code, err = _run(["health", "--url", url, "--timeout", "0.3"], capsys)
    assert code == 1
    assert err == f"error: AgentOps at {url} did not answer within 0.3 s (--timeout)\n"


def test_garbage_response_is_a_protocol_error_not_unreachable(
    raw_server: Callable[[bytes | None], str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = raw_server(b"this is not HTTP\r\n\r\n")
    code, err = _run(["health", "--url", url, "--timeout", "5"], capsys)
    assert code == 1
    assert err.startswith(f"error: AgentOps at {url} sent an invalid HTTP response: ")


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://h", "http://[::", "http://h:99999"])
def test_bad_url_is_a_configuration_error(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["health", "--url", url], capsys)
    assert code == 2
    assert err.startswith(f"error: the edge URL {url!r} (--url, AGENTOPS_URL) ")


# ---- 5. an empty id given explicitly ----


@pytest.mark.parametrize(
    "argv",
    [
        ["tasks", ""],
        ["agents", ""],
        ["tasks", "  "],
        ["cancel", ""],
        ["pause", ""],
        ["resume", ""],
        ["respond", "", "yes"],
        ["respond", "a", "yes", "--request-id", ""],
        ["submit", "", "x"],
        ["submit", "backend_developer", "x", "--idempotency-key", ""],
    ],
)
def test_empty_id_is_a_usage_error(
    argv: list[str], recorder: _Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _run([*argv, "--url", recorder.url], capsys)
    assert code == 2
    assert "must not be empty" in err
    assert recorder.requests == []


def test_omitted_id_still_lists(recorder: _Recorder, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["tasks", "--url", recorder.url], capsys) == (0, "")
    assert _run(["agents", "--url", recorder.url], capsys) == (0, "")
    assert [r["path"] for r in recorder.requests] == ["/tasks", "/agents"]


# ---- 6. AGENTOPS_URL ----


@pytest.mark.parametrize("value", ["", "  "])
def test_empty_agentops_url_counts_as_unset(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTOPS_URL", value)
    assert cli.build_parser().parse_args(["health"]).url == cli.DEFAULT_URL


def test_agentops_url_is_used(recorder: _Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTOPS_URL", recorder.url)
    assert cli.build_parser().parse_args(["health"]).url == recorder.url


# ---- 7. run --help ----


def test_run_help_lists_every_process(capsys: pytest.CaptureFixture[str]) -> None:
    """`run --help` lists the core processes a line each, and how to run a type's agents."""
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    lines = [line.strip() for line in out.splitlines()]
    for process in subjects.CORE_PROCESSES:
        assert process in lines
    assert "agent --type" in out and all(t in out for t in shipped_specs())


# ---- 8. submit --budget-usd ----


def test_budget_usd_is_sent(recorder: _Recorder, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["submit", "backend_developer", "x", "--budget-usd", "2.5", "--url", recorder.url]
    assert _run(argv, capsys) == (0, "")
    assert recorder.requests[0]["body"] == {
        "agent_type": "backend_developer",
        "description": "x",
        "budget_usd": 2.5,
    }


def test_budget_usd_is_left_out_when_absent(
    recorder: _Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["submit", "backend_developer", "x", "--url", recorder.url], capsys) == (0, "")
    assert "budget_usd" not in recorder.requests[0]["body"]


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "five"])
def test_budget_usd_must_be_finite_and_positive(
    value: str, recorder: _Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["submit", "backend_developer", "x", f"--budget-usd={value}", "--url", recorder.url]
    code, err = _run(argv, capsys)
    assert code == 2
    assert "argument --budget-usd:" in err
    assert recorder.requests == []

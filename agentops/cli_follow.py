"""`agentops watch TASK` and `agentops logs TASK [--follow]`: one task's events from the
edge's WebSocket (`WS /ws?task_id=&since=`), replayed from the start and then live.

Rules:
- A dropped connection is resumed from the last `seq` seen (the stream sequence), so nothing
  is shown twice or skipped; consecutive failed connects back off from 0.5 s to 4 s, and
  after `GIVE_UP` of them the stream counts as unavailable. A refusal that retrying cannot
  fix (401, 403, 404, 400) is an error at once.
- History or live: the edge's clock at the first `GET /tasks/{id}` (its `Date` header, plus
  1 s for its whole-second resolution) splits them; an event stamped later happened after the
  command started. The replay is also over when no frame comes for `IDLE_S` (`FIRST_WAIT_S`
  for the first one).
- `logs` prints the history and exits at the first live event or a quiet `IDLE_S`, or at once
  after the end of a task that was finished when it started (the `task.completed|failed|
  cancelled` stamped with the record's `finished_at`). With `--follow` it goes on until a live
  end of the task (a task already finished is printed and left). `-o json` prints the frames
  as JSON lines (`llm.delta` included).
- `watch` exits once the task's outcome is known and the history is behind it (so a
  finished run before a follow-up does not end it): 0 completed, 1 failed or cancelled. On a
  terminal it redraws one status line in place; otherwise it prints a line (or with
  `-o json` a snapshot) per change once caught up. When the replay goes quiet, and every
  `RECHECK_S` of quiet after, the task record has the last word (a follow-up run, or an end
  whose event was lost). Without a usable WebSocket it polls `GET /tasks/{id}` every
  `--interval` seconds instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from rich.console import Console
from rich.live import Live
from rich.text import Text

from agentops.cli_client import Client, ClientError, path_id, with_query
from agentops.cli_events import HIDDEN_EVENTS, TERMINAL_EVENTS, Progress, event_line, parse_ts
from agentops.cli_output import STATUS_STYLES, make_console

IDLE_S = 1.0
FIRST_WAIT_S = 5.0
RECHECK_S = 15.0
GIVE_UP = 5
FATAL_HANDSHAKE = frozenset({400, 401, 403, 404})
REFRESH_S = 0.1


_GONE = frozenset(
    {aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING,
     aiohttp.WSMsgType.ERROR}
)  # fmt: skip


def _event_frame(data: str) -> dict[str, Any] | None:
    """An event frame (with an int `seq`); None for pong, error frames and junk."""
    try:
        frame = json.loads(data)
    except ValueError:
        return None
    if not isinstance(frame, dict):
        return None
    seq = frame.get("seq")
    return frame if isinstance(seq, int) and not isinstance(seq, bool) else None


class StreamUnavailable(Exception):
    """The event stream could not be reached `GIVE_UP` times in a row."""


class Feed:
    """One task's frames in stream order, across reconnects."""

    def __init__(self, client: Client, task_id: str) -> None:
        self.client = client
        self.task_id = task_id
        self.since = 0
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    async def next(self, timeout: float | None) -> dict[str, Any] | None:
        """The next event frame, or None when none came within `timeout` seconds."""
        while True:
            ws = self._ws or await self._connect()
            try:
                msg = await ws.receive(timeout=timeout)
            except TimeoutError:
                return None
            if msg.type is aiohttp.WSMsgType.TEXT:
                frame = _event_frame(msg.data)
                if frame is not None and frame["seq"] > self.since:  # never one seen twice
                    self.since = frame["seq"]
                    return frame
            elif msg.type in _GONE:
                await self._drop()

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.client.timeout)
            self._session = aiohttp.ClientSession(timeout=timeout, headers=self.client.headers)
        url = self.client.ws_url(with_query("/ws", task_id=self.task_id, since=self.since))
        last = "no answer"
        for attempt in range(GIVE_UP):
            if attempt:
                await asyncio.sleep(min(0.5 * 2 ** (attempt - 1), 4.0))
            try:
                self._ws = await self._session.ws_connect(url, heartbeat=20.0)
                return self._ws
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in FATAL_HANDSHAKE:
                    raise ClientError(
                        f"the event stream of {self.client.where} refused: HTTP {exc.status}"
                    ) from None
                last = f"HTTP {exc.status}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last = str(exc) or type(exc).__name__
        raise StreamUnavailable(f"cannot reach {self.client.ws_url('/ws')}: {last}")

    async def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def close(self) -> None:
        await self._drop()
        if self._session is not None:
            await self._session.close()


def live_after(server_time: datetime | None) -> datetime:
    """Events stamped after this happened after the command started (see the rules)."""
    return (server_time or datetime.now(UTC)) + timedelta(seconds=1)


def is_live(frame: dict[str, Any], after: datetime) -> bool:
    ts = parse_ts(frame.get("ts"))
    return ts is not None and ts.tzinfo is not None and ts > after


def _at_or_after(frame: dict[str, Any], when: datetime | None) -> bool:
    ts = parse_ts(frame.get("ts"))
    return when is not None and ts is not None and ts >= when


def _is_end(frame: dict[str, Any], task_id: str) -> bool:
    return frame.get("type") in TERMINAL_EVENTS and frame.get("task_id") == task_id


# ---- logs ----


async def logs(args: argparse.Namespace, client: Client) -> int:
    reply = await asyncio.to_thread(client.call, "GET", f"/tasks/{path_id(args.task_id)}")
    after = live_after(reply.server_time)
    record = reply.body if isinstance(reply.body, dict) else {}
    # A finished task's last event is its end, stamped with the record's `finished_at`.
    finished_at = parse_ts(record.get("finished_at"))
    if record.get("status") not in TERMINAL_EVENTS.values():
        finished_at = None
    follow = bool(args.follow) and finished_at is None
    show = _frame_printer(args.output, make_console())
    feed = Feed(client, args.task_id)
    try:
        caught_up, waited = False, FIRST_WAIT_S
        while True:
            try:
                frame = await feed.next(None if caught_up else waited)
            except StreamUnavailable as exc:
                raise ClientError(f"cannot read the events of {args.task_id}: {exc}") from None
            if frame is None:
                if not follow:
                    return 0
                caught_up = True
                continue
            waited = IDLE_S
            live = is_live(frame, after)
            if live and not follow:
                return 0
            caught_up = caught_up or live
            show(frame)
            if _is_end(frame, args.task_id) and (live or _at_or_after(frame, finished_at)):
                return 0
    finally:
        await feed.close()


def _frame_printer(output: str, console: Console) -> Callable[[dict[str, Any]], None]:
    if output == "json":
        return lambda frame: console.out(json.dumps(frame), highlight=False)

    def show(frame: dict[str, Any]) -> None:
        if frame.get("type") in HIDDEN_EVENTS:
            return
        style = STATUS_STYLES.get(str(frame.get("type", "")).split(".")[-1], "")
        if frame.get("type") == "human.request":
            style = STATUS_STYLES["awaiting_human"]
        console.print(Text(event_line(frame), style=style), soft_wrap=True)

    return show


# ---- watch ----


class _View:
    """Shows a Progress: redrawn in place on a terminal, else one line (or JSON) per change."""

    def __init__(self, output: str, console: Console) -> None:
        self.console = console
        self.json = output == "json"
        self.live = None if self.json or not console.is_terminal else Live(
            console=console, auto_refresh=False, transient=False
        )  # fmt: skip
        self._last = ""
        self._drawn = 0.0

    def __enter__(self) -> _View:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def show(self, progress: Progress, *, caught_up: bool, final: bool = False) -> None:
        text = json.dumps(progress.snapshot()) if self.json else progress.line()
        if self.live is not None:
            now = asyncio.get_running_loop().time()
            if final or (text != self._last and (caught_up or now - self._drawn >= REFRESH_S)):
                style = STATUS_STYLES.get(progress.status, "")
                self.live.update(Text(text, style=style), refresh=True)
                self._last, self._drawn = text, now
        elif (caught_up or final) and text != self._last:
            self.console.out(text, highlight=False)
            self._last = text


async def watch(args: argparse.Namespace, client: Client) -> int:
    path = f"/tasks/{path_id(args.task_id)}"
    reply = await asyncio.to_thread(client.call, "GET", path)
    progress = Progress(args.task_id)
    record = reply.body if isinstance(reply.body, dict) else {}
    with _View(args.output, make_console()) as view:
        if record.get("status") in TERMINAL_EVENTS.values():
            progress.apply_record(record)
        else:
            await _follow(client, args, progress, view, live_after(reply.server_time))
        view.show(progress, caught_up=True, final=True)
    return 0 if progress.outcome == "completed" else 1


async def _follow(
    client: Client, args: argparse.Namespace, progress: Progress, view: _View, after: datetime
) -> None:
    feed = Feed(client, args.task_id)
    try:
        caught_up, waited = False, FIRST_WAIT_S
        while progress.outcome is None or not caught_up:
            frame = await feed.next(RECHECK_S if caught_up else waited)
            if frame is None:  # the replay is over, or quiet for a while: the record decides
                record = await asyncio.to_thread(client.get, f"/tasks/{path_id(args.task_id)}")
                if isinstance(record, dict):
                    progress.apply_record(record)
                caught_up = True
            else:
                waited = IDLE_S
                progress.apply(frame)
                caught_up = caught_up or is_live(frame, after)
            view.show(progress, caught_up=caught_up)
    except StreamUnavailable as exc:
        print(
            f"note: {exc}; polling the task every {args.interval:g} s instead",
            file=sys.stderr,
            flush=True,
        )
        await _poll(client, args, progress, view)
    finally:
        await feed.close()


async def _poll(client: Client, args: argparse.Namespace, progress: Progress, view: _View) -> None:
    path = f"/tasks/{path_id(args.task_id)}"
    while progress.outcome is None:
        record = await asyncio.to_thread(client.get, path)
        if isinstance(record, dict):
            progress.apply_record(record)
        view.show(progress, caught_up=True)
        if progress.outcome is None:
            await asyncio.sleep(args.interval)

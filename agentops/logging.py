"""One structlog setup per process.

Invariants:
- Every line goes to stderr (stdout stays free for a command's own output) and carries an ISO
  8601 UTC `timestamp`, `level` and the `process` name.
- Not a terminal (or `fmt="json"`): one JSON object per line, so `agentops up`'s log files and
  any log shipper parse them. A terminal (or `fmt="console"`): the human-readable renderer.
- Records from the stdlib `logging` module (nats-py, aiohttp, asyncio) go through the same
  processors, so a process never writes two formats.
- Calling `configure_logging` again replaces the previous setup instead of stacking handlers.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger


class _AgentOpsHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the root handler we installed, so a second setup can find and replace it."""


def _add_process(process: str) -> Processor:
    def add_process(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("process", process)
        return event_dict

    return add_process


def configure_logging(process: str, level: str = "info", fmt: str = "auto") -> None:
    """Route structlog and stdlib logging to stderr as JSON lines or console text."""
    level_no = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_process(process),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Processor
    if as_json:
        # Tracebacks as data, without frame locals: locals can hold tokens and API keys.
        shared.append(
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        )
        renderer = structlog.processors.JSONRenderer()
    else:
        # rich (when installed) would print frame locals by default; never show them.
        exc_formatter = (
            structlog.dev.RichTracebackFormatter(show_locals=False)
            if importlib.util.find_spec("rich") is not None
            else structlog.dev.plain_traceback
        )
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=exc_formatter
        )

    # structlog's own loggers render directly (the fast path); no stdlib round trip.
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,  # so a later setup or capture_logs takes effect
    )

    handler = _AgentOpsHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _AgentOpsHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_no)
    # httpx logs every request at INFO (the supervisor's health polls); keep only problems.
    logging.getLogger("httpx").setLevel(max(level_no, logging.WARNING))


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A structlog logger; `initial` values are bound to every line it writes."""
    return structlog.get_logger(name, **initial)

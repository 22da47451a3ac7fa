"""How a route declares its part of the OpenAPI document: `@operation(...)` on its handler.

Rules:
- Every handler in the route table carries an `Op`, set by `@operation` next to the handler
  (it knows its body, query and answers). Building the document (`edge/openapi.py`) fails on
  a route whose handler has none, and a test compares the app's routes with the document's
  paths: a new route cannot be left out.
- A JSON body names the pydantic model the handler validates with (`edge/schemas.py`); a
  JSON answer names a model of `edge/responses.py` that describes what the handler returns
  (a test validates real answers against the document).
- Errors are listed by status with when they happen; each has the error shape
  `{"error": {code, message, details}}`. The builder adds what every route of a kind can
  answer: 401 to a route that is not `public`, 503 to one that reads NATS (`bus`), 400
  `invalid_json`, 413 and 422 to one with a JSON body.
- Path parameters come from the path itself; their schemas are in `PATH_PARAMS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from agentops.protocol.subjects import WORKFLOW_PREFIX

H = TypeVar("H", bound=Callable[..., Any])
ATTR = "__agentops_operation__"

ID_PATTERN = "^[A-Za-z0-9_-]{1,128}$"
ID = {"type": "string", "pattern": ID_PATTERN}
PATH_PARAMS: Mapping[str, tuple[dict[str, Any], str]] = {
    "task_id": (ID, "the task's id (`task_…`)"),
    "agent_id": (ID, "the agent's id (`agent_…`)"),
    "workflow_id": (ID, f"the workflow's id (`{WORKFLOW_PREFIX}…`)"),
    "path": ({"type": "string", "minLength": 1}, "a file's path in the task's workspace"),
    "name": ({"type": "string", "minLength": 1}, "a file name"),
}


@dataclass(frozen=True)
class Param:
    """A query parameter or request header."""

    name: str
    schema: dict[str, Any]
    description: str
    location: Literal["query", "header"] = "query"
    required: bool = False


@dataclass(frozen=True)
class Resp:
    """One answer: a JSON model, or other media (`media`: content type -> schema)."""

    description: str
    model: type[BaseModel] | None = None
    media: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # name -> description
    also_error: bool = False  # the error shape may come with this status too


@dataclass(frozen=True)
class Op:
    summary: str
    tag: str
    responses: Mapping[int, Resp]
    errors: Mapping[int, str] = field(default_factory=dict)  # status -> when
    body: type[BaseModel] | None = None  # a JSON body validated with this model
    raw_body: Mapping[str, dict[str, Any]] | None = None  # other media: type -> schema
    params: tuple[Param, ...] = ()
    public: bool = False  # served without a token
    bus: bool = True  # reads NATS: 503 while it is away
    description: str = ""


def operation(
    summary: str,
    tag: str,
    responses: Mapping[int, Resp],
    errors: Mapping[int, str] | None = None,
    *,
    body: type[BaseModel] | None = None,
    raw_body: Mapping[str, dict[str, Any]] | None = None,
    params: tuple[Param, ...] = (),
    public: bool = False,
    bus: bool = True,
    description: str = "",
) -> Callable[[H], H]:
    """Marks a handler with its operation (the description defaults to its docstring)."""

    def mark(handler: H) -> H:
        doc = description or " ".join((handler.__doc__ or "").split())
        op = Op(summary, tag, responses, errors or {}, body, raw_body, params, public, bus, doc)
        setattr(handler, ATTR, op)
        return handler

    return mark


def op_of(handler: object) -> Op | None:
    found = getattr(handler, ATTR, None)
    return found if isinstance(found, Op) else None


def json_resp(model: type[BaseModel], description: str, **kw: Any) -> Resp:
    return Resp(description, model=model, **kw)


# ---- parameters used by several routes ----
def limit(default: int, most: int) -> Param:
    return Param(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": most, "default": default},
        "how many to return",
    )


OFFSET = Param(
    "offset",
    {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0},
    "how many to skip",
)


def choice(name: str, values: tuple[str, ...], description: str) -> Param:
    return Param(name, {"type": "string", "enum": list(values)}, description)


def id_param(name: str, description: str) -> Param:
    return Param(name, dict(ID), description)


INVALID_QUERY = "a query parameter does not parse or is out of range (`invalid_query`)"

"""Request bodies and query parameters: decode, then validate, with a precise error for each.

Rules:
- The body is read whatever its Content-Type (curl's default form type with a JSON body must
  work); the size cap is the app's `client_max_size` (413).
- Not JSON (bad syntax, bad encoding, NaN/Infinity, nesting too deep to parse) is 400
  `invalid_json`. JSON of the wrong shape is 422 `validation_error` with `[{field, message}]`.
- Bodies are validated strictly (no "5" for 5, no true for 1) and unknown fields are refused,
  so a typo is reported rather than ignored.
- Free-form JSON (`context`, a human `response`) is capped in nesting depth, so nothing
  downstream (serialisers, the LLM prompt) hits a recursion limit on client data.
- Query parameters that do not parse or are out of range are 400 `invalid_query`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from agentops.edge.errors import ApiError, bad_request, field_errors, validation_error
from agentops.protocol.subjects import InvalidName, check_id

M = TypeVar("M", bound=BaseModel)
V = TypeVar("V")

MAX_JSON_DEPTH = 32
MAX_DESCRIPTION = 100_000
MAX_STEPS = 10_000  # a run has no size limit but the disk (DESIGN §4a); steps are a budget
_UINT = re.compile(r"[0-9]{1,19}")  # fullmatch: `$` would let "5\n" through


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of decoded JSON (a scalar is 0, `[]` is 1), counted up to `limit + 1`."""
    depth, level = 0, [value]
    while depth <= limit:
        containers = [v for v in level if isinstance(v, dict | list)]
        if not containers:
            return depth
        depth += 1
        level = [c for v in containers for c in (v.values() if isinstance(v, dict) else v)]
    return depth


def _shallow(value: V) -> V:
    if json_depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return value


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class GitSpec(_Body):
    url: str = Field(min_length=1, max_length=4096)
    ref: str | None = Field(default=None, min_length=1, max_length=255)


class WorkspaceSpec(_Body):
    """Exactly one source: a git repository, an upload, or another task's files."""

    git: GitSpec | None = None
    upload: str | None = Field(default=None, min_length=1, max_length=128)
    from_task: str | None = Field(default=None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _exactly_one(self) -> WorkspaceSpec:
        given = [name for name in ("git", "upload", "from_task") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError("give exactly one of git, upload, from_task")
        return self


class PostMessage(_Body):
    message: str = Field(min_length=1, max_length=MAX_DESCRIPTION)
    context: dict[str, Any] | None = None

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("context")
    @classmethod
    def _context_depth(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _shallow(value)


class CreateTask(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    agent_type: str = Field(min_length=1, max_length=64)
    description: str = Field(min_length=1, max_length=MAX_DESCRIPTION)
    context: dict[str, Any] | None = None
    max_steps: int | None = Field(default=None, ge=1, le=MAX_STEPS)
    budget_usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    workspace: WorkspaceSpec | None = None

    @field_validator("description")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("context")
    @classmethod
    def _context_depth(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _shallow(value)


class HumanAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    response: Any  # required; any JSON, null included
    request_id: str | None = Field(default=None, min_length=1, max_length=256)

    @field_validator("response")
    @classmethod
    def _response_depth(cls, value: Any) -> Any:
        return _shallow(value)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode_json(raw: bytes) -> Any:
    if not raw.strip():
        raise bad_request("request body is empty: send a JSON object", code="invalid_json")
    try:
        doc = json.loads(raw, parse_constant=_reject_constant)
        # json accepts a lone UTF-16 surrogate (an escape such as "\udfff", or its bytes),
        # which is no Unicode text: nothing downstream could encode it. Only an escape or
        # the bytes 0xED.. can carry one, so a body with neither is not checked.
        if b"\\u" in raw or b"\xed" in raw:
            json.dumps(doc, ensure_ascii=False).encode()
        return doc
    except UnicodeEncodeError:
        raise bad_request(
            "malformed JSON: a string holds a lone UTF-16 surrogate, which is not Unicode text",
            code="invalid_json",
        ) from None
    except json.JSONDecodeError as exc:
        raise bad_request(
            f"malformed JSON: {exc.msg}",
            {"line": exc.lineno, "column": exc.colno},
            code="invalid_json",
        ) from None
    except (ValueError, RecursionError) as exc:  # bad encoding, NaN, absurd nesting
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise bad_request(f"malformed JSON: {reason}", code="invalid_json") from None


async def read_json(request: web.Request) -> Any:
    try:
        raw = await request.read()  # raises 413 past client_max_size
    except RequestPayloadError as exc:  # e.g. a body that is not what its Content-Encoding says
        # Answer, then close the connection: the rest of this body cannot be read past.
        request.content.feed_eof()  # (else aiohttp reads on after the answer, and fails)
        if request.protocol is not None:
            request.protocol.close()
        reason = str(exc.__cause__ or exc).strip()
        raise bad_request(f"unreadable request body: {reason}", code="invalid_body") from None
    return decode_json(raw)


def parse_model(model: type[M], data: Any, prefix: Sequence[str | int] = ()) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(field_errors(exc, prefix)) from None


# ---- query parameters ----
def _invalid_query(name: str, message: str) -> ApiError:
    return bad_request(
        f"invalid query parameter {name!r}: {message}",
        [{"field": name, "message": message}],
        code="invalid_query",
    )


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _UINT.fullmatch(raw) or not lo <= int(raw) <= hi:
        raise _invalid_query(name, f"must be an integer from {lo} to {hi}")
    return int(raw)


def query_optional_int(request: web.Request, name: str, lo: int, hi: int) -> int | None:
    if request.query.get(name) is None:
        return None
    return query_int(request, name, lo, lo, hi)


def query_choice(request: web.Request, name: str, choices: Collection[str]) -> str | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if raw not in choices:
        raise _invalid_query(name, f"must be one of {', '.join(choices)}")
    return raw


def query_id(request: web.Request, name: str) -> str | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return check_id(raw, name)
    except InvalidName:
        raise _invalid_query(name, "must be 1-128 of [A-Za-z0-9_-]") from None

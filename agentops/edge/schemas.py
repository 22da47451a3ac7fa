"""Request bodies and query parameters: decode, then validate, with a precise error for each.

Rules:
- The body is read whatever its Content-Type (curl's default form type with a JSON body must
  work); the size cap is the app's `client_max_size` (413), on the bytes sent and again on
  the bytes decoded.
- Bodies are decoded here, not by aiohttp (`server.py` turns its decoding off): identity,
  gzip (x-gzip; members one after another, as gzip(1) writes them) or deflate (zlib-wrapped,
  or raw as some clients send it); the middleware has refused any other coding with 415
  (`errors.content_coding`). Decoding stops at the cap, so a small bomb cannot expand past
  it; a body that is not what its coding says, or ends early, is 400 `invalid_body`.
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
import zlib
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from typing import Any, TypeVar

from aiohttp import web
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from agentops.edge.context import CONFIG
from agentops.edge.errors import (
    ApiError,
    bad_request,
    content_coding,
    field_errors,
    unsupported_coding,
    validation_error,
)
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


class Decoder:
    """A gzip or deflate body decoded a chunk at a time, never more than `room` bytes out of
    one chunk (more than `room` out means over the cap: the caller refuses it)."""

    def __init__(self, coding: str) -> None:
        self.coding = "deflate" if coding == "deflate" else "gzip"
        self.stream: Any = None  # zlib's decompressor, made at the first byte of each member

    def feed(self, data: bytes, room: int) -> bytes:
        out = b""
        try:
            while data and len(out) < room:
                if self.stream is None or self.stream.eof:
                    if self.stream is not None and self.coding == "deflate":
                        raise zlib.error("data after the end of the deflate stream")
                    self.stream = zlib.decompressobj(self._wbits(data))
                out += self.stream.decompress(data, room - len(out))
                if self.stream.unconsumed_tail:  # out is full: over the cap
                    break
                data = self.stream.unused_data  # the next gzip member, if any
        except zlib.error as exc:
            raise self._invalid(f"not valid {self.coding} ({exc})") from None
        return out

    def finish(self) -> None:
        if self.stream is not None and not self.stream.eof:
            raise self._invalid(f"the {self.coding} stream ends early")

    def _wbits(self, data: bytes) -> int:
        if self.coding == "gzip":
            return 16 + zlib.MAX_WBITS
        # RFC 1950's header (CM = 8 in the low bits), or a raw deflate stream without one
        return zlib.MAX_WBITS if data[0] & 0x0F == 8 else -zlib.MAX_WBITS

    def _invalid(self, reason: str) -> ApiError:
        return bad_request(f"unreadable request body: {reason}", code="invalid_body")


def decoder(request: web.Request) -> Decoder | None:
    """The body's decoder, None for identity; 415 for a coding the edge does not decode."""
    if not request.body_exists:
        return None
    coding = content_coding(request)
    if coding is None:
        raise unsupported_coding(request)
    return None if coding == "identity" else Decoder(coding)


def too_large() -> ApiError:
    return ApiError(413, "payload_too_large", "request body too large")


async def read_body(request: web.Request) -> bytes:
    """The whole body, decoded; 413 past `client_max_size` sent or decoded."""
    decoding = decoder(request)
    raw = await request.read()  # raises 413 past client_max_size
    if decoding is None:
        return raw
    limit = request.app[CONFIG].client_max_size
    body = decoding.feed(raw, limit + 1)
    if len(body) > limit:
        raise too_large()
    decoding.finish()
    return body


async def body_chunks(
    request: web.Request, limit: int, over: Callable[[], ApiError] = too_large
) -> AsyncIterator[bytes]:
    """The body decoded a chunk at a time; `over()` is raised past `limit` decoded bytes."""
    decoding = decoder(request)
    size = 0
    async for chunk in request.content.iter_chunked(256 * 1024):
        data = chunk if decoding is None else decoding.feed(chunk, limit - size + 1)
        size += len(data)
        if size > limit:
            raise over()
        if data:
            yield data
    if decoding is not None:
        decoding.finish()


async def read_json(request: web.Request) -> Any:
    return decode_json(await read_body(request))


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

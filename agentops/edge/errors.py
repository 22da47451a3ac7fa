"""Every edge error is JSON: `{"error": {"code", "message", "details"}}`, never an HTML page.

Rules:
- Handlers raise `ApiError` (or one of the helpers below) for anything a client did wrong; the
  middleware turns it into its status and JSON body.
- aiohttp's own `HTTPException`s (404 unknown route, 405 wrong method, 413 body over
  `client_max_size`, 417 an `Expect` other than 100-continue) are translated here too, keeping
  their headers (e.g. `Allow`).
- The edge decodes bodies itself (`schemas.py`; aiohttp's decoding is off, `server.py`): a
  body in any `Content-Encoding` but one of `CODINGS` (one value, any case) is 415 before
  its handler runs, never read as identity. Bodiless requests are not concerned.
- A body that cannot be read (framing broken, cut short by the client, or stalled past the
  body timeout: 408) is a JSON error too, and its connection is closed after the answer.
- NATS/JetStream being away is 503 `unavailable`, not 500: retry later (a read), or check
  first (a write: its publish may have gone out unconfirmed).
- A stored record this version cannot read (written by a newer one during a rolling
  upgrade, or damaged) is 503 `unreadable_record`, naming it and why: another edge, or this
  one upgraded, may serve it; it is not a bug of the edge's.
- Anything else is a bug: it is logged with a traceback and answered 500 `internal` without
  leaking the exception text. No client input may reach that branch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import nats.errors
import structlog
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestPayloadError
from pydantic import ValidationError

from agentops.protocol.errors import RetryableError
from agentops.protocol.subjects import InvalidName, check_id
from agentops.store.kv import CorruptDocument

log = structlog.get_logger(__name__)

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    417: "expectation_failed",
    422: "validation_error",
    429: "too_many_requests",
    431: "headers_too_large",
    503: "unavailable",
}


class ApiError(Exception):
    """A client-facing error: HTTP status, stable code, human message, optional details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(error_body(code, message, details), status=status, headers=headers)


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} {ident!r} not found")


def conflict(message: str, details: Any = None) -> ApiError:
    return ApiError(409, "conflict", message, details)


def bad_request(message: str, details: Any = None, code: str = "bad_request") -> ApiError:
    return ApiError(400, code, message, details)


def checked_id(value: str, what: str) -> str:
    """A path id that cannot name anything (bad characters, too long) is simply not found."""
    try:
        return check_id(value, what)
    except InvalidName:
        raise not_found(what, value) from None


def field_errors(exc: ValidationError, prefix: Sequence[str | int] = ()) -> list[dict[str, str]]:
    """pydantic errors as `[{field, message}]`, field a dotted path (`context.mock.script.0`)."""
    out: list[dict[str, str]] = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = [*prefix, *err["loc"]]
        out.append({"field": ".".join(str(p) for p in loc) or "body", "message": err["msg"]})
    return out


def validation_error(details: list[dict[str, str]], message: str = "invalid request") -> ApiError:
    return ApiError(422, "validation_error", message, details)


def from_http_exception(exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusal in the JSON error shape."""
    status = exc.status
    code = HTTP_CODES.get(status, "http_error")
    message = exc.reason
    if status == 413:
        message = "request body too large"
    elif status == 404:
        message = "no such route"
    elif status == 417:
        message = "the only Expect this server knows is 100-continue"
    headers = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "www-authenticate"}}
    return error_response(status, code, message, None, headers or None)


# A write whose publish went out but was not confirmed may still take effect.
UNCONFIRMED = (
    "the message bus is unavailable or did not confirm in time, so this request may or may not "
    "have taken effect; check before retrying (a POST /tasks retried with the same "
    "Idempotency-Key header cannot create a second task)"
)


# The content codings the edge decodes (RFC 9110 §8.4.1: x-gzip is gzip); "" lists none.
CODINGS = frozenset({"", "identity", "gzip", "x-gzip", "deflate"})


def content_coding(request: web.BaseRequest) -> str | None:
    """The body's content coding, lower-cased, or None for one the edge does not decode
    (an unknown one, a list of several, a header repeated)."""
    values = request.headers.getall(hdrs.CONTENT_ENCODING, [])
    if not values:
        return "identity"
    coding = values[0].strip()
    if len(values) > 1 or not coding.isascii() or coding.lower() not in CODINGS:
        return None
    return coding.lower() or "identity"


def unsupported_coding(request: web.BaseRequest) -> ApiError:
    sent = ", ".join(request.headers.getall(hdrs.CONTENT_ENCODING, []))
    return ApiError(
        415, "unsupported_media_type",
        f"Content-Encoding {sent[:64]!r} is not supported: send one of identity, gzip, deflate",
        {"supported": sorted(c for c in CODINGS if c)},
    )  # fmt: skip


class BodyTimeout(RequestPayloadError):
    """No byte of the request body for the body timeout (`server.py`)."""


def unreadable_body(request: web.Request, exc: RequestPayloadError) -> web.Response:
    """A body aiohttp could not read (broken framing, cut short, stalled): 400, or 408 for a
    stall; the connection is closed after the answer, as the rest of the body cannot be read
    past."""
    request.content.feed_eof()  # (else aiohttp reads on after the answer, and fails)
    if request.protocol is not None:
        request.protocol.close()
    reason = str(exc.__cause__ or exc).strip() or type(exc).__name__
    log.info("edge.unreadable_body", path=request.path, error=reason)
    if isinstance(exc, BodyTimeout):
        response = error_response(408, "request_timeout", reason)
    else:
        response = error_response(400, "invalid_body", f"unreadable request body: {reason}")
    response.force_close()
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if request.body_exists and content_coding(request) is None:
            raise unsupported_coding(request)
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers or None)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and the like are not errors
            raise
        return from_http_exception(exc)
    except RequestPayloadError as exc:
        return unreadable_body(request, exc)
    except CorruptDocument as exc:  # a record this version cannot read (newer, or damaged)
        log.error("edge.unreadable_record", path=request.path, error=str(exc)[:300])
        return error_response(503, "unreadable_record", exc.message)
    except (nats.errors.Error, RetryableError) as exc:
        log.warning("edge.unavailable", path=request.path, error=repr(exc))
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return error_response(503, "unavailable", "the message bus is unavailable, retry later")
        return error_response(503, "unavailable", UNCONFIRMED)
    except Exception:
        log.exception("edge.internal_error", method=request.method, path=request.path)
        return error_response(500, "internal", "internal server error")

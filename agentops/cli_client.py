"""The CLI's HTTP side: one client per command against the edge's REST API and WebSocket.

Rules:
- The token comes from `--token`, else AGENTOPS_API_TOKEN; it is sent as a Bearer header (on
  the WebSocket too, never as `?token=` in a URL) and never printed, not even in an error
  about its characters.
- Header values are printable ASCII (space to `~`) or a ConfigError (exit 2) before anything
  is sent; the URL is an http(s) URL with a host.
- Each request failure is named for what it is (unreachable, timed out, not HTTP, the edge's
  own error) as a ClientError (exit 1); a 4xx/5xx carries the edge's code and message.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx

from agentops.protocol.errors import ConfigError

DEFAULT_URL = "http://127.0.0.1:8000"
TOKEN_VARIABLE = "AGENTOPS_API_TOKEN"


class ClientError(Exception):
    """The request failed: the edge answered with an error, could not be reached, did not
    answer in time or sent something that is not HTTP (exit code 1)."""


class ApiError(ClientError):
    """The edge answered with an error status; `body` is what it said."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(error_message(status, body))
        self.status = status
        self.body = body


def check_header_value(value: str, what: str, *, secret: bool = False) -> None:
    """HTTP header values are sent as ASCII: only printable ASCII (space to `~`) is allowed,
    no other characters, no control characters such as a newline. A secret's characters are
    not printed."""
    for position, char in enumerate(value, 1):
        if not " " <= char <= "~":
            found = f"character {position}" if secret else f"the character {char!r}"
            raise ConfigError(
                f"{what} has {found}, which is not printable ASCII: an HTTP header value may "
                "only contain printable ASCII characters (space to '~')"
            )


def json_argument(raw: str, what: str) -> Any:
    """A flag's JSON value, or a ConfigError naming the flag."""
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{what} is not valid JSON: {exc}") from None


def check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"the edge URL {url!r} (--url, AGENTOPS_URL) is invalid: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"the edge URL {url!r} (--url, AGENTOPS_URL) is not an http:// or https:// URL "
            "with a host, e.g. http://127.0.0.1:8000"
        )


def error_message(status: int, body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        text = f"{error.get('code', 'error')}: {error.get('message', '')}"
        if error.get("details") is not None:
            text += f"\n{json.dumps(error['details'], indent=2)}"
        return f"HTTP {status} {text}"
    return f"HTTP {status} {body if isinstance(body, str) else json.dumps(body)}".rstrip()


def path_id(value: str) -> str:
    """An id as one path segment."""
    return quote(value, safe="")


def with_query(path: str, **params: Any) -> str:
    """`path?k=v&...` with the parameters that are not None (none: the bare path)."""
    present = {k: v for k, v in params.items() if v is not None}
    return f"{path}?{urlencode(present)}" if present else path


@dataclass
class Reply:
    """A successful answer: the decoded body and the edge's clock (its `Date` header)."""

    body: Any
    status: int
    server_time: datetime | None


class Client:
    """The edge at `--url` with `--timeout` and the token; one connection pool per command."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.url = str(args.url).rstrip("/")
        self.timeout = float(args.timeout)
        self.where = f"AgentOps at {args.url}"
        token = getattr(args, "token", None)
        source = "--token"
        if token is None:
            token, source = os.environ.get(TOKEN_VARIABLE, "").strip(), TOKEN_VARIABLE
        self.headers: dict[str, str] = {}
        if token:
            check_header_value(token, source, secret=True)
            self.headers["Authorization"] = f"Bearer {token}"
        check_url(self.url)
        self._http: httpx.Client | None = None

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def ws_url(self, path: str) -> str:
        return ("ws" + self.url[4:] if self.url.startswith("http") else self.url) + path

    def get(self, path: str, *, ok: tuple[int, ...] = ()) -> Any:
        return self.call("GET", path, ok=ok).body

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.call("POST", path, **kwargs).body

    def call(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> Reply:
        """One request; a status >= 400 that is not in `ok` is an ApiError."""
        for name, value in (headers or {}).items():
            check_header_value(value, f"the {name} header")
        response = self._send(method, path, {**(headers or {}), **self.headers}, kwargs)
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        if response.status_code >= 400 and response.status_code not in ok:
            raise ApiError(response.status_code, body)
        return Reply(body, response.status_code, _server_time(response))

    def download(self, path: str, write: Callable[[bytes], object]) -> int:
        """GET `path`, handing its body to `write` a chunk at a time; the bytes written. A
        status >= 400 is an ApiError (its JSON error read whole)."""
        if self._http is None:
            self._http = httpx.Client(timeout=self.timeout)
        total = 0
        try:
            with self._http.stream("GET", self.url + path, headers=self.headers) as response:
                if response.status_code >= 400:
                    response.read()
                    try:
                        body: Any = response.json()
                    except ValueError:
                        body = response.text
                    raise ApiError(response.status_code, body)
                for chunk in response.iter_bytes():
                    write(chunk)
                    total += len(chunk)
        except httpx.HTTPError as exc:
            raise ClientError(f"the request to {self.where} failed: {exc}") from None
        return total

    def _send(
        self, method: str, path: str, headers: dict[str, str], kwargs: dict[str, Any]
    ) -> httpx.Response:
        """Each httpx failure is named for what it is, not all as unreachable."""
        if self._http is None:
            self._http = httpx.Client(timeout=self.timeout)
        try:
            return self._http.request(method, self.url + path, headers=headers, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ClientError(
                f"cannot reach {self.where}: {str(exc) or type(exc).__name__}"
            ) from None
        except httpx.TimeoutException:
            raise ClientError(
                f"{self.where} did not answer within {self.timeout:g} s (--timeout)"
            ) from None
        except httpx.RemoteProtocolError as exc:
            raise ClientError(f"{self.where} sent an invalid HTTP response: {exc}") from None
        except httpx.LocalProtocolError as exc:
            raise ConfigError(f"cannot send the request to {self.where}: {exc}") from None
        except httpx.NetworkError as exc:
            raise ClientError(f"the connection to {self.where} failed: {exc}") from None
        except httpx.HTTPError as exc:
            raise ClientError(f"the request to {self.where} failed: {exc}") from None


def _server_time(response: httpx.Response) -> datetime | None:
    raw = response.headers.get("date")
    if not raw:
        return None
    try:
        return parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None

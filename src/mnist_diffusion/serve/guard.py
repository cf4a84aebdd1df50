"""Who may use the page's API: requests addressed to this server (Host), sent by its own page (Origin, when a
browser gives one), as JSON, with a small body. Everything else is refused with one sentence before the app
sees it.

Why each check: a page on another site (or on another port of this machine) can post a `text/plain` form to
any address without the browser asking first, so the API takes only `application/json`, which a cross-site
page can send only after a preflight this server never answers, and refuses a foreign Origin; a site whose
name is made to resolve to 127.0.0.1 (DNS rebinding) sends its own name as Host, so Host must name this
server. A body larger than `limit` bytes is refused by its Content-Length before any of it is read, and a
chunked one as soon as what has arrived passes the limit.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mnist_diffusion.serve.checks import Refused, shown

LOOPBACK = ("127.0.0.1", "localhost", "::1")
ANY_ADDRESS = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    """Whether listening on `host` keeps the server to this machine."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Hosts:
    """The names a request may address this server by: loopback names, the --host it listens on, and where
    it listens on every address, any IP address and this machine's names (an address cannot be rebound)."""

    def __init__(self, host: str | None = None):
        host = (host or "127.0.0.1").strip("[]").lower()
        self.any_address = host in ANY_ADDRESS
        self.names = {*LOOPBACK, host}
        if self.any_address:
            self.names |= {socket.gethostname().lower(), socket.getfqdn().lower()}

    def allows(self, name: str) -> bool:
        if name in self.names:
            return True
        if self.any_address:
            try:
                ipaddress.ip_address(name)
                return True
            except ValueError:
                return False
        return False


def split_host(text: str) -> tuple[str, int] | None:
    """A Host header's (name, port), port 80 when left out; None when it is not name[:port] or [v6][:port]."""
    text = text.strip().lower()
    if text.startswith("["):
        name, closed, rest = text[1:].partition("]")
        if not closed:
            return None
    else:
        name, colon, port = text.partition(":")
        rest = colon + port
    if not rest:
        return name, 80
    if not rest.startswith(":") or not rest[1:].isdigit():
        return None
    return name, int(rest[1:])


def _origin(text: str) -> tuple[str, int] | None:
    """An Origin header's (name, port) for an http origin; None for anything else ('null', https, ...)."""
    try:
        parts = urlsplit(text.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme != "http" or not parts.hostname:
        return None
    return parts.hostname, port or 80


class RequestGuard:
    """ASGI middleware: Host, Origin, Content-Type and body-size checks; the body is read here (at most `limit`
    bytes) and handed on to the app."""

    def __init__(self, app: ASGIApp, hosts: Hosts, limit: int):
        self.app, self.hosts, self.limit = app, hosts, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        has_body = scope["method"] not in ("GET", "HEAD", "OPTIONS")
        try:
            self._check_address(scope, headers)
            if has_body:
                self._check_type(headers)
                body = await self._read(receive)
        except Refused as e:
            # Connection: close, so a body that is still coming is not read to reuse the connection
            response = JSONResponse({"error": str(e)}, e.status, headers={"connection": "close"})
            await response(scope, receive, send)
            return
        if not has_body:
            await self.app(scope, receive, send)
            return
        if body is None:
            return  # the client went away while sending
        given = False

        async def replay() -> Message:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # then what the server says next: a disconnect

        await self.app(scope, replay, send)

    def _check_address(self, scope: Scope, headers: Headers) -> None:
        port = (scope.get("server") or (None, None))[1]
        host = split_host(headers.get("host", ""))
        if host is None or not self.hosts.allows(host[0]) or (port is not None and host[1] != port):
            raise Refused(
                f"this server answers requests addressed to it, not to host {shown(headers.get('host'))}.", 403
            )
        origin = headers.get("origin")
        if origin is not None:
            parsed = _origin(origin)
            if parsed is None or not self.hosts.allows(parsed[0]) or (port is not None and parsed[1] != port):
                raise Refused(
                    f"requests from another site ({shown(origin)}) are refused: only this server's page "
                    "may use its API.",
                    403,
                )

    def _check_type(self, headers: Headers) -> None:
        kind = headers.get("content-type", "")
        if kind.split(";")[0].strip().lower() != "application/json":
            raise Refused(f"the request must be JSON (Content-Type: application/json), got {shown(kind or None)}.", 415)
        length = headers.get("content-length")
        if length is not None and not length.strip().isdigit():
            raise Refused(f"Content-Length must be a number of bytes, got {shown(length)}.", 400)
        if length is not None and int(length) > self.limit:
            raise Refused(f"the request body is {int(length):,} bytes; this server takes at most {self.limit:,}.", 413)

    async def _read(self, receive: Receive) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise Refused(f"the request body is larger than this server takes ({self.limit:,} bytes).", 413)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

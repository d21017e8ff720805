"""Who may talk to the console: the access token, loopback-only mode, CSRF and response headers.

Two modes, chosen by whether a token is configured:

- **No token (loopback only).** The console answers only requests from a loopback client
  (127.0.0.0/8 or ::1) that name a loopback host in their ``Host`` header (``localhost``, a
  127.x.y.z address or ``[::1]``); the second check defeats DNS rebinding, where a hostile page
  points its own name at 127.0.0.1. Anything else gets 403.
- **Token.** Every request must carry it, whatever its address: ``Authorization: Bearer <token>``,
  or the cookie that a first visit to ``/?token=<token>`` sets (HttpOnly, SameSite=Strict), so
  a browser and its ``EventSource`` need no header. A request without it, or with a wrong one,
  gets 401.

*Loopback binding*, for the command line's rule that any other address needs a token, means a
host that is ``localhost`` or an IP address that :attr:`ipaddress.IPv4Address.is_loopback`
accepts (all of 127.0.0.0/8, and ::1): traffic to those never leaves the machine.

State-changing requests are POSTs that carry a CSRF token (an HMAC of the console's secret,
rendered into its own forms) and whose ``Origin``, when the browser sends one, is the console's
own; ``Sec-Fetch-Site: cross-site`` is refused too.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

__all__ = [
    "COOKIE",
    "Guard",
    "csrf_token",
    "is_loopback_host",
    "is_same_origin",
]

COOKIE = "aiodurable_console_token"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Every response: no framing, no sniffing, no referrer, scripts and styles from the console only
# (inline style attributes draw the timeline's bars).
_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline';"
        b" img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none';"
        b" base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make Origin "null"
    (b"cache-control", b"no-store"),
]


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is loopback."""
    host = host.strip().lower().removeprefix("[").removesuffix("]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(authority: str) -> str:
    """The host part of a ``Host`` header value (``[::1]:8080`` -> ``::1``)."""
    if authority.startswith("["):
        return authority[1 : authority.find("]")] if "]" in authority else authority
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


def csrf_token(secret: bytes) -> str:
    """The CSRF token the console renders into its forms."""
    return hmac.new(secret, b"aiodurable console csrf", hashlib.sha256).hexdigest()


def is_same_origin(headers: dict[str, str]) -> bool:
    """Whether a request's ``Origin`` (if any) names the host it was sent to, and the browser
    does not call it cross-site."""
    if headers.get("sec-fetch-site", "") == "cross-site":
        return False
    origin = headers.get("origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    return origin.split("://", 1)[-1] == headers.get("host", "")


def _header_dict(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}


class Guard:
    """ASGI middleware enforcing the access rules above and adding the security headers."""

    def __init__(self, app: ASGIApp, *, token: str | None) -> None:
        self.app = app
        self.token = token
        # The cookie holds the token's digest: any token text fits in it, and the token itself
        # is never echoed back.
        self.digest: str | None = None if token is None else _digest(token)
        self.secret: bytes = secrets.token_bytes(32)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _header_dict(scope)
        if self.token is None:
            client = scope.get("client")
            client_host = client[0] if client else ""
            if not (
                is_loopback_host(client_host)
                and is_loopback_host(_host_of(headers.get("host", "")))
            ):
                await _plain(
                    send,
                    403,
                    "this console answers loopback requests only;"
                    " start it with a token to serve others",
                )
                return
        else:
            offered = _offered_digest(scope, headers)
            assert self.digest is not None
            if offered is None or not hmac.compare_digest(offered, self.digest):
                await _plain(
                    send,
                    401,
                    "a valid console token is required",
                    [(b"www-authenticate", b"Bearer")],
                )
                return
            if _query_token(scope) is not None:
                await _redirect_setting_cookie(scope, send, self.digest)
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _query_token(scope: Scope) -> str | None:
    query: bytes = scope.get("query_string", b"")
    for key, value in parse_qsl(query.decode("latin-1")):
        if key == "token":
            return value
    return None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _offered_digest(scope: Scope, headers: dict[str, str]) -> str | None:
    """The digest of the token a request offers (header, query or cookie), if any."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return _digest(auth[7:].strip())
    from_query = _query_token(scope)
    if from_query is not None:
        return _digest(from_query)
    cookie: SimpleCookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie", ""))
    except Exception:  # a malformed Cookie header is no token
        return None
    morsel = cookie.get(COOKIE)
    return None if morsel is None else str(morsel.value)


async def _plain(
    send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = (text + "\n").encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *(extra or []),
                *_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _redirect_setting_cookie(scope: Scope, send: Send, digest: str) -> None:
    """Answer ``?token=`` with the cookie and a redirect to the same URL without it."""
    rest = [
        (k, v)
        for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"))
        if k != "token"
    ]
    root = scope.get("root_path", "")
    location = scope.get("path", "/") + (("?" + urlencode(rest)) if rest else "")
    cookie = f"{COOKIE}={digest}; Path={root or '/'}; HttpOnly; SameSite=Strict"
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [
                (b"location", location.encode("latin-1")),
                (b"set-cookie", cookie.encode("latin-1")),
                (b"content-length", b"0"),
                *_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})

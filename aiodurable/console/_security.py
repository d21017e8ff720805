"""Who may talk to the console: the access token, loopback-only and Unix-socket modes, CSRF and
response headers.

Three modes, chosen by :func:`create_app`'s ``token`` and ``unix_socket``:

- **Token** (what ``aiodurable console`` uses by default, with a random token). Every request
  must carry it, whatever its address: ``Authorization: Bearer <token>``, or the session cookie
  that a visit to ``/?token=<token>`` sets, so that a browser and its ``EventSource`` need no
  header. That visit is answered by a redirect to the same URL without the token. A request
  without a valid token or cookie gets 401.
- **No token, loopback only.** Only requests from a loopback client (127.0.0.0/8 or ::1) that
  name a loopback host in their ``Host`` header (``localhost``, a 127.x.y.z address or ``[::1]``)
  are served; the second check defeats DNS rebinding, where a hostile page points its own name at
  127.0.0.1. Anything else gets 403. Every account on the machine is loopback: this mode is for a
  machine of one user.
- **No token, Unix socket** (``unix_socket=True``). Only requests that arrived over a Unix socket
  (no client address) and name a loopback host are served; the socket file's permissions decide
  who may connect (``aiodurable console --uds`` makes it 0600, its owner only).

The cookie holds no token: it is ``<issued>.<nonce>.<HMAC>``, with an HMAC key derived from the
token, valid for :data:`COOKIE_LIFETIME` seconds (HttpOnly, SameSite=Strict, Secure over HTTPS).
Changing the token ends every session; processes that share a token accept each other's cookies.
Tokens and MACs are compared in constant time.

*Loopback binding*, for the command line's rule that any other address needs a token, means a
host that is ``localhost`` or an IP address that :attr:`ipaddress.IPv4Address.is_loopback`
accepts (all of 127.0.0.0/8, and ::1): traffic to those never leaves the machine.

State-changing requests are POSTs that carry a CSRF token (an HMAC of the console's secret,
rendered into its own forms) and whose ``Origin``, when the browser sends one, is the console's
own; ``Sec-Fetch-Site: cross-site`` is refused too. The secret derives from the token when there
is one (so several workers accept each other's forms), else it is random per process. WebSocket
connections are refused: the console has none.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

__all__ = [
    "COOKIE",
    "COOKIE_LIFETIME",
    "MIN_TOKEN_LENGTH",
    "Guard",
    "check_token",
    "csrf_token",
    "is_loopback_host",
    "is_same_origin",
    "is_storable",
    "new_token",
    "plain_response",
]

COOKIE = "aiodurable_console_token"
COOKIE_LIFETIME = 12 * 3600
"""Seconds a session cookie stays valid; then the token is needed again."""
MIN_TOKEN_LENGTH = 16
"""The fewest characters a console token may have."""

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


def is_storable(text: str) -> bool:
    """Whether PostgreSQL text can hold ``text`` (no NUL, no unpaired surrogate): what no
    recorded ID or name can equal is answered 400 or 404 before any query."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _header_dict(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}


def new_token() -> str:
    """A random console token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def check_token(token: str) -> str:
    """``token`` if it is fit to guard the console, else a ``ValueError`` naming the fix: at least
    :data:`MIN_TOKEN_LENGTH` printable ASCII characters, no spaces."""
    hint = " (make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
    if not isinstance(token, str):
        raise ValueError(f"a console token must be a str, not {type(token).__name__}")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"a console token needs at least {MIN_TOKEN_LENGTH} characters, this one has"
            f" {len(token)}{hint}"
        )
    if not all("!" <= c <= "~" for c in token):
        raise ValueError(
            "a console token must be printable ASCII without spaces (it travels in headers,"
            f" URLs and cookies){hint}"
        )
    return token


def _sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _derive(token: str, purpose: bytes) -> bytes:
    return hmac.new(token.encode(), b"aiodurable console " + purpose, hashlib.sha256).digest()


class Guard:
    """ASGI middleware enforcing the access rules above and adding the security headers.

    ``clock`` (seconds since the epoch) dates and checks session cookies.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        unix_socket: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.token: str | None = None if token is None else check_token(token)
        self.unix_socket = unix_socket
        self._clock = clock
        self._token_digest = None if token is None else _sha256(token)
        self._cookie_key = None if token is None else _derive(token, b"cookie")
        self.secret: bytes = secrets.token_bytes(32) if token is None else _derive(token, b"csrf")

    def cookie_value(self, issued: int | None = None) -> str:
        """A session cookie's value: ``<issued>.<nonce>.<HMAC of both>``."""
        assert self._cookie_key is not None
        issued = int(self._clock()) if issued is None else issued
        body = f"{issued}.{secrets.token_hex(8)}"
        mac = hmac.new(self._cookie_key, body.encode(), hashlib.sha256).hexdigest()
        return f"{body}.{mac}"

    def _cookie_ok(self, value: str) -> bool:
        assert self._cookie_key is not None
        issued_text, _, rest = value.partition(".")
        nonce, _, mac = rest.partition(".")
        if not (issued_text.isascii() and issued_text.isdigit() and len(issued_text) < 16):
            return False
        expected = hmac.new(
            self._cookie_key, f"{issued_text}.{nonce}".encode(), hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(mac.encode(), expected.encode()):
            return False
        age = self._clock() - int(issued_text)
        return -60 <= age <= COOKIE_LIFETIME  # (a minute of clock skew between workers)

    def _token_ok(self, offered: str) -> bool:
        assert self._token_digest is not None
        return hmac.compare_digest(_sha256(offered), self._token_digest)

    def _authorized(self, scope: Scope, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            return self._token_ok(auth[7:].strip())
        from_query = _query_token(scope)
        if from_query is not None:
            return self._token_ok(from_query)
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is no token
            return False
        morsel = cookie.get(COOKIE)
        return morsel is not None and self._cookie_ok(str(morsel.value))

    def _local(self, scope: Scope, headers: dict[str, str]) -> bool:
        client = scope.get("client") or None
        if self.unix_socket:
            arrived = client is None  # a Unix socket has no client address
        else:
            arrived = client is not None and is_loopback_host(str(client[0]))
        return arrived and is_loopback_host(_host_of(headers.get("host", "")))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # a WebSocket, or anything newer: the console has none
            if scope["type"] == "websocket":
                await receive()  # websocket.connect
                await send({"type": "websocket.close", "code": 1008})
            return
        headers = _header_dict(scope)
        if self.token is None:
            if not self._local(scope, headers):
                where = "over its Unix socket" if self.unix_socket else "from loopback"
                await plain_response(
                    send,
                    403,
                    f"this console answers requests {where} only;"
                    " start it with a token to serve others",
                )
                return
        else:
            if not self._authorized(scope, headers):
                await plain_response(
                    send,
                    401,
                    "a valid console token is required: open the link the console printed when"
                    " it started (it ends in ?token=...), or send 'Authorization: Bearer <token>'",
                    [(b"www-authenticate", b"Bearer")],
                )
                return
            if _query_token(scope) is not None:
                await self._redirect_setting_cookie(scope, send)
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _redirect_setting_cookie(self, scope: Scope, send: Send) -> None:
        """Answer ``?token=`` with a session cookie and a redirect to the same URL without it.

        The location is a path on this server: leading slashes and backslashes collapse to one
        slash, so ``//evil.example/x?token=...`` cannot send the browser elsewhere.
        """
        rest = [
            (k, v)
            for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"))
            if k != "token"
        ]
        path = quote(str(scope.get("path", "/")), safe="/:@!$&'()*+,;=~", errors="replace")
        location = "/" + path.lstrip("/\\") + (("?" + urlencode(rest)) if rest else "")
        root = str(scope.get("root_path", "")) or "/"
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        cookie = (
            f"{COOKIE}={self.cookie_value()}; Path={root}; Max-Age={COOKIE_LIFETIME};"
            f" HttpOnly; SameSite=Strict{secure}"
        )
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


def _query_token(scope: Scope) -> str | None:
    query: bytes = scope.get("query_string", b"")
    for key, value in parse_qsl(query.decode("latin-1")):
        if key == "token":
            return value
    return None


async def plain_response(
    send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer with ``text`` as plain text, the console's security headers and any ``extra``."""
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

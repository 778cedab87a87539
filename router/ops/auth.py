"""Who may use the admin API: bearer tokens, each with a role and a label.

    viewer    every read: status, routes, history, dashboard figures, shadow
              figures and samples, drift, feedback, streams, export
    operator  every read and every change (POST)

Tokens are read once, when the router starts: `ROUTER_ADMIN_TOKEN` (else
`admin.token_file`) is an operator token labelled `admin`, as it always was;
`admin.tokens` adds more, each from a file or an environment variable. A
request's bearer token is compared with EVERY configured token through
`hmac.compare_digest`, so neither the time taken nor the order of the tokens
tells how much of a guess was right.

`/healthz`, `/readyz` and `/metrics` answer anyone (the kubelet and
Prometheus); so does `/dashboard`, the page itself, which holds no figures:
its script asks for a token once, keeps it in the tab's sessionStorage and
sends it with every poll of `/v1/dashboard`. Everything else: no token or a
wrong one 401, a viewer's change 403, no token configured at all 403 (an
admin API anyone could read or change is never the default). The label of
the token a change came with is named in the route's history (`actor`).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from router.config.spec import AdminSpec

TOKEN_ENV: Final = "ROUTER_ADMIN_TOKEN"
OPEN: Final = frozenset({"/healthz", "/readyz", "/metrics", "/dashboard"})
READS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
ROLE: Final = web.RequestKey("router.token", object)  # the request's Token (middleware)
NO_TOKEN: Final = (
    "the admin API is closed: no token is configured; set ROUTER_ADMIN_TOKEN "
    "(or admin.token_file, or admin.tokens in config.yaml) and restart the router"
)


class TokenError(ValueError):
    """A configured token cannot be read (the router does not start without it)."""


@dataclass(frozen=True, slots=True)
class Token:
    label: str
    role: str  # viewer | operator
    secret: bytes

    @property
    def operator(self) -> bool:
        return self.role == "operator"


def legacy_token(spec: AdminSpec) -> str | None:
    """ROUTER_ADMIN_TOKEN, else the stripped contents of admin.token_file."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token and spec.token_file:
        with open(spec.token_file, encoding="utf-8") as f:
            token = f.read().strip()
    return token or None


def load_tokens(spec: AdminSpec) -> list[Token]:
    """Every token the admin API accepts; TokenError names one that cannot be read."""
    out = []
    if legacy := legacy_token(spec):
        out.append(Token("admin", "operator", legacy.encode()))
    for i, t in enumerate(spec.tokens):
        where = f"admin.tokens[{i}] ({t.label})"
        if t.env is not None:
            secret = os.environ.get(t.env, "").strip()
            if not secret:
                raise TokenError(f"{where}: environment variable {t.env} is empty or unset")
        else:
            try:
                with open(t.file or "", encoding="utf-8") as f:
                    secret = f.read().strip()
            except OSError as exc:
                raise TokenError(f"{where}: cannot read {t.file}: {exc.strerror}") from None
            if not secret:
                raise TokenError(f"{where}: {t.file} is empty")
        out.append(Token(t.label, t.role, secret.encode()))
    return out


class Access:
    """The configured tokens and the middleware that checks them."""

    def __init__(self, tokens: Sequence[Token]) -> None:
        self.tokens = tuple(tokens)

    def who(self, request: web.Request) -> Token | None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        guess = given.strip().encode()
        found = None
        for token in self.tokens:  # every one, whichever matches: constant in time
            if hmac.compare_digest(guess, token.secret):
                found = token
        return found

    def refusal(self, request: web.Request, *, change: bool) -> web.Response | None:
        """None when the request may go on, else the answer refusing it."""
        if not self.tokens:
            return _error(403, NO_TOKEN)
        token = self.who(request)
        if token is None:
            return _error(
                401, "missing or wrong bearer token", hint="Authorization: Bearer <token>"
            )
        request[ROLE] = token
        if change and not token.operator:
            return _error(403, f"token {token.label!r} is a viewer token: changes need an operator")
        return None

    @web.middleware
    async def middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if request.path not in OPEN:
            refused = self.refusal(request, change=request.method not in READS)
            if refused is not None:
                return refused
        return await handler(request)


def label_of(request: web.Request) -> str:
    token = request.get(ROLE)
    return token.label if isinstance(token, Token) else ""


def actor_of(request: web.Request, said: object) -> str:
    """History's `actor` of a change: what the client says it is, by whose token."""
    label = label_of(request)
    said = str(said or "").strip()
    if not label:
        return said
    return f"{said} by {label}" if said and said != label else label


def _error(status: int, message: str, **extra: str) -> web.Response:
    return web.json_response({"error": message, "message": message, **extra}, status=status)

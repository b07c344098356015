"""Who is asking: users with scrypt password hashes and API tokens (both from the settings), sessions.

* Users (``web_users``: ``name:role:scrypt$N$r$p$salt$hash``) log in on the login page, which sets a
  session cookie (HttpOnly, SameSite=Strict, signed with a key made when the node starts: a restart
  logs everyone out) holding the name and expiry; the role is looked up in the settings at every
  request. Scripts use HTTP Basic with the same users, or a token (``web_tokens``:
  ``name:role:sha256$<hex of the token's sha256>``) as ``Authorization: Bearer <token>``.
* A request carrying only the session cookie may change something (POST) only with the header
  ``X-Dermnode-Action: 1``, which a form on another site cannot send (cross-site request forgery).
* Roles: ``read-only`` sees everything; ``operator`` may also requeue, retry and cancel.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request

from dermnode.node.settings import Settings

SESSION_COOKIE = "dermnode_session"
ACTION_HEADER = "X-Dermnode-Action"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


@dataclass(frozen=True)
class User:
    name: str
    role: str
    via: str  # session, basic or token

    @property
    def operator(self) -> bool:
        return self.role == "operator"

    @property
    def label(self) -> str:
        """How the audit log names this user (``web:alice``)."""
        return f"web:{self.name}"


# ------------------------------------------------------------------------------------- hashes
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64, no padding): what goes after ``name:role:`` in web_users."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
                                dklen=len(expected), maxmem=128 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def new_token() -> tuple[str, str]:
    """A fresh API token and what goes after ``name:role:`` in web_tokens (its sha256)."""
    token = secrets.token_urlsafe(32)
    return token, f"sha256${hashlib.sha256(token.encode()).hexdigest()}"


def _entries(values: list[str]) -> dict[str, tuple[str, str]]:
    """name -> (role, hash) from ``name:role:hash`` settings entries."""
    found = {}
    for entry in values:
        name, role, stored = entry.split(":", 2)
        found[name] = (role, stored)
    return found


# ---------------------------------------------------------------------------------- sessions
class Authenticator:
    """Checks credentials against the settings and signs session cookies."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.users = _entries(settings.web_users)
        self.tokens = {stored.removeprefix("sha256$"): (name, role)
                       for name, (role, stored) in _entries(settings.web_tokens).items()}
        self._key = secrets.token_bytes(32)

    def login(self, name: str, password: str) -> User | None:
        role, stored = self.users.get(name, ("", "scrypt$16384$8$1$AAAA$AAAA"))  # same work for unknown names
        return User(name, role, "session") if verify_password(password, stored) and role else None

    def session_cookie(self, user: User) -> str:
        payload = _b64(json.dumps({"u": user.name, "e": time.time() + self.settings.web_session_hours * 3600}).encode())
        return f"{payload}.{self._sign(payload)}"

    def _sign(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()

    def from_session(self, cookie: str) -> User | None:
        payload, _, signature = cookie.partition(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            values = json.loads(_unb64(payload))
        except ValueError:
            return None
        name = values.get("u")
        if values.get("e", 0) < time.time() or name not in self.users:
            return None
        return User(name, self.users[name][0], "session")

    def from_request(self, request: Request) -> User | None:
        """The user a request's Authorization header or session cookie names, if any is valid."""
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials:
            found = self.tokens.get(hashlib.sha256(credentials.strip().encode()).hexdigest())
            return User(found[0], found[1], "token") if found else None
        if scheme.lower() == "basic" and credentials:
            try:
                name, _, password = base64.b64decode(credentials.strip()).decode().partition(":")
            except ValueError:
                return None
            user = self.login(name, password)
            return User(user.name, user.role, "basic") if user else None
        cookie = request.cookies.get(SESSION_COOKIE)
        return self.from_session(cookie) if cookie else None


# ------------------------------------------------------------------------------ dependencies
class LoginRequired(Exception):
    """A page was asked for without a login: the app answers with a redirect to the login page."""


def _authenticator(request: Request) -> Authenticator:
    return request.app.state.authenticator


def api_user(request: Request) -> User:
    """Any valid user, else 401."""
    user = _authenticator(request).from_request(request)
    if user is None:
        raise HTTPException(401, "authentication required (session, HTTP Basic or Bearer token)",
                            headers={"WWW-Authenticate": 'Basic realm="dermnode"'})
    return user


def api_operator(request: Request, user: User = Depends(api_user)) -> User:
    """An operator, else 403; a session-only request must also carry the action header."""
    if not user.operator:
        raise HTTPException(403, f"{user.name} has the role {user.role}; this action needs operator")
    if user.via == "session" and request.headers.get(ACTION_HEADER) != "1":
        raise HTTPException(403, f"a change made with a session cookie needs the header {ACTION_HEADER}: 1")
    return user


def page_user(request: Request) -> User:
    """Any valid user, else a redirect to the login page."""
    user = _authenticator(request).from_request(request)
    if user is None:
        raise LoginRequired()
    return user

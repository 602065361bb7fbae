"""Who may send: receivers on loopback accept anyone on this machine; on any other interface they
require a bearer token (LLMOBS_TOKEN, or `--token`, which every local user can read in the process
list), sent by exporters as `OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer <token>"`. Without a
token, or with a blank or short one, a non-loopback bind is refused at start: an open OTLP port on
a network is an open write path into the store.
"""

from __future__ import annotations

import hmac
import ipaddress
import re

SCHEME = "bearer"  # RFC 7235: the auth-scheme is case-insensitive
MIN_TOKEN_CHARS = 16  # off loopback; `openssl rand -hex 16` makes 32
_CREDENTIALS = re.compile(r"[ \t]*([^ \t]+)[ \t]+([^ \t](?:.*[^ \t])?)[ \t]*")  # scheme SP+ token


class InsecureBind(ValueError):
    pass


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname resolving elsewhere, or 0.0.0.0 / ::: not loopback


def check_bind(host: str, token: str | None) -> None:
    """Raise InsecureBind when `host` is reachable from other machines and no usable token guards it:
    none, a blank one (only whitespace), or one shorter than MIN_TOKEN_CHARS."""
    if is_loopback(host):
        return
    secret = (token or "").strip()
    how = ("set LLMOBS_TOKEN=SECRET (or pass --token SECRET, which other local users can see in the "
           "process list) and have exporters send OTEL_EXPORTER_OTLP_HEADERS=\"Authorization=Bearer SECRET\"")
    if token is None or token == "":
        raise InsecureBind(f"--host {host} would accept telemetry from other machines, and no token is set: {how}")
    if not secret:
        raise InsecureBind(f"--host {host} would accept telemetry from other machines, and the token is blank "
                           f"(only whitespace): {how}")
    if len(secret) < MIN_TOKEN_CHARS:
        raise InsecureBind(f"--host {host} would accept telemetry from other machines, and the token is only "
                           f"{len(secret)} characters: use at least {MIN_TOKEN_CHARS} (`openssl rand -hex 16` "
                           f"makes one); {how}")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value: scheme matched case-insensitively, any
    spaces or tabs around and between; None when the value is missing, another scheme, or has no token."""
    match = _CREDENTIALS.fullmatch(authorization or "")
    if match is None or match.group(1).lower() != SCHEME:
        return None
    return match.group(2)


class TokenCheck:
    """Compares the token of an Authorization header with the expected one in constant time; counts
    refusals. A blank token (only whitespace) is no token."""

    def __init__(self, token: str | None) -> None:
        secret = (token or "").strip()
        self._expected = secret.encode() if secret else None
        self.refused = 0

    @property
    def enabled(self) -> bool:
        return self._expected is not None

    def allows(self, authorization: str | None) -> bool:
        if self._expected is None:
            return True
        token = bearer_token(authorization)
        if token is not None:
            try:
                sent = token.encode()
            except UnicodeEncodeError:  # a lone surrogate: no token we could have issued
                sent = None
            if sent is not None and hmac.compare_digest(sent, self._expected):
                return True
        self.refused += 1
        return False

    @staticmethod
    def reason(authorization: str | None) -> str:
        if not authorization or not authorization.strip():
            return "missing Authorization header: send Authorization: Bearer <token>"
        if bearer_token(authorization) is None:
            return "Authorization is not a bearer token: send Authorization: Bearer <token>"
        return "wrong token"

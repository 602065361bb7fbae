"""Who may send: receivers on loopback accept anyone on this machine; on any other interface they
require a bearer token (`--token` or LLMOBS_TOKEN), sent by exporters as
`OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer <token>"`. Without a token a non-loopback bind
is refused at start: an open OTLP port on a network is an open write path into the store.
"""

from __future__ import annotations

import hmac
import ipaddress


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
    """Raise InsecureBind when `host` is reachable from other machines and no token guards it."""
    if not is_loopback(host) and not token:
        raise InsecureBind(
            f"--host {host} would accept telemetry from other machines, and no token is set: pass "
            f"--token SECRET (or set LLMOBS_TOKEN) and have exporters send "
            f"OTEL_EXPORTER_OTLP_HEADERS=\"Authorization=Bearer SECRET\"")


class TokenCheck:
    """Compares an Authorization header with `Bearer <token>` in constant time; counts refusals."""

    def __init__(self, token: str | None) -> None:
        self._expected = f"Bearer {token}".encode() if token else None
        self.refused = 0

    @property
    def enabled(self) -> bool:
        return self._expected is not None

    def allows(self, authorization: str | None) -> bool:
        if self._expected is None:
            return True
        if authorization is not None and hmac.compare_digest(authorization.strip().encode(), self._expected):
            return True
        self.refused += 1
        return False

    @staticmethod
    def reason(authorization: str | None) -> str:
        if not authorization:
            return "missing Authorization header: send Authorization: Bearer <token>"
        return "wrong token"

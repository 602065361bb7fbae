"""`--store clickhouse://USER@HOST:8123/DB`: what a ClickHouse store URL may say, and what it may not.

The password never travels in the URL: URLs end up in shell history, `ps` output, process listings
of a Kubernetes pod and log lines. It comes only from LLMOBS_CLICKHOUSE_PASSWORD, and a URL that
carries one is refused rather than silently used or silently ignored.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

PASSWORD_ENV = "LLMOBS_CLICKHOUSE_PASSWORD"
# A PEM bundle to trust for clickhouse+https:// (a private CA), instead of the system's; `--store-ca-cert`.
CA_CERT_ENV = "LLMOBS_CLICKHOUSE_CA_CERT"

# clickhouse:// speaks plain HTTP (ClickHouse's 8123); clickhouse+https:// speaks TLS (8443).
_SCHEMES = {"clickhouse": ("http", 8123), "clickhouse+https": ("https", 8443)}
# ClickHouse identifiers without quoting: the database name is used in DDL (`CREATE DATABASE db`),
# so a name that would need quoting is refused here instead of being quoted everywhere.
_DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_USER_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


class StoreUrlError(ValueError):
    """A --store URL that cannot be used; the message says what is wrong and what a good one looks like."""


_EXAMPLE = "clickhouse://USER@HOST:8123/DB or clickhouse+https://USER@HOST:8443/DB"


@dataclass(frozen=True, slots=True)
class ClickHouseUrl:
    interface: str  # "http" or "https"
    host: str
    port: int
    user: str
    database: str
    password: str = ""
    ca_cert: str | None = None  # trusted for TLS instead of the system's CAs (CA_CERT_ENV, --store-ca-cert)

    @property
    def secure(self) -> bool:
        return self.interface == "https"

    def display(self) -> str:
        """The URL as shown in logs and the TUI's header: never with the password."""
        scheme = "clickhouse+https" if self.secure else "clickhouse"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{self.user}@{host}:{self.port}/{self.database}"


def parse_store_url(url: str, environ: Mapping[str, str] | None = None) -> ClickHouseUrl:
    """Parse a ClickHouse store URL; the password is read from LLMOBS_CLICKHOUSE_PASSWORD in `environ`
    (os.environ by default), and is empty when the variable is unset."""
    env = os.environ if environ is None else environ
    if not isinstance(url, str) or not url.strip():
        raise StoreUrlError(f"empty store URL: expected {_EXAMPLE}")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise StoreUrlError(f"store URL contains whitespace or control characters: expected {_EXAMPLE}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        # urlsplit's own words ("Port out of range 0-65535", "Invalid IPv6 URL") name the fault.
        raise StoreUrlError(f"malformed store URL ({exc}): expected {_EXAMPLE}") from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        shown = f"'{parts.scheme}://'" if parts.scheme else "no scheme"
        raise StoreUrlError(
            f"unsupported store URL scheme {shown}: expected {_EXAMPLE} (SQLite stores are given with --db PATH)"
        )
    if parts.password is not None:
        raise StoreUrlError(
            f"the store URL must not contain a password (it would show in shell history and process lists): "
            f"remove it and set {PASSWORD_ENV} instead"
        )
    if parts.query or parts.fragment:
        raise StoreUrlError(f"the store URL takes no '?query' or '#fragment': expected {_EXAMPLE}")
    if not parts.username:
        raise StoreUrlError(f"the store URL names no user: expected {_EXAMPLE}")
    user = unquote(parts.username)
    if not _USER_NAME.fullmatch(user):
        raise StoreUrlError(f"invalid user name {user!r} in the store URL: letters, digits and _ . @ - only")
    host = parts.hostname
    if not host:
        raise StoreUrlError(f"the store URL names no host: expected {_EXAMPLE}")
    interface, default_port = _SCHEMES[scheme]
    if port is None:
        # "HOST:" with nothing after the colon parses as no port: refuse rather than guess.
        if parts.netloc.endswith(":"):
            raise StoreUrlError(f"empty port in the store URL: expected {_EXAMPLE}")
        port = default_port
    if port == 0:
        raise StoreUrlError("port 0 in the store URL: give the port ClickHouse listens on (8123 HTTP, 8443 TLS)")
    database = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not database:
        raise StoreUrlError(f"the store URL names no database: expected {_EXAMPLE}")
    if not _DATABASE_NAME.fullmatch(database):
        raise StoreUrlError(
            f"invalid database name {database!r} in the store URL: a letter or _, then letters, digits or _ "
            f"(at most 63)"
        )
    ca_cert = env.get(CA_CERT_ENV) or None
    if ca_cert is not None:
        if interface != "https":
            raise StoreUrlError(f"a CA certificate ({CA_CERT_ENV} or --store-ca-cert) is for TLS: use "
                                f"clickhouse+https://USER@HOST:8443/DB")
        try:
            with open(ca_cert, "rb") as bundle:
                head = bundle.read(4096)
        except OSError as exc:
            raise StoreUrlError(f"cannot read the CA certificate {ca_cert}: {exc.strerror or exc}") from None
        if b"-----BEGIN CERTIFICATE-----" not in head:
            raise StoreUrlError(f"the CA certificate {ca_cert} holds no PEM certificate (no BEGIN CERTIFICATE line)")
    return ClickHouseUrl(interface, host, port, user, database, env.get(PASSWORD_ENV, ""), ca_cert)

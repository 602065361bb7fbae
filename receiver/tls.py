"""TLS for the OTLP receivers (`--tls-cert`, `--tls-key`): one PEM certificate chain and key,
loaded and checked at start so that a wrong path or a key that does not match fails with a clear
message before anything listens."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class TlsError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert_path: str
    key_path: str
    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def load(cls, cert_path: str | None, key_path: str | None) -> TlsFiles | None:
        if not cert_path and not key_path:
            return None
        if not cert_path or not key_path:
            raise TlsError("--tls-cert and --tls-key go together: pass both PEM files")
        pems = []
        for flag, path in (("--tls-cert", cert_path), ("--tls-key", key_path)):
            try:
                pems.append(Path(path).read_bytes())
            except OSError as exc:
                raise TlsError(f"{flag} {path}: cannot read it: {exc.strerror or exc}") from exc
        files = cls(cert_path, key_path, *pems)
        files.server_context()  # a mismatched or malformed pair fails here, with the reason
        return files

    def server_context(self, on_handshake_failure: Callable[[ssl.SSLError], None] | None = None) -> ssl.SSLContext:
        """A server context; `on_handshake_failure` is called once per connection whose TLS handshake
        fails (asyncio logs nothing for those unless in debug mode: this is where they are counted)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert_path, self.key_path)
        except (ssl.SSLError, OSError) as exc:
            raise TlsError(f"--tls-cert {self.cert_path} / --tls-key {self.key_path}: not a usable certificate "
                           f"and matching private key in PEM ({exc})") from exc
        if on_handshake_failure is not None:
            context.sslobject_class = _counting_sslobject(on_handshake_failure)
        return context


def _counting_sslobject(on_failure: Callable[[ssl.SSLError], None]) -> type[ssl.SSLObject]:
    """asyncio (and so aiohttp) drives TLS through SSLContext.wrap_bio(), whose objects are of the
    context's `sslobject_class`; this one reports a handshake that fails with a TLS error (a plaintext
    client, garbage, no shared protocol version or cipher, a client that refuses the certificate with
    an alert). Not reported: a connection closed during the handshake without a word (a TCP probe,
    a client that drops the connection instead of sending an alert) and a handshake that times out:
    asyncio ends those without a TLS error."""

    class CountingSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, ssl.SSLSyscallError):
                raise  # more bytes to come (asyncio retries on these too): not a failure
            except ssl.SSLError as exc:
                on_failure(exc)
                raise

    return CountingSSLObject

"""TLS for the HTTP listener from the same `server.tls` files as the gRPC port: the same
certificate, and with `client_ca_file` the same requirement of a client certificate signed by
that CA. Renewed files (cert-manager rewrites them in place) are picked up at the next
handshake, as the gRPC port does."""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

from gateway.auth import load_tls_files
from gateway.config import Config, ConfigError, TLSConfig

log = logging.getLogger(__name__)


class _Contexts:
    """The current SSLContext, rebuilt when one of the files changes."""

    def __init__(self, tls: TLSConfig, config: Config) -> None:
        self._cert = config.resolve(tls.cert_file)
        self._key = config.resolve(tls.key_file)
        self._ca = config.resolve(tls.client_ca_file) if tls.client_ca_file else None
        self._stamp = self._mtimes()
        self.current = self._build()

    def _paths(self) -> list[Path]:
        return [self._cert, self._key, *([self._ca] if self._ca else [])]

    def _mtimes(self) -> tuple[int, ...]:
        try:
            return tuple(os.stat(path).st_mtime_ns for path in self._paths())
        except OSError:
            return ()

    def _build(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        load_tls_files(context, self._cert, self._key, self._ca)
        if self._ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
        context.sni_callback = self._on_hello
        return context

    def _on_hello(self, sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: object) -> None:
        # Called for every ClientHello: a stat of two or three files is cheap next to the
        # handshake. A half-written pair keeps the previous context until it is whole.
        stamp = self._mtimes()
        if stamp and stamp != self._stamp:
            try:
                fresh = self._build()
            except ConfigError as exc:
                log.warning("TLS files changed but cannot be loaded yet: %s", exc)
                return
            self._stamp, self.current = stamp, fresh
        if sock.context is not self.current:
            sock.context = self.current


def server_context(config: Config) -> ssl.SSLContext | None:
    """The listener's SSLContext, or None for plaintext (no `server.tls`)."""
    if config.server.tls is None:
        return None
    return _Contexts(config.server.tls, config).current

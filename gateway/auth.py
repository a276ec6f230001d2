"""Who is calling: the tenant from an API key or a client certificate, and the TLS credentials.

Keys are stored only as SHA-256 digests. Keys are 256-bit random strings (`celgate keys new`),
so a fast hash is enough: there is nothing to brute-force, unlike a password. A caller learns
only "authenticated or not": every failure raises `Unauthenticated` with the same message, and
no key, digest or certificate field ever reaches a log or an error.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import grpc

from gateway.config import TENANT_PATTERN, Config, ConfigError, TLSConfig
from gateway.errors import Unauthenticated

API_KEY_FAILURE: Final = (
    "authentication failed: send a valid API key as 'authorization: Bearer <key>' metadata"
)
MTLS_FAILURE: Final = (
    "authentication failed: present a client certificate whose subject or SAN is mapped to a"
    " tenant in auth.client_tenants"
)

_BEARER: Final = "bearer "
# The first bytes of a digest index the table; the full digest is then compared in constant
# time. The index is over SHA-256(what the caller sent), so its timing tells a caller nothing
# about any stored key.
_INDEX_BYTES: Final = 4


def hash_key(key: str) -> str:
    """The hex SHA-256 of an API key: what the config and the key file hold."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class _KeyTable:
    by_prefix: dict[bytes, tuple[tuple[bytes, str], ...]]

    @classmethod
    def build(cls, entries: Iterable[tuple[str, str]]) -> _KeyTable:
        grouped: dict[bytes, list[tuple[bytes, str]]] = {}
        for tenant, hex_digest in entries:
            digest = bytes.fromhex(hex_digest)
            grouped.setdefault(digest[:_INDEX_BYTES], []).append((digest, tenant))
        return cls({prefix: tuple(rows) for prefix, rows in grouped.items()})

    def lookup(self, digest: bytes) -> str | None:
        found: str | None = None
        for stored, tenant in self.by_prefix.get(digest[:_INDEX_BYTES], ()):
            # No early exit: every candidate is compared in full.
            if hmac.compare_digest(stored, digest):
                found = tenant
        return found


def parse_key_file(path: Path) -> list[tuple[str, str]]:
    """Read `TENANT SHA256HEX` lines (blank lines and `#` comments allowed).

    Raises ConfigError naming `path:line` and what is expected; the line's content is never
    echoed, because an operator may have pasted a raw key by mistake.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read API key file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: API key file is not UTF-8 text") from None
    tenant_re = re.compile(TENANT_PATTERN)
    entries: list[tuple[str, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        where = f"{path}:{number}"
        if len(fields) != 2:
            raise ConfigError(
                f"{where}: expected 'TENANT SHA256HEX' (two fields separated by a space);"
                " `celgate keys new --tenant NAME` prints such a line"
            )
        tenant, digest = fields[0], fields[1].lower()
        if not tenant_re.match(tenant):
            raise ConfigError(f"{where}: tenant name must be 1-64 letters, digits, '.', '_' or '-'")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ConfigError(
                f"{where}: second field must be the 64-character hex SHA-256 of the key,"
                " not the key itself"
            )
        entries.append((tenant, digest))
    return entries


def _key_entries(config: Config) -> list[tuple[str, str]]:
    entries = [(entry.tenant, entry.sha256) for entry in config.auth.api_keys]
    if config.auth.api_keys_file is not None:
        entries += parse_key_file(config.resolve(config.auth.api_keys_file))
    return entries


def _bearer_key(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    key: str | None = None
    for name, value in metadata:
        if name != "authorization":
            continue
        if key is not None or not isinstance(value, str):
            return None  # two credentials, or a binary one: ambiguous, refuse
        if value[: len(_BEARER)].lower() != _BEARER:
            return None
        key = value[len(_BEARER) :].strip()
    return key or None


class Authenticator:
    """Maps a call's metadata or TLS peer to a tenant. `reload` swaps the key set atomically."""

    def __init__(
        self,
        mode: str,
        default_tenant: str,
        keys: _KeyTable,
        client_tenants: Mapping[str, str],
    ) -> None:
        self._mode = mode
        self._default_tenant = default_tenant
        self._keys = keys
        self._client_tenants = dict(client_tenants)

    @classmethod
    def from_config(cls, config: Config) -> Authenticator:
        """Raises ConfigError if the API key file cannot be read or parsed."""
        keys = _KeyTable.build(_key_entries(config)) if config.auth.mode == "api_key" else None
        return cls(
            config.auth.mode,
            config.auth.tenant,
            keys or _KeyTable({}),
            config.auth.client_tenants,
        )

    @property
    def mode(self) -> str:
        return self._mode

    def reload(self, config: Config) -> None:
        """Take the new config's keys and mappings (a revoked key stops working at once).

        Builds everything before swapping, so a bad key file leaves the old set in place and
        raises ConfigError.
        """
        fresh = Authenticator.from_config(config)
        # Attribute assignment is atomic; a request in flight sees the old or the new set.
        self._mode, self._default_tenant = fresh._mode, fresh._default_tenant
        self._keys, self._client_tenants = fresh._keys, fresh._client_tenants

    def authenticate(
        self,
        metadata: Sequence[tuple[str, str | bytes]],
        auth_context: Mapping[str, Iterable[bytes]],
    ) -> str:
        """The caller's tenant, or Unauthenticated (one message per mode, whatever was wrong)."""
        if self._mode == "api_key":
            key = _bearer_key(metadata)
            if key is not None:
                digest = hashlib.sha256(key.encode("utf-8")).digest()
                tenant = self._keys.lookup(digest)
                if tenant is not None:
                    return tenant
            raise Unauthenticated(API_KEY_FAILURE)
        if self._mode == "mtls":
            tenant = self._certificate_tenant(auth_context)
            if tenant is not None:
                return tenant
            raise Unauthenticated(MTLS_FAILURE)
        return self._default_tenant

    def _certificate_tenant(self, auth_context: Mapping[str, Iterable[bytes]]) -> str | None:
        # gRPC fills these only after the TLS stack verified the chain against client_ca_file.
        # The CN is consulted first, then the SANs in the order the certificate lists them.
        names = [*auth_context.get("x509_common_name", ())]
        names += auth_context.get("x509_subject_alternative_name", ())
        for raw in names:
            tenant = self._client_tenants.get(raw.decode("utf-8", "replace"))
            if tenant is not None:
                return tenant
        return None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read server.tls.{what}: {exc.strerror}") from None


class _CertificateFiles:
    """Re-reads the certificate files when they change (cert-manager renews them in place).

    gRPC asks `fetch` on every new TLS handshake; a stat of three files is cheap next to it.
    """

    def __init__(self, tls: TLSConfig, config: Config) -> None:
        self._paths = [config.resolve(tls.cert_file), config.resolve(tls.key_file)]
        self._ca = config.resolve(tls.client_ca_file) if tls.client_ca_file else None
        self._stamp: tuple[int, ...] = ()
        self._stamp = self._mtimes()
        self.initial = self._load()

    def _mtimes(self) -> tuple[int, ...]:
        paths = [*self._paths, *([self._ca] if self._ca else [])]
        try:
            return tuple(os.stat(path).st_mtime_ns for path in paths)
        except OSError:
            return self._stamp  # mid-rotation (symlink swap): keep serving the last good pair

    def _load(self) -> grpc.ServerCertificateConfiguration:
        cert = _read(self._paths[0], "cert_file")
        key = _read(self._paths[1], "key_file")
        ca = _read(self._ca, "client_ca_file") if self._ca else None
        self._check_pair()
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def _check_pair(self) -> None:
        # gRPC would report a bad pair only at the first handshake, as an opaque failure;
        # the standard library's TLS says at start-up which file is wrong.
        cert, key = self._paths
        load_tls_files(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert, key, self._ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        stamp = self._mtimes()
        if stamp == self._stamp:
            return None
        try:
            fresh = self._load()
        except ConfigError:
            return None  # a half-written file: keep the current pair, retry next handshake
        self._stamp = stamp
        return fresh


def server_credentials(config: Config) -> grpc.ServerCredentials | None:
    """TLS credentials from `server.tls` (None -> plaintext). Raises ConfigError on bad files.

    With `client_ca_file` set, the handshake itself refuses clients without a certificate
    signed by that CA; `Authenticator` then maps the verified certificate to a tenant.
    """
    tls = config.server.tls
    if tls is None:
        return None
    files = _CertificateFiles(tls, config)
    return grpc.dynamic_ssl_server_credentials(
        files.initial,
        files.fetch,
        require_client_authentication=tls.client_ca_file is not None,
    )


def load_tls_files(
    context: ssl.SSLContext, cert: str | Path, key: str | Path, ca: str | Path | None
) -> None:
    """Load the server's certificate, key and (for mTLS) client CA into `context`; a file that
    is not what it should be stops start-up naming it and its config field."""
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{cert}, {key}: server.tls.cert_file and key_file must be a PEM certificate and"
            f" its private key ({exc.__class__.__name__}:"
            f" {getattr(exc, 'reason', None) or exc.strerror or 'unreadable'})"
        ) from None
    if ca is not None:
        try:
            context.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError):
            raise ConfigError(
                f"{ca}: server.tls.client_ca_file must hold PEM CA certificates"
            ) from None

"""API keys and mutual TLS over real TLS on loopback, with certificates made by the test.

The server is the real gateway (`gateway.server`), with its TLS credentials, its service edge
and its Authenticator; the probe is the `Route` dry run, whose context names the tenant the
gateway authenticated. No model is called.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.auth import API_KEY_FAILURE, MTLS_FAILURE, hash_key
from gateway.config import Config, parse_config
from gateway.errors import Unauthenticated
from gateway.server import Gateway, start
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc
from tests.harness import TEST_POLICY

pytestmark = pytest.mark.integration

MODELS = {
    "local": {
        "provider": "ollama",
        "upstream_model": "x",
        "base_url": "http://127.0.0.1:11434",
        "location": "on_prem",
        "clearance": "RESTRICTED",
    }
}

# --- certificates -----------------------------------------------------------------------------


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def issue(
    common_name: str,
    issuer: Issued | None = None,
    *,
    sans: list[x509.GeneralName] | None = None,
    server: bool = False,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, hashes.SHA256()), key)


@dataclass
class PKI:
    ca: Issued
    server: Issued
    known: Issued  # signed by the CA, mapped by its SPIFFE URI SAN
    known_cn: Issued  # signed by the CA, mapped by its common name
    unmapped: Issued  # signed by the CA, but no tenant mapping
    foreign: Issued  # signed by another CA
    dir: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    ca = issue("celgate test CA")
    other_ca = issue("someone else's CA")
    server = issue(
        "celgate",
        ca,
        server=True,
        sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    spiffe = x509.UniformResourceIdentifier("spiffe://cluster/ns/a/sa/app")
    pki = PKI(
        ca=ca,
        server=server,
        known=issue("app", ca, sans=[spiffe]),
        known_cn=issue("billing-svc", ca),
        unmapped=issue("intruder", ca, sans=[x509.DNSName("intruder.local")]),
        foreign=issue("billing-svc", other_ca),
        dir=tmp_path_factory.mktemp("pki"),
    )
    (pki.dir / "ca.crt").write_bytes(ca.cert_pem)
    (pki.dir / "tls.crt").write_bytes(server.cert_pem)
    (pki.dir / "tls.key").write_bytes(server.key_pem)
    return pki


# --- a server that authenticates with the real code -------------------------------------------


def make_config(
    pki: PKI, auth: dict[str, Any], *, client_ca: bool = False, **server: Any
) -> Config:
    tls: dict[str, Any] = {"cert_file": "tls.crt", "key_file": "tls.key"}
    if client_ca:
        tls["client_ca_file"] = "ca.crt"
    data = {
        "server": {"listen": "127.0.0.1:0", "tls": tls, **server},
        "auth": auth,
        "models": MODELS,
        "default_model": "local",
        "policy": {"dir": str(TEST_POLICY), "watch": False},
        "ledger": {"path": "ledger.db"},
    }
    return parse_config(data, source="test.yaml", base_dir=pki.dir)


@dataclass
class Running:
    gateway: Gateway
    calls: list[str]  # every authentication the gateway made: a tenant or "refused"

    @property
    def port(self) -> int:
        return self.gateway.port


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Config], Any]]:
    gateways: list[Gateway] = []

    async def start_gateway(config: Config) -> Running:
        gateway = await start(config)
        gateways.append(gateway)
        calls: list[str] = []
        authenticate = gateway.authenticator.authenticate

        def recording(
            metadata: Sequence[tuple[str, str | bytes]], context: Mapping[str, Iterable[bytes]]
        ) -> str:
            try:
                tenant = authenticate(metadata, context)
            except Unauthenticated:
                calls.append("refused")
                raise
            calls.append(tenant)
            return tenant

        gateway.authenticator.authenticate = recording  # type: ignore[method-assign]
        return Running(gateway, calls)

    yield start_gateway
    for gateway in gateways:
        await gateway.stop(grace=0)


async def call(
    pki: PKI,
    port: int,
    *,
    key: str | None = None,
    client: Issued | None = None,
    ca: bytes | None = None,
) -> str:
    """The tenant the gateway authenticated for a Route call with these credentials."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca or pki.ca.cert_pem,
        private_key=client.key_pem if client else None,
        certificate_chain=client.cert_pem if client else None,
    )
    metadata = (("authorization", f"Bearer {key}"),) if key is not None else None
    request = pb.RouteRequest(messages=[pb.Message(role=pb.ROLE_USER, content="who am I?")])
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        reply = await stub.Route(request, metadata=metadata, timeout=10)
    return str(reply.context.tenant)


async def status_of(pki: PKI, port: int, **kwargs: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(pki, port, **kwargs)
    return caught.value.code(), caught.value.details() or ""


# --- API keys ---------------------------------------------------------------------------------

KEY_A = "cg_" + "A" * 43
KEY_B = "cg_" + "B" * 43


def keys_auth(pki: PKI, *keys: tuple[str, str]) -> dict[str, Any]:
    lines = [f"{tenant} {hash_key(k)}" for tenant, k in keys]
    (pki.dir / "api-keys").write_text("\n".join(lines) + "\n")
    return {"mode": "api_key", "api_keys_file": "api-keys"}


async def test_api_keys_over_tls(pki: PKI, serve: Any) -> None:
    config = make_config(pki, keys_auth(pki, ("team-a", KEY_A), ("team-b", KEY_B)))
    server = await serve(config)

    assert await call(pki, server.port, key=KEY_A) == "team-a"
    assert await call(pki, server.port, key=KEY_B) == "team-b"

    wrong = await status_of(pki, server.port, key="cg_" + "Z" * 43)
    missing = await status_of(pki, server.port)
    empty = await status_of(pki, server.port, key="")
    assert wrong == missing == empty == (grpc.StatusCode.UNAUTHENTICATED, API_KEY_FAILURE)
    assert "cg_" not in API_KEY_FAILURE


async def test_revoked_key_stops_working_after_reload(pki: PKI, serve: Any) -> None:
    server = await serve(make_config(pki, keys_auth(pki, ("team-a", KEY_A), ("team-b", KEY_B))))
    assert await call(pki, server.port, key=KEY_A) == "team-a"

    # The Secret is updated without team-a's key; the gateway reloads its config.
    server.gateway.reload_access(make_config(pki, keys_auth(pki, ("team-b", KEY_B))))
    assert await status_of(pki, server.port, key=KEY_A) == (
        grpc.StatusCode.UNAUTHENTICATED,
        API_KEY_FAILURE,
    )
    assert await call(pki, server.port, key=KEY_B) == "team-b"


async def test_client_that_does_not_trust_the_server_never_sends_its_key(
    pki: PKI, serve: Any
) -> None:
    server = await serve(make_config(pki, keys_auth(pki, ("team-a", KEY_A))))
    code, _ = await status_of(pki, server.port, key=KEY_A, ca=issue("rogue CA").cert_pem)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert server.calls == []


# --- mutual TLS -------------------------------------------------------------------------------


def mtls_auth() -> dict[str, Any]:
    return {
        "mode": "mtls",
        "client_tenants": {"spiffe://cluster/ns/a/sa/app": "team-a", "billing-svc": "billing"},
    }


async def test_mtls_known_certificates_map_to_tenants(pki: PKI, serve: Any) -> None:
    server = await serve(make_config(pki, mtls_auth(), client_ca=True))
    assert await call(pki, server.port, client=pki.known) == "team-a"
    assert await call(pki, server.port, client=pki.known_cn) == "billing"


async def test_mtls_unmapped_certificate_is_unauthenticated(pki: PKI, serve: Any) -> None:
    server = await serve(make_config(pki, mtls_auth(), client_ca=True))
    assert await status_of(pki, server.port, client=pki.unmapped, key=KEY_A) == (
        grpc.StatusCode.UNAUTHENTICATED,
        MTLS_FAILURE,
    )
    assert server.calls == ["refused"]


async def test_mtls_no_certificate_or_foreign_ca_fails_the_handshake(pki: PKI, serve: Any) -> None:
    # The TLS stack refuses these before any handler runs: the RPC never reaches celgate.
    server = await serve(make_config(pki, mtls_auth(), client_ca=True))
    for client in (None, pki.foreign):
        code, _ = await status_of(pki, server.port, client=client)
        assert code == grpc.StatusCode.UNAVAILABLE
    assert server.calls == []


async def test_renewed_server_certificate_is_served_without_restart(pki: PKI, serve: Any) -> None:
    # cert-manager renews the Secret in place: new connections get the new certificate.
    renewal_dir = pki.dir / "renewal"
    renewal_dir.mkdir()
    for name in ("tls.crt", "tls.key", "ca.crt"):
        (renewal_dir / name).write_bytes((pki.dir / name).read_bytes())
    data = {
        "server": {
            "listen": "127.0.0.1:0",
            "tls": {"cert_file": "tls.crt", "key_file": "tls.key", "client_ca_file": "ca.crt"},
        },
        "auth": mtls_auth(),
        "models": MODELS,
        "default_model": "local",
        "policy": {"dir": str(TEST_POLICY), "watch": False},
        "ledger": {"path": "ledger.db"},
    }
    server = await serve(parse_config(data, source="t.yaml", base_dir=renewal_dir))
    assert await call(pki, server.port, client=pki.known) == "team-a"

    new_ca = issue("renewed CA")
    new_server = issue(
        "celgate", new_ca, server=True, sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    (renewal_dir / "tls.crt").write_bytes(new_server.cert_pem)
    (renewal_dir / "tls.key").write_bytes(new_server.key_pem)
    stamp = (renewal_dir / "tls.crt").stat().st_mtime_ns + 10_000_000
    os.utime(renewal_dir / "tls.crt", ns=(stamp, stamp))

    code, _ = await status_of(pki, server.port, client=pki.known)  # trusts the old CA only
    assert code == grpc.StatusCode.UNAVAILABLE
    assert await call(pki, server.port, client=pki.known, ca=new_ca.cert_pem) == "team-a"


async def test_plaintext_health_port_serves_health_only(pki: PKI, serve: Any) -> None:
    """Kubelet's gRPC probes speak plaintext: `server.health_listen` answers them while the
    gateway itself stays behind TLS."""
    config = make_config(pki, keys_auth(pki, ("team-a", KEY_A)), health_listen="127.0.0.1:0")
    server = await serve(config)
    health_port = server.gateway.health_port
    assert health_port and health_port != server.port
    async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await gateway_pb2_grpc.GatewayServiceStub(channel).Route(
                pb.RouteRequest(messages=[pb.Message(role=pb.ROLE_USER, content="x")]),
                metadata=(("authorization", f"Bearer {KEY_A}"),),
            )
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert server.calls == []
    assert await call(pki, server.port, key=KEY_A) == "team-a"


async def test_key_file_change_revokes_without_a_restart(pki: PKI, serve: Any) -> None:
    """A Kubernetes Secret update rewrites the mounted key file: the gateway watches it."""
    server = await serve(make_config(pki, keys_auth(pki, ("team-a", KEY_A), ("team-b", KEY_B))))
    assert await call(pki, server.port, key=KEY_B) == "team-b"
    keys_auth(pki, ("team-a", KEY_A))  # rewrites the file without team-b's key
    for _ in range(100):
        try:
            await call(pki, server.port, key=KEY_B)
        except grpc.aio.AioRpcError as exc:
            assert (exc.code(), exc.details()) == (grpc.StatusCode.UNAUTHENTICATED, API_KEY_FAILURE)
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the removed key still works after the key file changed")
    assert await call(pki, server.port, key=KEY_A) == "team-a"

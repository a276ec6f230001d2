"""Authentication: key hashing, constant-time lookup, key files, the loopback rule, keys new."""

from __future__ import annotations

import hashlib
import hmac
import io
import re
from pathlib import Path
from typing import Any

import pytest

from gateway import auth
from gateway.auth import (
    API_KEY_FAILURE,
    MTLS_FAILURE,
    Authenticator,
    hash_key,
    parse_key_file,
    server_credentials,
)
from gateway.config import Config, ConfigError, parse_config
from gateway.errors import Unauthenticated
from gateway.keys import run_keys_new

MODELS = {
    "llama-local": {
        "provider": "ollama",
        "upstream_model": "llama3.1:8b",
        "base_url": "http://127.0.0.1:11434",
        "location": "on_prem",
        "clearance": "RESTRICTED",
    }
}


def make_config(tmp_path: Path | None = None, **sections: Any) -> Config:
    data = {"models": MODELS, "default_model": "llama-local", **sections}
    return parse_config(data, source="test.yaml", base_dir=tmp_path or Path("."))


def api_key_config(*keys: tuple[str, str], **auth_extra: Any) -> Config:
    entries = [{"tenant": tenant, "sha256": hash_key(key)} for tenant, key in keys]
    return make_config(auth={"mode": "api_key", "api_keys": entries, **auth_extra})


def bearer(key: str) -> list[tuple[str, str | bytes]]:
    return [("user-agent", "grpc-python"), ("authorization", f"Bearer {key}")]


def refused(authenticator: Authenticator, metadata: Any, context: Any = None) -> str:
    with pytest.raises(Unauthenticated) as caught:
        authenticator.authenticate(metadata, context or {})
    return caught.value.message


# --- hashing and keys new ---------------------------------------------------------------------


def test_hash_key_is_hex_sha256_of_the_utf8_key() -> None:
    assert hash_key("cg_abc") == hashlib.sha256(b"cg_abc").hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", hash_key("ключ"))


def test_keys_new_prints_a_key_whose_config_line_authenticates_it(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run_keys_new("team-a", out) == 0
    text = out.getvalue()
    key = re.search(r"^  (cg_[A-Za-z0-9_-]{43})$", text, re.M)
    assert key is not None
    file_line = text.strip().splitlines()[-1]
    assert file_line == f"team-a {hash_key(key.group(1))}"
    assert key.group(1) not in file_line

    keyfile = tmp_path / "api-keys"
    keyfile.write_text(file_line + "\n")
    config = make_config(tmp_path, auth={"mode": "api_key", "api_keys_file": "api-keys"})
    assert Authenticator.from_config(config).authenticate(bearer(key.group(1)), {}) == "team-a"


def test_keys_new_gives_a_different_key_each_time() -> None:
    first, second = io.StringIO(), io.StringIO()
    run_keys_new("t", first)
    run_keys_new("t", second)
    assert first.getvalue() != second.getvalue()


def test_keys_new_rejects_a_bad_tenant_name() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run_keys_new("team a/../x", out, err) == 2
    assert out.getvalue() == ""
    assert "invalid --tenant" in err.getvalue()


# --- API keys ---------------------------------------------------------------------------------


def test_valid_key_maps_to_its_tenant() -> None:
    authenticator = Authenticator.from_config(api_key_config(("a", "cg_A"), ("b", "cg_B")))
    assert authenticator.authenticate(bearer("cg_A"), {}) == "a"
    assert authenticator.authenticate(bearer("cg_B"), {}) == "b"
    assert authenticator.authenticate([("authorization", "bearer  cg_B ")], {}) == "b"


@pytest.mark.parametrize(
    "metadata",
    [
        [],
        bearer("cg_wrong"),
        bearer("cg_A" + "x"),
        bearer(""),
        [("authorization", "Basic cg_A")],
        [("authorization", "cg_A")],
        [("authorization", b"Bearer cg_A")],
        [("authorization", "Bearer cg_A"), ("authorization", "Bearer cg_A")],
        [("x-api-key", "cg_A")],
    ],
    ids=["none", "wrong", "longer", "empty", "basic", "no-scheme", "binary", "twice", "other"],
)
def test_every_failure_gives_the_same_message(metadata: Any) -> None:
    authenticator = Authenticator.from_config(api_key_config(("a", "cg_A")))
    message = refused(authenticator, metadata)
    assert message == API_KEY_FAILURE
    assert "cg_" not in message


def test_lookup_compares_every_candidate_digest_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two stored digests sharing the index prefix: both must be compared in full with
    # hmac.compare_digest even when the first one matches (no early exit).
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    target = hashlib.sha256(b"cg_A").digest()
    twin = target[:4] + bytes(28)
    table = auth._KeyTable.build([("a", target.hex()), ("z", twin.hex())])
    assert table.lookup(target) == "a"
    assert len(calls) == 2
    assert all(len(a) == len(b) == 32 for a, b in calls)


def test_reload_revokes_a_removed_key() -> None:
    authenticator = Authenticator.from_config(api_key_config(("a", "cg_A"), ("b", "cg_B")))
    authenticator.reload(api_key_config(("b", "cg_B")))
    assert refused(authenticator, bearer("cg_A")) == API_KEY_FAILURE
    assert authenticator.authenticate(bearer("cg_B"), {}) == "b"


def test_reload_with_a_broken_key_file_keeps_the_old_keys(tmp_path: Path) -> None:
    authenticator = Authenticator.from_config(api_key_config(("a", "cg_A")))
    (tmp_path / "keys").write_text("a not-a-digest\n")
    broken = make_config(tmp_path, auth={"mode": "api_key", "api_keys_file": "keys"})
    with pytest.raises(ConfigError):
        authenticator.reload(broken)
    assert authenticator.authenticate(bearer("cg_A"), {}) == "a"


def test_keys_from_config_and_file_are_merged(tmp_path: Path) -> None:
    (tmp_path / "keys").write_text(f"b {hash_key('cg_B')}\n")
    config = make_config(
        tmp_path,
        auth={
            "mode": "api_key",
            "api_keys": [{"tenant": "a", "sha256": hash_key("cg_A").upper()}],
            "api_keys_file": "keys",
        },
    )
    authenticator = Authenticator.from_config(config)
    assert authenticator.authenticate(bearer("cg_A"), {}) == "a"
    assert authenticator.authenticate(bearer("cg_B"), {}) == "b"


# --- key file parsing -------------------------------------------------------------------------


def test_key_file_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    digest = hash_key("cg_A")
    path.write_text(f"# rotated 2025-01\n\n  team-a   {digest.upper()}  \n")
    assert parse_key_file(path) == [("team-a", digest)]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("team-a\n", "expected 'TENANT SHA256HEX'"),
        ("team-a abc def\n", "expected 'TENANT SHA256HEX'"),
        ("team-a cg_secretvalue123\n", "not the key itself"),
        ("team/a " + "0" * 64 + "\n", "tenant name must be"),
    ],
)
def test_key_file_errors_name_file_and_line(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "keys"
    path.write_text("# header\n" + content)
    with pytest.raises(ConfigError) as caught:
        parse_key_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:2: ")
    assert expected in message
    assert "secretvalue" not in message


def test_missing_key_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read API key file"):
        parse_key_file(tmp_path / "absent")


# --- mTLS and mode none -----------------------------------------------------------------------


def mtls_config(tmp_path: Path) -> Config:
    return make_config(
        tmp_path,
        server={"tls": {"cert_file": "s.crt", "key_file": "s.key", "client_ca_file": "ca.crt"}},
        auth={
            "mode": "mtls",
            "client_tenants": {"billing-svc": "billing", "spiffe://c/ns/a/sa/app": "team-a"},
        },
    )


def test_mtls_maps_common_name_or_san(tmp_path: Path) -> None:
    authenticator = Authenticator.from_config(mtls_config(tmp_path))
    by_cn = {"x509_common_name": [b"billing-svc"], "x509_subject_alternative_name": [b"x"]}
    by_san = {
        "x509_common_name": [b"app"],
        "x509_subject_alternative_name": [b"app.local", b"spiffe://c/ns/a/sa/app"],
    }
    assert authenticator.authenticate([], by_cn) == "billing"
    assert authenticator.authenticate([], by_san) == "team-a"


def test_mtls_unknown_or_missing_certificate_is_refused(tmp_path: Path) -> None:
    authenticator = Authenticator.from_config(mtls_config(tmp_path))
    unknown = {"x509_common_name": [b"intruder"], "x509_subject_alternative_name": [b"x"]}
    assert refused(authenticator, [], unknown) == MTLS_FAILURE
    assert refused(authenticator, bearer("cg_A"), {"transport_security_type": [b"ssl"]}) == (
        MTLS_FAILURE
    )


def test_mode_none_gives_the_configured_tenant() -> None:
    config = make_config(auth={"mode": "none", "tenant": "local"})
    assert Authenticator.from_config(config).authenticate([], {}) == "local"


# --- config validation ------------------------------------------------------------------------


@pytest.mark.parametrize("listen", ["127.0.0.1:50051", "localhost:1", "[::1]:50051"])
def test_mode_none_is_fine_on_loopback(listen: str) -> None:
    assert make_config(server={"listen": listen}).auth.mode == "none"


@pytest.mark.parametrize("listen", ["0.0.0.0:50051", "10.1.2.3:50051", "[::]:50051", "gw:1"])
def test_mode_none_refuses_a_non_loopback_listen(listen: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(server={"listen": listen})
    message = str(caught.value)
    assert message.startswith("test.yaml: invalid configuration")
    assert "not a loopback address" in message
    assert "auth.mode" in message


def test_api_key_mode_on_any_address_is_accepted() -> None:
    config = make_config(
        server={"listen": "0.0.0.0:50051"},
        auth={"mode": "api_key", "api_keys": [{"tenant": "a", "sha256": "0" * 64}]},
    )
    assert config.auth.mode == "api_key"


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"auth": {"mode": "api_key"}}, "needs auth.api_keys or auth.api_keys_file"),
        ({"auth": {"mode": "mtls", "client_tenants": {"a": "a"}}}, "needs server.tls"),
        (
            {
                "server": {"tls": {"cert_file": "c", "key_file": "k"}},
                "auth": {"mode": "mtls", "client_tenants": {"a": "a"}},
            },
            "client_ca_file",
        ),
        ({"auth": {"mode": "api_key", "api_keys": [{"tenant": "a", "sha256": "abc"}]}}, "sha256"),
        ({"auth": {"mode": "oauth"}}, "auth.mode"),
        ({"tenants": {"a": {"allowed_models": ["gpt-9"]}}}, "unknown model 'gpt-9'"),
        ({"tenants": {"a": {"rate_limit": {"requests_per_minute": 0}}}}, "requests_per_minute"),
        ({"tenants": {"a": {"max_declared_classification": "SECRET"}}}, "unknown classification"),
    ],
)
def test_access_config_errors_say_what_is_wrong(sections: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        make_config(**sections)


def test_tenant_settings_default_when_not_listed() -> None:
    config = make_config(
        tenants={
            "a": {"allowed_models": ["llama-local"], "max_declared_classification": "internal"}
        }
    )
    assert config.tenant_config("a").allowed_models == ["llama-local"]
    assert config.tenant_config("a").max_declared_classification is not None
    assert config.tenant_config("b").allowed_models is None


# --- server credentials -----------------------------------------------------------------------


def test_no_tls_section_means_plaintext() -> None:
    assert server_credentials(make_config()) is None


def test_unreadable_or_invalid_certificate_files_are_config_errors(tmp_path: Path) -> None:
    tls = {"tls": {"cert_file": "s.crt", "key_file": "s.key"}}
    with pytest.raises(ConfigError, match=r"s\.crt: cannot read server\.tls\.cert_file"):
        server_credentials(make_config(tmp_path, server=tls))
    (tmp_path / "s.crt").write_text("not a certificate")
    (tmp_path / "s.key").write_text("not a key")
    with pytest.raises(ConfigError, match="must be a PEM certificate and its private key"):
        server_credentials(make_config(tmp_path, server=tls))

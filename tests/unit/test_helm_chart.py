"""The Helm chart, rendered by the real Helm v4 SDK and checked against Kubernetes schemas.

Each profile is rendered, strictly linted, validated manifest by manifest with
kubernetes-validate, and its celgate.yaml is loaded by the gateway's own config validation, so
the chart and the gateway cannot drift apart. Bad values must fail with a message that says what
to change.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

from gateway.config import Config, parse_config

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "celgate"
KUBE_VERSION = "1.33"
RELEASE = "gw"
NAMESPACE = "llm"
MIRROR = "registry.airgap.internal:5000"
DIGEST = "sha256:" + "ab" * 32
OLLAMA_DIGEST = "sha256:" + "cd" * 32
MODELS_DIGEST = "sha256:" + "ef" * 32

# Values that look like credentials; none may appear in any rendered manifest.
SENTINEL_KEY = "sk-proj-SENTINEL0123456789abcdefSENTINEL"
SENTINEL_PASSWORD = "hunter2-SENTINEL-pw"


def _airgapped_values() -> dict[str, Any]:
    values = yaml.safe_load((CHART / "values-airgapped.yaml").read_text(encoding="utf-8"))
    values["global"]["imageRegistry"] = MIRROR
    values["global"]["imagePullSecrets"] = ["mirror-pull"]
    values["image"]["digest"] = DIGEST
    values["ollama"]["image"]["digest"] = OLLAMA_DIGEST
    values["ollama"]["modelsImage"]["digest"] = MODELS_DIGEST
    values["telemetry"] = {"otlp": {"endpoint": "http://otel-collector.observability.svc:4317"}}
    values["networkPolicy"]["egress"]["otelCollector"] = {
        "namespaceSelector": {"kubernetes.io/metadata.name": "observability"},
        "podSelector": {"app.kubernetes.io/name": "otel-collector"},
    }
    return values


CLOUD_MODELS = {
    "gpt-5.5": {
        "provider": "openai",
        "upstream_model": "gpt-5.5",
        "base_url": "https://api.openai.com/v1",
        "api_key_env": "OPENAI_API_KEY",
        "location": "cloud",
        "clearance": "INTERNAL",
    },
    "claude-opus": {
        "provider": "openai",
        "upstream_model": "claude-opus-4-7",
        "base_url": "https://api.anthropic.com/v1",
        "api_key_env": "ANTHROPIC_API_KEY",
        "location": "cloud",
        "clearance": "INTERNAL",
    },
}

PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "airgapped": _airgapped_values(),
    "cloud": {
        "config": {"models": CLOUD_MODELS},
        "providerKeys": {
            "existingSecret": "llm-provider-keys",
            "keys": {"ANTHROPIC_API_KEY": "anthropic"},
        },
        "networkPolicy": {"egress": {"cloud": {"cidrs": ["203.0.113.0/24", "198.51.100.0/24"]}}},
    },
    "redis-replicas": {
        "replicaCount": 3,
        "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12},
        "ledger": {"backend": "redis", "redis": {"url": "redis://redis-master.redis.svc:6379/0"}},
        "networkPolicy": {
            "egress": {
                "redis": {
                    "namespaceSelector": {"kubernetes.io/metadata.name": "redis"},
                    "podSelector": {"app.kubernetes.io/name": "redis"},
                }
            },
            "ingress": {"namespaceSelector": {"celgate.io/client": "true"}},
        },
        # As `--set-file 'policies.files.policy\\.yaml=policies/routing/policy.yaml'` gives them.
        "policies": {
            "files": {
                name: (ROOT / "policies" / "routing" / name).read_text(encoding="utf-8")
                for name in ("policy.yaml", "tests.yaml")
            }
        },
    },
    "mtls": {
        "auth": {"mode": "mtls", "clientTenants": {"spiffe://corp/ns/billing/sa/api": "billing"}},
        "tls": {"existingSecret": "celgate-tls"},
        "ollama": {"enabled": False},
        "config": {
            "models": {
                "llama-local": {"base_url": "http://vllm.models.svc:8000/v1", "provider": "openai"}
            }
        },
        "networkPolicy": {"egress": {"ollama": {"enabled": True, "podSelector": {"app": "vllm"}}}},
    },
    "observability": {
        "config": {"telemetry": {"labels": {"promote": ["project", "team"], "max_values": 20}}},
        "telemetry": {
            "prometheus": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}},
            "dashboard": {"enabled": True, "annotations": {"grafana_folder": "LLM"}},
        },
        "networkPolicy": {
            "ingress": {
                "metrics": {
                    "namespaceSelector": {"kubernetes.io/metadata.name": "monitoring"},
                    "podSelector": {"app.kubernetes.io/name": "prometheus"},
                }
            }
        },
    },
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@functools.cache
def _chart() -> helm_python.Chart:
    return helm_python.Chart.load(CHART)


def render(values: dict[str, Any]) -> dict[str, str]:
    return _chart().render(values, name=RELEASE, namespace=NAMESPACE)


@functools.cache
def _rendered_profile(profile: str) -> dict[str, str]:
    return render(PROFILES[profile])


def documents(manifests: dict[str, str]) -> list[dict[str, Any]]:
    docs = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def profile_docs(profile: str) -> list[dict[str, Any]]:
    return documents(_rendered_profile(profile))


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    specs = [
        (d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in by_kind(docs, "Deployment")
    ]
    specs += [(d["metadata"]["name"], d["spec"]) for d in by_kind(docs, "Pod")]
    return specs


def gateway(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment", f"{RELEASE}-celgate")


def gateway_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = gateway(docs)["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "gateway")


def celgate_yaml(docs: list[dict[str, Any]]) -> dict[str, Any]:
    config_map = one(docs, "ConfigMap", f"{RELEASE}-celgate-config")
    data: dict[str, Any] = yaml.safe_load(config_map["data"]["celgate.yaml"])
    return data


def render_error(values: dict[str, Any]) -> str:
    with pytest.raises((helm_python.HelmRenderError, helm_python.HelmValuesError)) as info:
        render(values)
    return " ".join(str(info.value).split())


# --- every profile ---------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_lints_strictly(profile: str) -> None:
    result = helm_python.lint(CHART, PROFILES[profile], strict=True, namespace=NAMESPACE)
    assert result["errors"] == []
    # Severity 1 is INFO (the chart has no icon); warnings and errors are not allowed.
    assert [m for m in result["messages"] if m["severity"] > 1] == []


# The fields of prometheus-operator's ServiceMonitor (monitoring.coreos.com/v1) the chart
# uses, with the types and duration pattern of its CRD; kubernetes-validate knows no CRDs.
_DURATION = (
    "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        },
                        "matchExpressions": {"type": "array"},
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": {"type": "string", "pattern": _DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": _DURATION},
                        },
                    },
                },
            },
        },
    },
}


def validate_manifest(doc: dict[str, Any], kube_version: str = KUBE_VERSION) -> None:
    if doc["apiVersion"].startswith("monitoring.coreos.com/"):
        jsonschema.validate(doc, SERVICE_MONITOR_SCHEMA)
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]},
            kube_version,
            strict=True,
        )
    else:
        kubernetes_validate.validate(doc, kube_version, strict=True)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_manifest_validates_against_kubernetes(profile: str) -> None:
    docs = profile_docs(profile)
    assert {"Deployment", "Service", "ConfigMap", "NetworkPolicy"} <= {d["kind"] for d in docs}
    for doc in docs:
        validate_manifest(doc)


@pytest.mark.parametrize("profile", PROFILES)
def test_rendered_config_is_accepted_by_the_gateway(profile: str) -> None:
    data = celgate_yaml(profile_docs(profile))
    config = parse_config(data, source=f"{profile}/celgate.yaml")
    assert isinstance(config, Config)
    assert config.server.listen == "0.0.0.0:50051"
    assert config.auth.mode in ("api_key", "mtls")
    assert config.airgapped is (profile == "airgapped")


@pytest.mark.parametrize("profile", PROFILES)
def test_pods_are_locked_down(profile: str) -> None:
    docs = profile_docs(profile)
    specs = pod_specs(docs)
    assert specs
    for name, spec in specs:
        assert spec["automountServiceAccountToken"] is False, name
        pod_ctx = spec.get("securityContext", {})
        assert pod_ctx.get("runAsNonRoot") is True, name
        assert pod_ctx.get("runAsUser", 0) != 0, name
        for container in spec["containers"] + spec.get("initContainers", []):
            ctx = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert ctx["runAsNonRoot"] is True, where
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in ctx["capabilities"], where
            seccomp = ctx.get("seccompProfile") or pod_ctx.get("seccompProfile")
            assert seccomp == {"type": "RuntimeDefault"}, where
            assert "resources" in container, where


@pytest.mark.parametrize("profile", PROFILES)
def test_no_secret_objects_and_keys_only_by_reference(profile: str) -> None:
    docs = profile_docs(profile)
    assert by_kind(docs, "Secret") == []
    config = celgate_yaml(docs)
    key_envs = {m["api_key_env"] for m in config["models"].values() if m.get("api_key_env")}
    env = {e["name"]: e for e in gateway_container(docs)["env"]}
    for name in key_envs:
        assert "value" not in env[name]
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "llm-provider-keys"


def test_probes_use_native_grpc_health() -> None:
    container = gateway_container(profile_docs("default"))
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"] == {"port": 50051}, probe


def test_tls_gateway_is_probed_on_its_plaintext_health_port() -> None:
    # Kubelet's gRPC probes cannot speak TLS: they use the health-only port instead.
    container = gateway_container(profile_docs("mtls"))
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"] == {"port": 8086}, probe
    assert {"name": "health", "containerPort": 8086, "protocol": "TCP"} in container["ports"]
    assert celgate_yaml(profile_docs("mtls"))["server"]["health_listen"] == "0.0.0.0:8086"
    assert "health_listen" not in celgate_yaml(profile_docs("default"))["server"]
    config = celgate_yaml(profile_docs("mtls"))
    assert config["server"]["tls"]["client_ca_file"] == "/etc/celgate/tls/ca.crt"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/etc/celgate/tls" in mounts


def test_drain_fits_in_the_termination_grace_period() -> None:
    docs = profile_docs("default")
    spec = gateway(docs)["spec"]["template"]["spec"]
    sleep = gateway_container(docs)["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = celgate_yaml(docs)["server"]["grace_period_s"]
    assert spec["terminationGracePeriodSeconds"] > sleep + drain


def test_service_speaks_grpc() -> None:
    service = one(profile_docs("default"), "Service", f"{RELEASE}-celgate")
    assert service["spec"]["ports"][0] == {
        "name": "grpc",
        "port": 50051,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": "grpc",
    }


def test_helm_test_hook_checks_health_through_the_service() -> None:
    pods = by_kind(profile_docs("default"), "Pod")
    assert len(pods) == 1
    pod = pods[0]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    command = pod["spec"]["containers"][0]["command"]
    assert "HealthStub" in command[2]
    assert command[3] == f"{RELEASE}-celgate.{NAMESPACE}.svc:50051"


# --- network policy --------------------------------------------------------------------------


def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(k) == v for k, v in wanted.items())


def test_airgapped_egress_is_default_deny_with_nothing_outside_the_cluster() -> None:
    docs = profile_docs("airgapped")
    policies = by_kind(docs, "NetworkPolicy")
    deployments = by_kind(docs, "Deployment")
    assert len(deployments) == 2  # the gateway and Ollama
    for deployment in deployments:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [p for p in policies if _selects(p, labels)]
        assert covering, f"no NetworkPolicy selects {labels}"
        assert all("Egress" in p["spec"]["policyTypes"] for p in covering)
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            assert rule["to"], "an egress rule without `to` allows every address"
            for peer in rule["to"]:
                assert "ipBlock" not in peer, f"{policy['metadata']['name']} allows {peer}"
                assert set(peer) <= {"podSelector", "namespaceSelector"}
    ollama_policy = one(docs, "NetworkPolicy", f"{RELEASE}-celgate-ollama")
    assert ollama_policy["spec"]["egress"] == []


def test_airgapped_images_come_from_the_mirror_with_pull_secrets() -> None:
    docs = profile_docs("airgapped")
    images = set()
    for name, spec in pod_specs(docs):
        assert spec["imagePullSecrets"] == [{"name": "mirror-pull"}], name
        for container in spec["containers"] + spec.get("initContainers", []):
            assert container["image"].startswith(MIRROR + "/"), container["image"]
            images.add(container["image"])
    assert gateway_container(docs)["image"] == f"{MIRROR}/celgate/celgate@{DIGEST}"
    # Every image the air-gapped release runs is pinned by digest, tags play no part.
    assert images == {
        f"{MIRROR}/celgate/celgate@{DIGEST}",
        f"{MIRROR}/ollama/ollama@{OLLAMA_DIGEST}",
        f"{MIRROR}/celgate/ollama-models@{MODELS_DIGEST}",
    }


def test_airgapped_profile_requires_every_image_pinned_by_digest() -> None:
    profile = yaml.safe_load((CHART / "values-airgapped.yaml").read_text(encoding="utf-8"))
    assert profile["global"]["requireDigests"] is True
    unpinned = _merge(
        PROFILES["airgapped"],
        {"ollama": {"image": {"digest": ""}, "modelsImage": {"digest": ""}}},
    )
    message = render_error(unpinned)
    assert (
        "global.requireDigests is true but ollama.image.digest, ollama.modelsImage.digest"
        " is empty" in message
    )
    assert "skopeo inspect" in message
    gateway_unpinned = _merge(PROFILES["airgapped"], {"image": {"digest": ""}})
    assert "but image.digest is empty" in render_error(gateway_unpinned)
    # Outside the profile a tag is still accepted, and a digest still wins over it.
    docs = documents(render({"ollama": {"image": {"digest": OLLAMA_DIGEST}}}))
    ollama = one(docs, "Deployment", f"{RELEASE}-celgate-ollama")
    image = ollama["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"docker.io/ollama/ollama@{OLLAMA_DIGEST}"


def test_default_profile_allows_only_dns_and_ollama() -> None:
    policy = one(profile_docs("default"), "NetworkPolicy", f"{RELEASE}-celgate")
    ports = sorted((p["port"], p["protocol"]) for r in policy["spec"]["egress"] for p in r["ports"])
    assert ports == [(53, "TCP"), (53, "UDP"), (11434, "TCP")]
    assert policy["spec"]["ingress"][0]["from"] == [{"podSelector": {}}]


def test_cloud_egress_only_to_the_listed_cidrs() -> None:
    policy = one(profile_docs("cloud"), "NetworkPolicy", f"{RELEASE}-celgate")
    blocks = [p["ipBlock"] for r in policy["spec"]["egress"] for p in r["to"] if "ipBlock" in p]
    assert blocks == [{"cidr": "203.0.113.0/24"}, {"cidr": "198.51.100.0/24"}]
    cloud_rules = [r for r in policy["spec"]["egress"] if any("ipBlock" in p for p in r["to"])]
    assert len(cloud_rules) == 1
    assert cloud_rules[0]["ports"] == [{"port": 443, "protocol": "TCP"}]
    assert all(set(p) == {"ipBlock"} for p in cloud_rules[0]["to"])


def test_redis_profile_reaches_redis_and_scales() -> None:
    docs = profile_docs("redis-replicas")
    policy = one(docs, "NetworkPolicy", f"{RELEASE}-celgate")
    redis_rules = [r for r in policy["spec"]["egress"] if r["ports"][0]["port"] == 6379]
    assert redis_rules[0]["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "redis"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "redis"}},
        }
    ]
    deployment = gateway(docs)
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert len(deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]) == 2
    assert one(docs, "HorizontalPodAutoscaler", f"{RELEASE}-celgate")["spec"]["maxReplicas"] == 12
    assert one(docs, "PodDisruptionBudget", f"{RELEASE}-celgate")
    assert by_kind(docs, "PersistentVolumeClaim") == [
        d for d in by_kind(docs, "PersistentVolumeClaim") if "ollama" in d["metadata"]["name"]
    ]


# --- config and policies ---------------------------------------------------------------------


def test_policies_are_mounted_as_a_folder_for_hot_reload() -> None:
    docs = profile_docs("redis-replicas")
    config_map = one(docs, "ConfigMap", f"{RELEASE}-celgate-policies")
    assert config_map["data"] == PROFILES["redis-replicas"]["policies"]["files"]
    mount = next(m for m in gateway_container(docs)["volumeMounts"] if m["name"] == "policies")
    assert "subPath" not in mount
    assert celgate_yaml(docs)["policy"] == {"dir": mount["mountPath"], "watch": True}


def test_default_uses_the_policy_bundled_in_the_image() -> None:
    docs = profile_docs("default")
    assert celgate_yaml(docs)["policy"]["dir"] == "/app/policies/routing"
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^COPY policies /app/policies$", dockerfile, re.M)


def test_config_change_rolls_pods_but_policy_change_does_not() -> None:
    def checksum(values: dict[str, Any]) -> str:
        annotations = gateway(documents(render(values)))["spec"]["template"]["metadata"]
        return str(annotations["annotations"]["checksum/config"])

    base = checksum({})
    assert checksum({"config": {"server": {"grace_period_s": 30}}}) != base
    policy = {"policies": {"files": {"policy.yaml": "name: other\n"}}}
    assert checksum(policy) == checksum(
        _merge(policy, {"policies": {"files": {"policy.yaml": "x"}}})
    )


def test_a_config_file_given_with_set_file_is_used_and_chart_owned_keys_replaced() -> None:
    text = (ROOT / "config" / "celgate.yaml").read_text(encoding="utf-8")
    values = {
        "configFile": text,
        "providerKeys": {"existingSecret": "llm-provider-keys"},
        "networkPolicy": {"egress": {"cloud": {"cidrs": ["0.0.0.0/0"]}}},
    }
    data = celgate_yaml(documents(render(values)))
    config = parse_config(data, source="configFile")
    assert set(config.models) == set(yaml.safe_load(text)["models"])
    assert config.server.listen == "0.0.0.0:50051"
    assert str(config.ledger.path) == "/var/lib/celgate/ledger.sqlite3"
    message = render_error({**values, "global": {"airgapped": True, "imageRegistry": MIRROR}})
    assert "cloud models (location: cloud): claude-opus, deepseek-chat" in message


# --- secrets ---------------------------------------------------------------------------------


def test_no_secret_value_can_reach_a_manifest() -> None:
    # A key written into the model catalogue is refused by the schema, never rendered.
    model = {**CLOUD_MODELS["gpt-5.5"], "api_key": SENTINEL_KEY}
    message = render_error(_merge(PROFILES["cloud"], {"config": {"models": {"gpt-5.5": model}}}))
    assert "api_key" in message
    assert SENTINEL_KEY not in message
    # So is a password in the Redis URL.
    url = f"redis://default:{SENTINEL_PASSWORD}@redis.redis.svc:6379/0"
    redis = _merge(PROFILES["redis-replicas"], {"ledger": {"redis": {"url": url}}})
    assert "ledger.redis.url holds credentials" in render_error(redis)
    # Every profile's output is free of both.
    for profile in PROFILES:
        for text in _rendered_profile(profile).values():
            assert SENTINEL_KEY not in text
            assert SENTINEL_PASSWORD not in text
            assert not re.search(r"\bsk-[A-Za-z0-9_-]{16,}", text)


def test_redis_url_with_a_password_comes_from_a_secret() -> None:
    values = _merge(
        PROFILES["redis-replicas"],
        {"ledger": {"redis": {"url": "", "existingSecret": "celgate-redis", "key": "url"}}},
    )
    docs = documents(render(values))
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    config = celgate_yaml(docs)
    assert config["ledger"] == {
        "backend": "redis",
        "url_env": "CELGATE_REDIS_URL",
        "reservation_ttl_s": 900,
        # On the writable /tmp volume: settlements that wait for Redis to come back.
        "journal_path": "/tmp/celgate/ledger-journal.sqlite3",
    }
    parse_config(config, source="rendered celgate.yaml")
    env = {e["name"]: e for e in gateway_container(docs)["env"]}
    assert env["CELGATE_REDIS_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "celgate-redis", "key": "url"}
    }
    both = _merge(values, {"ledger": {"redis": {"url": "redis://redis:6379/0"}}})
    assert "set url or existingSecret, not both" in render_error(both)


# --- bad values ------------------------------------------------------------------------------

BAD_VALUES = {
    "cloud model in air-gapped mode": (
        _merge(PROFILES["airgapped"], {"config": {"models": CLOUD_MODELS}}),
        "global.airgapped is true but the model catalogue has cloud models (location: cloud):"
        " claude-opus, gpt-5.5.",
    ),
    "sqlite with replicas": (
        {"replicaCount": 2},
        "ledger.backend=sqlite with replicaCount=2: the SQLite ledger is a file on one pod's"
        " volume",
    ),
    "sqlite with hpa": (
        {"autoscaling": {"enabled": True}},
        "ledger.backend=sqlite with autoscaling.enabled=true",
    ),
    "wrong type": ({"replicaCount": "two"}, "at '/replicaCount': got string, want integer"),
    "wrong type nested": (
        {"networkPolicy": {"enabled": "yes"}},
        "at '/networkPolicy/enabled': got string, want boolean",
    ),
    "unknown key": ({"replicas": 2}, "additional properties 'replicas' not allowed"),
    "redis without url": ({"ledger": {"backend": "redis"}}, "ledger.backend=redis needs"),
    "air-gapped without a mirror": (
        _merge(PROFILES["airgapped"], {"global": {"imageRegistry": ""}}),
        "global.airgapped is true but global.imageRegistry is empty",
    ),
    "air-gapped with cloud cidrs": (
        _merge(
            PROFILES["airgapped"],
            {"networkPolicy": {"egress": {"cloud": {"cidrs": ["0.0.0.0/0"]}}}},
        ),
        "networkPolicy.egress.cloud.cidrs allows 0.0.0.0/0",
    ),
    "air-gapped without network policy": (
        _merge(PROFILES["airgapped"], {"networkPolicy": {"enabled": False}}),
        "global.airgapped is true but networkPolicy.enabled is false",
    ),
    "air-gapped ollama without models": (
        _merge(PROFILES["airgapped"], {"ollama": {"modelsImage": {"enabled": False}}}),
        "the in-cluster Ollama has no source of models",
    ),
    "cloud model without egress": (
        _merge(PROFILES["cloud"], {"networkPolicy": {"egress": {"cloud": {"cidrs": []}}}}),
        "networkPolicy.egress.cloud.cidrs is empty",
    ),
    "cloud model without key secret": (
        _merge(PROFILES["cloud"], {"providerKeys": {"existingSecret": ""}}),
        "models read API keys from ANTHROPIC_API_KEY, OPENAI_API_KEY but"
        " providerKeys.existingSecret is empty",
    ),
    "api keys without secret": (
        {"auth": {"apiKeys": {"existingSecret": ""}}},
        "auth.mode=api_key needs auth.apiKeys.existingSecret",
    ),
    "auth none": ({"auth": {"mode": "none"}}, "at '/auth/mode'"),
    "mtls without certificate": (
        {"auth": {"mode": "mtls", "clientTenants": {"cn": "t"}}},
        "auth.mode=mtls needs tls.existingSecret",
    ),
    "bad digest": ({"image": {"digest": "latest"}}, "at '/image/digest'"),
    "hpa without metrics": (
        {
            "ledger": {"backend": "redis", "redis": {"url": "redis://redis:6379/0"}},
            "autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": 0},
        },
        "autoscaling.enabled=true needs a target",
    ),
    "bad configFile": ({"configFile": "models: [unclosed"}, "configFile is not valid YAML"),
}


@pytest.mark.parametrize("case", BAD_VALUES)
def test_bad_values_fail_with_a_message_saying_what_to_fix(case: str) -> None:
    values, expected = BAD_VALUES[case]
    assert expected in render_error(values)


# --- the image -------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_locked_non_root_and_matches_the_chart() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base[1])
    assert len(re.findall(r"^FROM ", text, re.M)) == 2
    assert "uv sync --locked --no-dev" in text
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    uv = re.search(r"^UV_VERSION := (\S+)$", makefile, re.M)
    assert uv and f"ARG UV_VERSION={uv[1]}" in text
    user = re.search(r"^USER (\d+):(\d+)$", text, re.M)
    values = _chart().values
    assert user and int(user[1]) == values["podSecurityContext"]["runAsUser"] != 0
    assert re.search(r'^ENTRYPOINT \["celgate"\]$', text, re.M)
    assert re.search(r'^CMD \["serve", "--config", ', text, re.M)
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for name in source.split():
            assert (ROOT / name).exists(), f"Dockerfile copies {name}, which is not in the repo"
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert ".venv" in ignored and ".git" in ignored


# --- Kubernetes version ----------------------------------------------------------------------

# The newest feature each construct the chart renders needs, as (major, minor) of the first
# release where it works on a default cluster (GA, or beta and on by default).
FEATURE_MINIMUMS: dict[str, tuple[int, int]] = {
    # PodLifecycleSleepAction: alpha (off) in 1.29, beta and on by default in 1.30.
    "preStop sleep action": (1, 30),
    # GRPCContainerProbe: beta and on by default in 1.24, GA in 1.27.
    "native gRPC probes": (1, 24),
    "autoscaling/v2 HorizontalPodAutoscaler": (1, 23),
    "policy/v1 PodDisruptionBudget": (1, 21),
    "appProtocol on Service ports": (1, 20),
}


def _features_used(docs: list[dict[str, Any]]) -> set[str]:
    used = set()
    for _, spec in pod_specs(docs):
        for container in spec["containers"]:
            if "sleep" in container.get("lifecycle", {}).get("preStop", {}):
                used.add("preStop sleep action")
            if any("grpc" in container.get(p, {}) for p in ("livenessProbe", "readinessProbe")):
                used.add("native gRPC probes")
    for doc in docs:
        if doc["apiVersion"] == "autoscaling/v2":
            used.add("autoscaling/v2 HorizontalPodAutoscaler")
        if doc["apiVersion"] == "policy/v1":
            used.add("policy/v1 PodDisruptionBudget")
        if doc["kind"] == "Service" and any("appProtocol" in p for p in doc["spec"]["ports"]):
            used.add("appProtocol on Service ports")
    return used


def _kube_minimum() -> tuple[int, int]:
    constraint = _chart().metadata["kubeVersion"]
    # ">= X.Y.0-0": the "-0" lets pre-release-tagged distribution builds (v1.30.4-eks-...)
    # satisfy Helm's semver check.
    match = re.fullmatch(r">=\s*(\d+)\.(\d+)\.0-0", constraint)
    assert match, f"kubeVersion {constraint!r} is not of the form '>= X.Y.0-0'"
    return int(match[1]), int(match[2])


def test_kube_version_is_the_real_minimum_of_what_the_chart_renders() -> None:
    used: set[str] = set()
    for profile in PROFILES:
        used |= _features_used(profile_docs(profile))
    assert used == set(FEATURE_MINIMUMS), "a feature without a known minimum: add it"
    needed = max(FEATURE_MINIMUMS[f] for f in used)
    assert _kube_minimum() == needed


def test_every_profile_validates_against_the_minimum_kubernetes_version() -> None:
    major, minor = _kube_minimum()
    for profile in PROFILES:
        for doc in profile_docs(profile):
            validate_manifest(doc, f"{major}.{minor}")
    # The API before the feature gate existed does not know the preStop sleep action at all.
    container = gateway(profile_docs("default"))
    with pytest.raises(kubernetes_validate.ValidationError, match="sleep"):
        kubernetes_validate.validate(container, f"{major}.{minor - 2}", strict=True)


def test_readme_states_the_same_minimum() -> None:
    major, minor = _kube_minimum()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"Kubernetes {major}.{minor} or newer" in readme
    assert f"{major}.{minor}" in (ROOT / "docs" / "kubernetes.md").read_text(encoding="utf-8")


# --- the models init container ---------------------------------------------------------------


def _load_models_script() -> str:
    docs = profile_docs("airgapped")
    ollama = one(docs, "Deployment", f"{RELEASE}-celgate-ollama")
    (init,) = ollama["spec"]["template"]["spec"]["initContainers"]
    assert init["name"] == "load-models"
    assert init["command"][:2] == ["/bin/sh", "-c"]
    env = {e["name"]: e["value"] for e in init["env"]}
    assert env == {"SOURCE": "/models", "TARGET": "/target"}
    assert {"name": "models", "mountPath": "/target"} in init["volumeMounts"]
    script: str = init["command"][2]
    return script


def _blob(content: bytes) -> str:
    return "sha256-" + hashlib.sha256(content).hexdigest()


def _run_loader(
    source: Path, target: Path, path_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {"SOURCE": str(source), "TARGET": str(target), "PATH": os.environ["PATH"]}
    if path_dir is not None:
        env["PATH"] = f"{path_dir}:{env['PATH']}"
    return subprocess.run(
        ["/bin/sh", "-c", _load_models_script()],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_models_copy_heals_after_an_interrupted_copy(tmp_path: Path) -> None:
    source, target = tmp_path / "image-models", tmp_path / "volume"
    weights, params = os.urandom(300_000), b'{"temperature": 0.6}'
    manifest = b'{"layers": []}'
    (source / "blobs").mkdir(parents=True)
    (source / "blobs" / _blob(weights)).write_bytes(weights)
    (source / "blobs" / _blob(params)).write_bytes(params)
    manifest_dir = source / "manifests" / "registry.ollama.ai" / "library" / "llama3.1"
    manifest_dir.mkdir(parents=True)
    (manifest_dir / "8b").write_bytes(manifest)
    # A copy killed half-way through a blob: a `cp` that writes half and dies.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "cp").write_text('#!/bin/sh\nhead -c 150000 "$1" > "$2"\nexit 137\n', encoding="utf-8")
    (fake / "cp").chmod(0o755)
    interrupted = _run_loader(source, target, fake)
    assert interrupted.returncode != 0
    left = _files(target)
    assert any(name.endswith(".partial") for name in left)
    # Nothing truncated carries a final name: Ollama only ever sees complete files.
    for name, content in left.items():
        if not name.endswith(".partial"):
            assert content == (source / name).read_bytes(), name
    # And what an older `cp -n` left behind when its pod died mid-copy: a truncated blob under
    # its final name, which `cp -n` would never have repaired.
    (target / "blobs" / _blob(weights)).write_bytes(weights[:1000])

    healed = _run_loader(source, target)
    assert healed.returncode == 0, healed.stderr
    assert _files(target) == _files(source)

    # A restart with everything in place copies nothing.
    before = {p: p.stat().st_mtime_ns for p in (target / "blobs").iterdir()}
    again = _run_loader(source, target)
    assert again.returncode == 0 and "copied blob" not in again.stdout
    assert {p: p.stat().st_mtime_ns for p in (target / "blobs").iterdir()} == before


def test_models_copy_refuses_a_blob_whose_content_does_not_match_its_digest(
    tmp_path: Path,
) -> None:
    source, target = tmp_path / "image-models", tmp_path / "volume"
    (source / "blobs").mkdir(parents=True)
    (source / "manifests").mkdir()
    name = _blob(b"the real weights")
    (source / "blobs" / name).write_bytes(b"corrupted weights")
    result = _run_loader(source, target)
    assert result.returncode != 0
    assert f"blob {name}: copied content has digest sha256:" in result.stderr
    assert not (target / "blobs" / name).exists()


# --- Prometheus, ServiceMonitor, dashboard ---------------------------------------------------


def test_metrics_port_is_scrapable_and_off_the_grpc_port() -> None:
    docs = profile_docs("default")
    container = gateway_container(docs)
    assert {"name": "metrics", "containerPort": 9464, "protocol": "TCP"} in container["ports"]
    annotations = gateway(docs)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9464"
    assert annotations["prometheus.io/path"] == "/metrics"
    config = parse_config(celgate_yaml(docs), source="rendered celgate.yaml")
    assert config.telemetry.prometheus.listen == "0.0.0.0:9464"
    service = one(docs, "Service", f"{RELEASE}-celgate")
    assert {"name": "metrics", "port": 9464, "targetPort": "metrics", "protocol": "TCP",
            "appProtocol": "http"} in service["spec"]["ports"]  # fmt: skip
    # Prometheus is let in on the metrics port only (by default from the release's namespace).
    policy = one(docs, "NetworkPolicy", f"{RELEASE}-celgate")
    metrics_rules = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == "metrics"]
    assert metrics_rules == [
        {"from": [{"podSelector": {}}], "ports": [{"port": "metrics", "protocol": "TCP"}]}
    ]
    assert by_kind(docs, "ServiceMonitor") == []
    assert not any(d["metadata"]["name"].endswith("-dashboard") for d in by_kind(docs, "ConfigMap"))


def test_metrics_can_be_turned_off() -> None:
    docs = documents(render({"telemetry": {"prometheus": {"enabled": False}}}))
    assert "metrics" not in {p["name"] for p in gateway_container(docs)["ports"]}
    assert (
        "prometheus.io/scrape" not in gateway(docs)["spec"]["template"]["metadata"]["annotations"]
    )
    assert "prometheus" not in celgate_yaml(docs).get("telemetry", {})
    policy = one(docs, "NetworkPolicy", f"{RELEASE}-celgate")
    assert len(policy["spec"]["ingress"]) == 1


def test_service_monitor_scrapes_the_gateway_service_metrics_port() -> None:
    docs = profile_docs("observability")
    (monitor,) = by_kind(docs, "ServiceMonitor")
    jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)
    assert monitor["metadata"]["labels"]["release"] == "kps"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {
        "port": "metrics", "path": "/metrics", "scheme": "http",
        "interval": "30s", "scrapeTimeout": "10s",
    }  # fmt: skip
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    # It selects exactly the gateway's Service, and that Service has the named port.
    wanted = monitor["spec"]["selector"]["matchLabels"]
    selected = [
        s for s in by_kind(docs, "Service")
        if all(s["metadata"]["labels"].get(k) == v for k, v in wanted.items())
    ]  # fmt: skip
    assert [s["metadata"]["name"] for s in selected] == [f"{RELEASE}-celgate"]
    assert "metrics" in {p["name"] for p in selected[0]["spec"]["ports"]}
    policy = one(docs, "NetworkPolicy", f"{RELEASE}-celgate")
    metrics_rule = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == "metrics")
    assert metrics_rule["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]
    config = parse_config(celgate_yaml(docs), source="rendered celgate.yaml")
    assert config.telemetry.labels.promote == ["project", "team"]


def test_dashboard_config_map_carries_the_shipped_dashboard_for_the_sidecar() -> None:
    docs = profile_docs("observability")
    config_map = one(docs, "ConfigMap", f"{RELEASE}-celgate-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "LLM"}
    shipped = json.loads((CHART / "dashboards" / "celgate.json").read_text(encoding="utf-8"))
    assert json.loads(config_map["data"]["celgate.json"]) == shipped


METRICS_BAD_VALUES = {
    "metrics on the grpc port": (
        {"telemetry": {"prometheus": {"port": 50051}}},
        "telemetry.prometheus.port 50051 is already the gateway's gRPC or health port",
    ),
    "service monitor without metrics": (
        {"telemetry": {"prometheus": {"enabled": False, "serviceMonitor": {"enabled": True}}}},
        "telemetry.prometheus.serviceMonitor.enabled needs telemetry.prometheus.enabled=true",
    ),
    "bad scrape interval": (
        {"telemetry": {"prometheus": {"serviceMonitor": {"interval": "soon"}}}},
        "at '/telemetry/prometheus/serviceMonitor/interval'",
    ),
    "bad promoted label key": (
        {"config": {"telemetry": {"labels": {"promote": ["Project Name"]}}}},
        "at '/config/telemetry/labels/promote/0'",
    ),
}


@pytest.mark.parametrize("case", METRICS_BAD_VALUES)
def test_bad_metrics_values_fail_with_a_message_saying_what_to_fix(case: str) -> None:
    values, expected = METRICS_BAD_VALUES[case]
    assert expected in render_error(values)

"""The chart exposes the OpenAI-compatible HTTP API when `http.enabled`: a named container port,
a Service port, the NetworkPolicy's ingress, and `http.listen` in the gateway's config (which
the gateway's own validation accepts). Off by default: nothing of it is rendered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from gateway.config import parse_config

CHART = Path(__file__).resolve().parents[2] / "helm" / "celgate"


def render(values: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    manifests = helm_python.Chart.load(str(CHART)).render(values, name="gw", namespace="llm")
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for path, text in manifests.items():
        if not path.endswith(".yaml"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                kubernetes_validate.validate(doc, "1.33", strict=True)
                by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def gateway_config(by_kind: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    for config_map in by_kind["ConfigMap"]:
        if "celgate.yaml" in config_map.get("data", {}):
            data: dict[str, Any] = yaml.safe_load(config_map["data"]["celgate.yaml"])
            return data
    raise AssertionError("no celgate.yaml rendered")


def ports(by_kind: dict[str, list[dict[str, Any]]]) -> tuple[set[str], set[str], set[str]]:
    container = by_kind["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]
    service = next(s for s in by_kind["Service"] if s["metadata"]["name"] == "gw-celgate")
    policy = next(p for p in by_kind["NetworkPolicy"] if p["metadata"]["name"] == "gw-celgate")
    return (
        {p["name"] for p in container["ports"]},
        {p["name"] for p in service["spec"]["ports"]},
        {str(p["port"]) for p in policy["spec"]["ingress"][0]["ports"]},
    )


def test_http_is_off_by_default() -> None:
    by_kind = render({})
    assert "http" not in gateway_config(by_kind)
    assert all("http" not in names for names in ports(by_kind))


@pytest.mark.parametrize("tls", [False, True])
def test_enabled_http_is_exposed_and_configured(tls: bool) -> None:
    values: dict[str, Any] = {"http": {"enabled": True, "containerPort": 8443, "servicePort": 443}}
    if tls:
        values["tls"] = {"existingSecret": "celgate-tls"}
    by_kind = render(values)
    data = gateway_config(by_kind)
    assert data["http"] == {"listen": "0.0.0.0:8443"}
    config = parse_config(data, base_dir=CHART)
    assert config.http.listen == "0.0.0.0:8443"
    assert (config.server.tls is not None) == tls  # the HTTP port uses the same TLS
    container, service, policy = ports(by_kind)
    assert "http" in container and "http" in service and "http" in policy
    svc = next(s for s in by_kind["Service"] if s["metadata"]["name"] == "gw-celgate")
    http = next(p for p in svc["spec"]["ports"] if p["name"] == "http")
    assert http["port"] == 443 and http["targetPort"] == "http"
    assert http["appProtocol"] == ("https" if tls else "http")


def test_operator_config_cannot_move_the_http_listener() -> None:
    """The chart owns the listen addresses: a config file's http section is replaced."""
    config_file = yaml.safe_dump(
        {
            "default_model": "local",
            "models": {
                "local": {
                    "provider": "ollama",
                    "upstream_model": "llama3.1:8b",
                    "base_url": "http://ollama:11434",
                    "location": "on_prem",
                    "clearance": "RESTRICTED",
                }
            },
            "http": {"listen": "0.0.0.0:9999"},
        }
    )
    by_kind = render({"configFile": config_file})
    assert "http" not in gateway_config(by_kind)

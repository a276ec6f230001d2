"""The typed CEL environments policies compile against.

Two kinds: the gateway's own (`request`, `budget`, `models`, `now`; outputs are
`gateway.v1.RouteDecision`) and a suite's `config.yaml` (cel-go's environment format), which is
how cel-go's conformance suites declare their variables and functions.

Numbers: CEL's type checker keeps int, uint and double apart, so `budget.utilization > 1` is a
compile error (write `1.0`). We keep that strictness rather than enabling cross-type numeric
comparison: the error appears at load time with a caret and a hint, whereas a silently
converted comparison hides whether the author meant a ratio or a count.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cel_expr_python import cel
from cel_expr_python.ext import ext_bindings, ext_optional, ext_strings

# Importing the generated module registers the gateway.v1 descriptors in the default pool,
# which is what lets CEL type-check field access on the policy's messages.
from gateway.v1 import policy_pb2

GATEWAY_CONTAINER = "gateway.v1"
ROUTE_DECISION = "gateway.v1.RouteDecision"

# Functions a conformance suite declares but leaves to the harness (see the sample's README).
_HARNESS_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "locationCode_string": lambda ip: {"10.0.0.1": "us", "10.0.0.2": "de"}.get(ip, "ir"),
}


def _gateway_variables() -> dict[str, cel.Type]:
    return {
        "request": cel.Type(policy_pb2.PolicyRequest.DESCRIPTOR.full_name),
        "budget": cel.Type(policy_pb2.BudgetState.DESCRIPTOR.full_name),
        "models": cel.Type.Map(
            cel.Type.STRING, cel.Type(policy_pb2.ModelInfo.DESCRIPTOR.full_name)
        ),
        "now": cel.Type.TIMESTAMP,
    }


_EXTENSIONS: dict[str, Callable[[], cel.CelExtensionBase]] = {
    "bindings": ext_bindings.ExtBindings,
    "optional": ext_optional.ExtOptional,
    "strings": ext_strings.ExtStrings,
}


def _extensions(skip: frozenset[str]) -> list[cel.CelExtensionBase]:
    # Bindings and optionals are what composed policies are made of; strings are for authors.
    # An extension a suite's config already includes must not be added twice (cel-cpp refuses).
    return [make() for name, make in _EXTENSIONS.items() if name not in skip]


def _config_extensions(config: cel.EnvConfig) -> frozenset[str]:
    data = yaml.safe_load(config.to_yaml()) or {}
    return frozenset(
        str(ext.get("name")) for ext in data.get("extensions") or [] if isinstance(ext, dict)
    )


@dataclass
class PolicyEnvironment:
    """How to build a `cel.Env` for one policy, plus the declared output type (if any)."""

    name: str
    variables: Mapping[str, cel.Type] = field(default_factory=dict)
    config: cel.EnvConfig | None = None
    container: str = ""
    output_type: cel.Type | None = None
    function_impls: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    # Extra function declarations (their implementations go in `function_impls`).
    functions: Sequence[cel.FunctionDecl] = ()
    # Variables of message type, so test inputs written as YAML mappings become protos.
    message_variables: Mapping[str, str] = field(default_factory=dict)
    config_extensions: frozenset[str] = frozenset()

    def new_env(
        self, extra: Mapping[str, cel.Type] | None = None, imports: Sequence[str] = ()
    ) -> cel.Env:
        variables = {**self.variables, **(extra or {})}
        container: str | cel.ExpressionContainer | None = self.container or None
        if imports:
            container = cel.ExpressionContainer(self.container, abbreviations=list(imports))
        kwargs: dict[str, Any] = {
            "variables": variables,
            "extensions": _extensions(self.config_extensions),
            "container": container,
        }
        if self.config is not None:
            kwargs["config"] = self.config
        if self.functions:
            kwargs["functions"] = list(self.functions)
        if self.function_impls:
            kwargs["function_impls"] = dict(self.function_impls)
        return cel.NewEnv(**kwargs)


def gateway_environment() -> PolicyEnvironment:
    """The environment docs/architecture.md describes, used for every policy the gateway serves."""
    return PolicyEnvironment(
        name="gateway",
        variables=_gateway_variables(),
        container=GATEWAY_CONTAINER,
        output_type=cel.Type(ROUTE_DECISION),
        message_variables={
            "request": policy_pb2.PolicyRequest.DESCRIPTOR.full_name,
            "budget": policy_pb2.BudgetState.DESCRIPTOR.full_name,
        },
    )


class EnvironmentConfigError(Exception):
    """A suite's config.yaml that cel-expr-python cannot read."""


def suite_environment(config_path: Path) -> PolicyEnvironment:
    """A conformance-style suite's own environment from its `config.yaml`."""
    try:
        text = config_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EnvironmentConfigError(f"{config_path}: cannot read: {exc.strerror}") from None
    try:
        config = cel.NewEnvConfigFromYaml(text)
    except (RuntimeError, ValueError) as exc:
        raise EnvironmentConfigError(f"{config_path}: invalid environment config: {exc}") from None
    declared = _declared_overloads(config)
    environment = PolicyEnvironment(
        name=str(config_path),
        config=config,
        function_impls={k: v for k, v in _HARNESS_FUNCTIONS.items() if k in declared},
        config_extensions=_config_extensions(config),
    )
    try:
        environment.new_env()
    except RuntimeError as exc:
        raise EnvironmentConfigError(f"{config_path}: unusable environment: {exc}") from None
    return environment


def _declared_overloads(config: cel.EnvConfig) -> set[str]:
    data = yaml.safe_load(config.to_yaml()) or {}
    return {
        str(overload.get("id"))
        for function in data.get("functions") or []
        for overload in function.get("overloads") or []
    }

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

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cel_expr_python import cel
from cel_expr_python.ext import ext_bindings, ext_optional, ext_strings
from google.protobuf import descriptor_pool

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


# Bindings and optionals are what the compiler composes a policy from (`cel.bind`,
# `optional.of(...).or(...)`), so every environment has them. Strings is for authors: the
# gateway's own environment has it (the test catalogue's policies split labels with it; the
# bundled default policy calls none of its functions), a suite only when its config lists it.
_COMPOSITION = ("bindings", "optional")
GATEWAY_EXTENSIONS = (*_COMPOSITION, "strings")


def _extensions(names: Sequence[str], skip: frozenset[str]) -> list[cel.CelExtensionBase]:
    # An extension a suite's config already includes must not be added twice (cel-cpp refuses).
    return [_EXTENSIONS[name]() for name in names if name not in skip]


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
    extensions: Sequence[str] = _COMPOSITION
    # A descriptor pool holding message types beyond the generated ones (a suite's protos).
    descriptor_pool: Any = None
    # cel-go's context variable: the message whose fields are the variables (`context_expr`).
    context_type: str = ""

    def new_env(
        self, extra: Mapping[str, cel.Type] | None = None, imports: Sequence[str] = ()
    ) -> cel.Env:
        variables = {**self.variables, **(extra or {})}
        container: str | cel.ExpressionContainer | None = self.container or None
        if imports:
            container = cel.ExpressionContainer(self.container, abbreviations=list(imports))
        kwargs: dict[str, Any] = {
            "variables": variables,
            "extensions": _extensions(self.extensions, self.config_extensions),
            "container": container,
        }
        if self.descriptor_pool is not None:
            kwargs["descriptor_pool"] = self.descriptor_pool
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
        extensions=GATEWAY_EXTENSIONS,
        message_variables={
            "request": policy_pb2.PolicyRequest.DESCRIPTOR.full_name,
            "budget": policy_pb2.BudgetState.DESCRIPTOR.full_name,
        },
    )


class EnvironmentConfigError(Exception):
    """A suite's config.yaml that cel-expr-python cannot read."""


def suite_environment(config_path: Path, descriptor_pool: Any = None) -> PolicyEnvironment:
    """A conformance-style suite's own environment from its `config.yaml`.

    `descriptor_pool` holds the suite's own message types (cel-go's `pb` suites need their
    test protos); without it only the generated and well-known types are known."""
    try:
        text = config_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EnvironmentConfigError(f"{config_path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise EnvironmentConfigError(f"{config_path}: not UTF-8 text") from None
    try:
        config = cel.NewEnvConfigFromYaml(_normalized_config(text))
    except (RuntimeError, ValueError) as exc:
        raise EnvironmentConfigError(
            f"{config_path}: invalid environment config: {_one_line(exc)}"
        ) from None
    declared = _declared_overloads(config)
    missing = sorted(declared - set(_HARNESS_FUNCTIONS))
    if missing:
        # Evaluating a call to a declared function without an implementation fails at run
        # time with "no overload found"; say so at load time, where the declaration is.
        line = _line_of(text, missing[0])
        raise EnvironmentConfigError(
            f"{config_path}:{line}: function overload '{missing[0]}' is declared but has no "
            "implementation (the runner implements: "
            f"{', '.join(sorted(_HARNESS_FUNCTIONS))}); remove the declaration or the suite"
        )
    for type_name in _message_types(config):
        if not _known_message(type_name, descriptor_pool):
            raise EnvironmentConfigError(
                f"{config_path}:{_line_of(text, type_name)}: message type '{type_name}' is "
                "unknown: give its descriptors (celgate policy test --descriptors FILE, "
                "where FILE is a FileDescriptorSet, a .proto file or a folder of them; or put "
                "the .proto files beside config.yaml)"
            )
    environment = PolicyEnvironment(
        name=str(config_path),
        config=config,
        function_impls={k: v for k, v in _HARNESS_FUNCTIONS.items() if k in declared},
        config_extensions=_config_extensions(config),
        descriptor_pool=descriptor_pool,
        context_type=config.context_type,
    )
    try:
        environment.new_env()
    except (RuntimeError, ValueError) as exc:
        raise EnvironmentConfigError(
            f"{config_path}: unusable environment: {_one_line(exc)}"
        ) from None
    return environment


_QUALIFIED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


def _message_types(config: cel.EnvConfig) -> list[str]:
    """Qualified type names the config's variables (and context variable) use."""
    data = yaml.safe_load(config.to_yaml()) or {}
    names: list[str] = [config.context_type] if config.context_type else []
    for variable in data.get("variables") or []:
        if isinstance(variable, dict):
            names.extend(_QUALIFIED.findall(str(variable.get("type", ""))))
    return list(dict.fromkeys(names))


def _known_message(name: str, pool: Any) -> bool:
    pools = [pool] if pool is not None else []
    pools.append(descriptor_pool.Default())
    for candidate in pools:
        try:
            candidate.FindMessageTypeByName(name)
        except KeyError:
            continue
        return True
    return False


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().removesuffix("[INVALID_ARGUMENT]").strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    return 1


def _normalized_config(text: str) -> str:
    """cel-go's older `variables: [{context_proto: T}]` as cel-cpp's `context_variable`."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # cel-cpp reports the YAML error itself
    if not isinstance(data, dict) or not isinstance(data.get("variables"), list):
        return text
    context = [v for v in data["variables"] if isinstance(v, dict) and "context_proto" in v]
    if not context:
        return text
    data["variables"] = [v for v in data["variables"] if v not in context] or None
    if data["variables"] is None:
        del data["variables"]
    data["context_variable"] = {"type_name": str(context[0]["context_proto"]).strip()}
    return yaml.safe_dump(data, sort_keys=False)


def _declared_overloads(config: cel.EnvConfig) -> set[str]:
    data = yaml.safe_load(config.to_yaml()) or {}
    return {
        str(overload.get("id"))
        for function in data.get("functions") or []
        for overload in function.get("overloads") or []
    }

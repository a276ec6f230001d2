"""Routing policies: CEL Policy files compiled into one type-checked program
(docs/architecture.md, "The policy language")."""

from gateway.policy.compiler import (
    CompiledPolicy,
    MatchInfo,
    PolicyError,
    PolicyEvaluationError,
    compile_policy,
)
from gateway.policy.store import PolicyStore
from gateway.policy.testing import run_check, run_test

__all__ = [
    "CompiledPolicy",
    "MatchInfo",
    "PolicyError",
    "PolicyEvaluationError",
    "PolicyStore",
    "compile_policy",
    "run_check",
    "run_test",
]

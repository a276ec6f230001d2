"""The serving policy: load, hot reload, last known good.

A changed policy is compiled and its tests.yaml run before it replaces the serving one; a
policy that fails either keeps the last good revision serving (docs/architecture.md,
invariant 5) and the failure is logged with file:line and kept in `last_error` for health
and metrics.

Reloads are driven by content, not by which file an event names: Kubernetes updates a mounted
ConfigMap by swapping a `..data` symlink, so events arrive for directories we never read.
Every event batch re-reads the policy folder and reloads only when its content changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from io import StringIO
from pathlib import Path

import watchfiles

from gateway.policy.compiler import CompiledPolicy, PolicyError, compile_policy, policy_file
from gateway.policy.environment import gateway_environment
from gateway.policy.parser import Diagnostic
from gateway.policy.testing import TESTS_FILE, report_suite, run_tests

log = logging.getLogger("celgate.policy")

ChangeCallback = Callable[[CompiledPolicy | None, str | None], None]


class PolicyStore:
    """Holds the policy the gateway serves. `current` is swapped atomically (one reference)."""

    def __init__(
        self,
        path: Path,
        *,
        run_tests: bool = True,
        on_change: ChangeCallback | None = None,
        debounce_ms: int = 200,
    ) -> None:
        self.path = Path(path)
        self.run_tests = run_tests
        # Called after every load attempt with (serving policy, error or None).
        self.on_change = on_change
        self.debounce_ms = debounce_ms
        self._current: CompiledPolicy | None = None
        self._last_error: str | None = None
        self._fingerprint: str | None = None

    @property
    def current(self) -> CompiledPolicy | None:
        return self._current

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def folder(self) -> Path:
        return self.path.parent if self.path.suffix in (".yaml", ".yml") else self.path

    def _fingerprint_now(self) -> str:
        digest = hashlib.sha256()
        for file in (policy_file(self.path), self.folder / TESTS_FILE):
            try:
                digest.update(file.read_bytes())
            except OSError:
                digest.update(b"\0missing")
        return digest.hexdigest()

    def _compile_and_test(self) -> CompiledPolicy:
        environment = gateway_environment()
        policy = compile_policy(self.path, environment)
        if self.run_tests and (self.folder / TESTS_FILE).is_file():
            suite = run_tests(policy, environment, self.folder)
            if not suite.ok:
                report = StringIO()
                report_suite(suite, report)
                failed = [r for r in suite.results if not r.passed]
                message = f"{len(failed)} of {len(suite.results)} policy tests failed"
                if suite.error:
                    message = suite.error
                raise PolicyError(
                    [
                        Diagnostic(
                            str(self.folder / TESTS_FILE),
                            1,
                            1,
                            f"{message}; revision {policy.revision} not loaded\n"
                            + report.getvalue().strip(),
                        )
                    ]
                )
        return policy

    def load(self) -> None:
        """Compile (and test) the policy and serve it; raises PolicyError and keeps serving
        the previous revision when it fails."""
        fingerprint = self._fingerprint_now()
        try:
            policy = self._compile_and_test()
        except PolicyError as exc:
            self._fingerprint = fingerprint
            self._last_error = str(exc)
            self._notify()
            raise
        self._fingerprint = fingerprint
        self._current = policy
        self._last_error = None
        log.info(
            "policy loaded: name=%s revision=%s source=%s",
            policy.name,
            policy.revision,
            policy.source,
        )
        self._notify()

    def reload(self) -> bool:
        """Reload when the folder's content changed; True when a new revision is serving."""
        if self._fingerprint_now() == self._fingerprint:
            return False
        try:
            self.load()
        except PolicyError as exc:
            serving = self._current.revision if self._current else "none"
            log.error("policy reload failed, still serving revision %s:\n%s", serving, exc)
            return False
        return True

    def _notify(self) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(self._current, self._last_error)
        except Exception:
            # A broken observer (metrics, health) must not stop policy reloads.
            log.exception("policy on_change callback failed")

    async def watch(self, stop: asyncio.Event) -> None:
        """Reload on every change of the policy folder until `stop` is set."""
        async for _changes in watchfiles.awatch(
            self.folder,
            stop_event=stop,
            debounce=self.debounce_ms,
            step=50,
            recursive=True,
            ignore_permission_denied=True,
        ):
            # Compilation is CPU-bound but takes milliseconds; a thread keeps the loop free.
            await asyncio.to_thread(self.reload)

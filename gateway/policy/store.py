"""The serving policy: load, hot reload, last known good.

A changed policy is compiled and its tests.yaml run before it replaces the serving one; a
policy that fails either keeps the last good revision serving (docs/architecture.md,
invariant 5) and the failure is logged with file:line and kept in `last_error` for health
and metrics.

Reloads are driven by content, not by which file an event names: Kubernetes updates a mounted
ConfigMap by swapping a `..data` symlink, so events arrive for directories we never read.
Every event batch re-reads the policy folder and reloads only when its content changed.

The watcher never ends on a bad file: every load failure, foreseen or not, becomes a
`PolicyError` (file:line where known), is logged, counted through `on_change` and kept in
`last_error`, and the watch goes on; if the folder itself goes away the watch restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import re
from collections.abc import Callable
from io import StringIO
from pathlib import Path

import watchfiles

from gateway.policy.compiler import CompiledPolicy, PolicyError, compile_policy, policy_file
from gateway.policy.environment import (
    EnvironmentConfigError,
    gateway_environment,
    suite_environment,
)
from gateway.policy.parser import Diagnostic
from gateway.policy.testing import CONFIG_FILE, TESTS_FILE, report_suite, run_tests

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
        for file in (policy_file(self.path), self.folder / TESTS_FILE, self.folder / CONFIG_FILE):
            try:
                digest.update(file.read_bytes())
            except OSError:
                digest.update(b"\0missing")
        return digest.hexdigest()

    def _check_no_config(self) -> None:
        """A served folder has no environment of its own: the gateway's variables are what it
        evaluates against. A `config.yaml` there (a test suite's) is refused, not ignored."""
        config = self.folder / CONFIG_FILE
        if not config.is_file():
            return
        try:
            suite_environment(config)
        except EnvironmentConfigError as exc:
            raise PolicyError([_diagnostic(str(exc), config)]) from None
        raise PolicyError(
            [
                Diagnostic(
                    str(config),
                    1,
                    1,
                    "the gateway serves policies in its own environment (request, budget, "
                    f"models, now); {CONFIG_FILE} belongs to test suites: remove it from the "
                    "served folder",
                )
            ]
        )

    def _compile_and_test(self) -> CompiledPolicy:
        self._check_no_config()
        environment = gateway_environment()
        policy = compile_policy(self.path, environment)
        if self.run_tests and (self.folder / TESTS_FILE).is_file():
            suite = run_tests(policy, environment, self.folder)
            if suite.error:
                # A tests.yaml that cannot run names its own line (a bad enum value, input or
                # expression): report it there.
                located = _diagnostic(suite.error, self.folder / TESTS_FILE)
                note = f"; revision {policy.revision} not loaded"
                raise PolicyError([dataclasses.replace(located, message=located.message + note)])
            if not suite.ok:
                report = StringIO()
                report_suite(suite, report)
                failed = [r for r in suite.results if not r.passed]
                message = f"{len(failed)} of {len(suite.results)} policy tests failed"
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
            try:
                policy = self._compile_and_test()
            except PolicyError:
                raise
            except Exception as exc:
                # A failure nobody foresaw is still a failed load, never the end of reloads.
                log.error("policy load failed unexpectedly", exc_info=True)
                raise PolicyError(
                    [
                        Diagnostic(
                            str(policy_file(self.path)),
                            1,
                            1,
                            f"could not be loaded: {type(exc).__name__}: {_first_line(exc)}",
                        )
                    ]
                ) from None
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

    async def watch(self, stop: asyncio.Event, retry_s: float = 1.0) -> None:
        """Reload on every change of the policy folder until `stop` is set. Returns only then:
        a failed reload is reported and watching goes on; when the folder goes away (or the
        watcher fails) the watch waits for it, re-reads it and starts again."""
        while not stop.is_set():
            if self.folder.is_dir():
                try:
                    async for _changes in watchfiles.awatch(
                        self.folder,
                        stop_event=stop,
                        debounce=self.debounce_ms,
                        step=50,
                        recursive=True,
                        ignore_permission_denied=True,
                    ):
                        await self._reload_in_thread()
                        if not self.folder.is_dir():
                            # A removed folder's watch sees nothing of its successor.
                            log.error("policy folder %s is gone; waiting for it", self.folder)
                            break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the watch must outlive any error
                    log.error(
                        "policy watcher stopped (%s: %s); watching %s again in %.1f s",
                        type(exc).__name__,
                        _first_line(exc),
                        self.folder,
                        retry_s,
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_s)
            if not stop.is_set() and self.folder.is_dir():
                await self._reload_in_thread()

    async def _reload_in_thread(self) -> None:
        try:
            # Compilation is CPU-bound but takes milliseconds; a thread keeps the loop free.
            await asyncio.to_thread(self.reload)
        except Exception:  # reported; the next change is still loaded
            log.exception("policy reload failed unexpectedly; still watching")


_LOCATED = re.compile(r"^(?P<path>.+?):(?P<line>\d+): (?P<message>.*)$", re.S)


def _diagnostic(message: str, path: Path) -> Diagnostic:
    """An error message that may start with `path:line: ` as a Diagnostic."""
    m = _LOCATED.match(message)
    if m and m.group("path") == str(path):
        return Diagnostic(str(path), int(m.group("line")), 1, m.group("message"))
    prefix = f"{path}: "
    return Diagnostic(str(path), 1, 1, message.removeprefix(prefix))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

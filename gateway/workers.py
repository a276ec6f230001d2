"""`server.workers: N`: N gateway processes serving one port, under one supervisor.

Python runs one request at a time per process, so a gateway in one process uses one core. The
supervisor starts N `celgate serve` worker processes on the same configuration; each binds
`server.listen` with SO_REUSEPORT and the kernel spreads incoming connections across them.

What stays exact across workers, and why:
- budgets: every worker opens the same ledger; SQLite's `BEGIN IMMEDIATE` (or Redis's
  scripts) makes check-and-reserve atomic across processes, so a hard budget holds;
- rate limits: the in-memory limiter counts per process, so the configuration refuses
  `workers > 1` with rate limits unless the ledger is Redis, whose buckets every worker shares;
- policy hot reload: each worker watches the policy folder and swaps on its own; the file is
  the single source, so every worker reaches the same revision;
- signals: SIGTERM/SIGINT (drain and stop) and SIGHUP (reload access settings) sent to the
  supervisor are forwarded to every worker.

A worker that exits on its own stops the others and the supervisor exits non-zero, so the
orchestrator (Kubernetes, systemd) restarts the whole set with a clean state. A supervisor
killed outright (SIGKILL, OOM) takes its workers along: each asks the kernel for SIGTERM when
its parent dies, so no orphan keeps serving the port.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

# Set in a worker's environment: it serves instead of supervising.
WORKER_ENV = "CELGATE_WORKER"
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec; Linux-only, as SO_REUSEPORT spreading is.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def is_worker() -> bool:
    return os.environ.get(WORKER_ENV) is not None


def worker_command(config_path: Path) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config_path)]


def supervise(config_path: Path, workers: int, poll_s: float = 0.1) -> int:
    """Run `workers` worker processes until they stop; the exit status for the supervisor."""
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    try:
        for index in range(workers):
            env = {**os.environ, WORKER_ENV: str(index)}
            procs.append(
                subprocess.Popen(worker_command(config_path), env=env, preexec_fn=_die_with_parent)
            )
        log.info("started %d workers: %s", workers, " ".join(str(p.pid) for p in procs))
        while True:
            codes = [proc.poll() for proc in procs]
            if all(code is not None for code in codes):
                return 0 if stopping and all(code == 0 for code in codes) else 1
            if not stopping and any(code is not None for code in codes):
                failed = [p.pid for p, c in zip(procs, codes, strict=True) if c is not None]
                log.error("worker %s exited; stopping the others", failed)
                stopping = True
                for proc in procs:
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGTERM)
                for proc in procs:
                    proc.wait()
                return 1
            time.sleep(poll_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

"""Reloading the access settings (API keys, the key file, tenants' rate limits) while serving.

Every reload, whether from SIGHUP or from a change of `auth.api_keys_file`, starts from the
configuration file as it is on disk now plus the key file as it is now: a key revoked by one
reload can never come back through a later one (which a reload from the start-up
configuration would do). When the configuration file cannot be read or is invalid at that
moment, a key-file change is still applied, on top of the last configuration that was applied
(never the start-up one), so a revocation through the key file is not held up by an unrelated
typo.

The key file is watched by itself: its status is checked a few times a second (following the
symlink Kubernetes swaps when a Secret changes: `..data` is repointed, so the file's inode
changes), and nothing else in its folder (a log, the decision log) can trigger a reload.
An inotify watch on the file would follow the old inode after such a swap and miss the update.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from gateway.auth import Authenticator
from gateway.config import Config, ConfigError, load_config
from gateway.ratelimit import TenantRateLimiter

log = logging.getLogger(__name__)

# Seconds between two looks at the key file: well within "a second after the kubelet updated
# the volume", and one stat call each.
POLL_INTERVAL_S = 0.25

Signature = tuple[str, int, int, int, int] | None


def file_signature(path: Path) -> Signature:
    """What identifies the file's current content: the resolved target (a symlink swap changes
    it), inode, device, size and modification time. None when the file is missing."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return (real, st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


async def watch_file(
    path: Path, stop: asyncio.Event, interval: float = POLL_INTERVAL_S
) -> AsyncIterator[None]:
    """Yield each time `path` (the file itself, through any symlinks) changes, until `stop`."""
    last = file_signature(path)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await stop.wait()
        if stop.is_set():
            return
        current = file_signature(path)
        if current != last:
            last = current
            yield


class AccessReloader:
    """Applies the access settings of the current configuration file and key file."""

    def __init__(
        self,
        config: Config,
        config_path: Path | None,
        authenticator: Authenticator,
        limiter: TenantRateLimiter,
    ) -> None:
        self._config_path = config_path
        self._authenticator = authenticator
        self._limiter = limiter
        # The configuration whose access settings are in force.
        self.applied = config
        # Successful reloads (a test and an operator can count them).
        self.reloads = 0

    def _current_config(self, *, strict: bool) -> Config | None:
        if self._config_path is None:
            return self.applied
        try:
            return load_config(self._config_path)
        except ConfigError as exc:
            if strict:
                log.error("configuration reload failed, keeping the previous settings:\n%s", exc)
                return None
            log.error(
                "configuration file unusable; applying the key file with the settings last"
                " loaded:\n%s",
                exc,
            )
            return self.applied

    def apply(self, config: Config) -> bool:
        """Take `config`'s access settings plus the current key file; False (old set kept,
        error logged) when the key file is malformed."""
        try:
            self._authenticator.reload(config)
        except ConfigError as exc:
            log.error("API key reload failed, keeping the previous keys:\n%s", exc)
            return False
        self._limiter.reload(config)
        self.applied = config
        self.reloads += 1
        return True

    def reload_config(self) -> bool:
        """SIGHUP: re-read the configuration file and the key file."""
        config = self._current_config(strict=True)
        if config is None or not self.apply(config):
            return False
        log.info("access settings reloaded")
        return True

    def reload_keys(self, path: Path) -> bool:
        """The key file changed: re-read it, with the configuration file as it is now."""
        config = self._current_config(strict=False)
        if config is None or not self.apply(config):
            return False
        log.info("API keys reloaded from %s", path)
        return True

    async def watch_keys(self, path: Path, stop: asyncio.Event) -> None:
        async for _ in watch_file(path, stop):
            self.reload_keys(path)

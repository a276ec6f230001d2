"""Per-tenant rate limits: token buckets for requests and for tokens per minute.

Each bucket holds at most one minute's allowance and refills continuously. `check` charges one
request and the estimated tokens before the call, both or neither; `correct` charges the
difference once the real usage is known (a refund when the estimate was high), so the token
bucket may go into debt and later calls wait it out. A call estimated above a whole minute's
allowance is charged the full bucket rather than refused forever.

Two interchangeable implementations: `RateLimiter` (one process) and `RedisRateLimiter`
(replicas share the buckets through the ledger's Redis; one Lua script per call keeps the
read-refill-charge atomic).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Final, Protocol

import redis.asyncio as aioredis

from gateway.budget.redis import bounded, redis_client
from gateway.clock import Seconds
from gateway.config import Config
from gateway.errors import RateLimited, Unavailable

log = logging.getLogger(__name__)

_REQUESTS: Final = "requests_per_minute"
_TOKENS: Final = "tokens_per_minute"
_ROUTE: Final = "route_requests_per_minute"


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-minute capacities; 0 means that dimension is not limited."""

    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    # Route calls: their own bucket (a dry run must not use up the chat allowance, and must
    # not be free either: it runs the whole inspection).
    route_requests_per_minute: int = 0

    @property
    def route(self) -> Limits:
        """The limits of the tenant's Route bucket (requests only)."""
        return Limits(requests_per_minute=self.route_requests_per_minute)


def limits_from_config(config: Config) -> dict[str, Limits]:
    """Only tenants with a `rate_limit` appear; everyone else is unlimited."""
    out: dict[str, Limits] = {}
    for name, tenant in config.tenants.items():
        rl = tenant.rate_limit
        if rl is None:
            continue
        route = rl.route_requests_per_minute or rl.requests_per_minute or 0
        if rl.requests_per_minute or rl.tokens_per_minute or route:
            out[name] = Limits(rl.requests_per_minute or 0, rl.tokens_per_minute or 0, route)
    return out


class TenantRateLimiter(Protocol):
    async def check(self, tenant: str, estimated_tokens: int, now: float | None = None) -> None:
        """Charge one request and `estimated_tokens`, or raise RateLimited (nothing charged)."""

    async def correct(self, tenant: str, delta_tokens: int, now: float | None = None) -> None:
        """Charge `actual - estimated` tokens (negative refunds) after the call."""

    async def check_route(self, tenant: str, now: float | None = None) -> None:
        """Charge one Route call to the tenant's Route bucket, or raise RateLimited."""

    def reload(self, config: Config) -> None:
        """Take new limits; bucket levels carry over, clamped to the new capacity."""

    async def aclose(self) -> None: ...


def _refused(tenant: str, limit: str, capacity: int, wait_s: float) -> RateLimited:
    # Round up so a client that waits exactly this long is let in.
    retry = math.ceil(wait_s * 1000) / 1000
    return RateLimited(
        f"tenant {tenant!r} is over its {limit} limit of {capacity}; retry in {retry:.3f} s",
        retry_after_s=retry,
        tenant=tenant,
        limit=limit,
    )


def _refill(level: float, elapsed: float, capacity: int) -> float:
    return min(float(capacity), level + elapsed * capacity / 60.0)


@dataclass(slots=True)
class _Bucket:
    requests: float
    tokens: float
    updated: float


class RateLimiter:
    """In-process buckets. Not shared between processes; `clock` is injectable for tests."""

    def __init__(self, limits: dict[str, Limits], clock: Seconds = time.monotonic) -> None:
        self._limits = limits
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._route_buckets: dict[str, _Bucket] = {}

    @classmethod
    def from_config(cls, config: Config, clock: Seconds = time.monotonic) -> RateLimiter:
        return cls(limits_from_config(config), clock)

    def reload(self, config: Config) -> None:
        self._limits = limits_from_config(config)

    def _bucket(
        self, tenant: str, limits: Limits, now: float, buckets: dict[str, _Bucket] | None = None
    ) -> _Bucket:
        buckets = self._buckets if buckets is None else buckets
        bucket = buckets.get(tenant)
        if bucket is None:
            bucket = _Bucket(limits.requests_per_minute, limits.tokens_per_minute, now)
            buckets[tenant] = bucket
            return bucket
        # A clock that steps back refills nothing rather than draining the bucket.
        elapsed = max(0.0, now - bucket.updated)
        bucket.requests = _refill(bucket.requests, elapsed, limits.requests_per_minute)
        bucket.tokens = _refill(bucket.tokens, elapsed, limits.tokens_per_minute)
        bucket.updated = max(bucket.updated, now)
        return bucket

    async def check_route(self, tenant: str, now: float | None = None) -> None:
        limits = self._limits.get(tenant)
        if limits is None or not limits.route_requests_per_minute:
            return
        route = limits.route
        bucket = self._bucket(
            tenant, route, self._clock() if now is None else now, self._route_buckets
        )
        if bucket.requests < 1:
            wait = (1 - bucket.requests) * 60.0 / route.requests_per_minute
            raise _refused(tenant, _ROUTE, route.requests_per_minute, wait)
        bucket.requests -= 1

    async def check(self, tenant: str, estimated_tokens: int, now: float | None = None) -> None:
        limits = self._limits.get(tenant)
        if limits is None or not (limits.requests_per_minute or limits.tokens_per_minute):
            return
        # No await below: on one event loop the whole read-charge is atomic.
        bucket = self._bucket(tenant, limits, self._clock() if now is None else now)
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        cost = min(max(estimated_tokens, 0), tpm)
        wait, limit, capacity = 0.0, "", 0
        if rpm and bucket.requests < 1:
            wait, limit, capacity = (1 - bucket.requests) * 60.0 / rpm, _REQUESTS, rpm
        if tpm and bucket.tokens < cost:
            token_wait = (cost - bucket.tokens) * 60.0 / tpm
            if token_wait > wait:
                wait, limit, capacity = token_wait, _TOKENS, tpm
        if wait > 0:
            raise _refused(tenant, limit, capacity, wait)
        if rpm:
            bucket.requests -= 1
        if tpm:
            bucket.tokens -= cost

    async def correct(self, tenant: str, delta_tokens: int, now: float | None = None) -> None:
        limits = self._limits.get(tenant)
        if limits is None or not limits.tokens_per_minute or not delta_tokens:
            return
        bucket = self._bucket(tenant, limits, self._clock() if now is None else now)
        bucket.tokens = min(float(limits.tokens_per_minute), bucket.tokens - delta_tokens)

    async def aclose(self) -> None:
        return None


# KEYS[1]: the tenant's bucket hash. ARGV: now (s), rpm, tpm, request cost, token cost, mode.
# mode "check" charges both costs or neither; mode "correct" always applies the token delta.
# Returns {allowed, wait in microseconds, limit name}. Lua numbers returned to Redis become
# integers, hence microseconds.
_SCRIPT: Final = """
local now = tonumber(ARGV[1])
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local rcost = tonumber(ARGV[4])
local tcost = tonumber(ARGV[5])
local s = redis.call('HMGET', KEYS[1], 'r', 't', 'ts')
local r = tonumber(s[1]) or rpm
local t = tonumber(s[2]) or tpm
local ts = tonumber(s[3]) or now
local elapsed = now - ts
if elapsed < 0 then elapsed = 0 end
if rpm > 0 then r = math.min(rpm, r + elapsed * rpm / 60) end
if tpm > 0 then t = math.min(tpm, t + elapsed * tpm / 60) end
local wait = 0
local which = ''
if ARGV[6] == 'check' then
  if rpm > 0 and r < rcost then
    wait = (rcost - r) * 60 / rpm
    which = 'requests_per_minute'
  end
  if tpm > 0 and t < tcost then
    local w = (tcost - t) * 60 / tpm
    if w > wait then
      wait = w
      which = 'tokens_per_minute'
    end
  end
  if wait == 0 then
    r = r - rcost
    t = t - tcost
  end
else
  t = math.min(tpm, t - tcost)
end
if ts < now then ts = now end
redis.call('HSET', KEYS[1], 'r', tostring(r), 't', tostring(t), 'ts', tostring(ts))
-- Keep the key until both buckets are full again; after that a missing key means full.
local full = 0
if rpm > 0 then full = math.max(full, (rpm - r) * 60 / rpm) end
if tpm > 0 then full = math.max(full, (tpm - t) * 60 / tpm) end
redis.call('PEXPIRE', KEYS[1], math.ceil(full * 1000) + 1000)
if wait > 0 then
  return {0, math.ceil(wait * 1000000), which}
end
return {1, 0, ''}
"""

_WHAT: Final = "the rate limiter's Redis (ledger.url)"


class RedisRateLimiter:
    """Buckets in Redis, shared by every replica. Fails closed when Redis cannot be reached.

    `now` is wall-clock time because replicas do not share a monotonic clock; a replica whose
    clock lags another's refills nothing rather than draining the bucket.
    """

    KEY_PREFIX: Final = "celgate:ratelimit:"

    def __init__(
        self,
        client: aioredis.Redis,
        limits: dict[str, Limits],
        clock: Seconds = time.time,
        *,
        timeout_s: float = 0.5,
    ) -> None:
        self._client = client
        self._limits = limits
        self._clock = clock
        self._timeout = timeout_s
        self._script = client.register_script(_SCRIPT)

    @classmethod
    def from_url(
        cls, url: str, limits: dict[str, Limits], clock: Seconds = time.time, timeout_s: float = 0.5
    ) -> RedisRateLimiter:
        # Bounded: a stalled Redis must fail a request within `timeout_s`, not hang it.
        client = redis_client(url, timeout_s, decode_responses=False)
        return cls(client, limits, clock, timeout_s=timeout_s)

    def reload(self, config: Config) -> None:
        self._limits = limits_from_config(config)

    async def _run(
        self, tenant: str, limits: Limits, now: float | None, *args: int | str, suffix: str = ""
    ) -> list[Any]:
        # `{tenant}` is a hash tag: the key stays on one slot in Redis Cluster.
        key = f"{self.KEY_PREFIX}{{{tenant}}}{suffix}"
        at = self._clock() if now is None else now
        result = await bounded(
            self._script(
                keys=[key],
                args=[repr(at), limits.requests_per_minute, limits.tokens_per_minute, *args],
            ),
            self._timeout,
            _WHAT,
        )
        return list(result)

    async def check_route(self, tenant: str, now: float | None = None) -> None:
        limits = self._limits.get(tenant)
        if limits is None or not limits.route_requests_per_minute:
            return
        route = limits.route
        allowed, wait_us, _which = await self._run(
            tenant, route, now, 1, 0, "check", suffix=":route"
        )
        if allowed != 1:
            raise _refused(tenant, _ROUTE, route.requests_per_minute, int(wait_us) / 1e6)

    async def check(self, tenant: str, estimated_tokens: int, now: float | None = None) -> None:
        limits = self._limits.get(tenant)
        if limits is None or not (limits.requests_per_minute or limits.tokens_per_minute):
            return
        rcost = 1 if limits.requests_per_minute else 0
        tcost = min(max(estimated_tokens, 0), limits.tokens_per_minute)
        allowed, wait_us, which = await self._run(tenant, limits, now, rcost, tcost, "check")
        if allowed != 1:
            limit = which.decode() if isinstance(which, bytes) else str(which)
            capacity = (
                limits.requests_per_minute if limit == _REQUESTS else limits.tokens_per_minute
            )
            raise _refused(tenant, limit, capacity, int(wait_us) / 1e6)

    async def correct(self, tenant: str, delta_tokens: int, now: float | None = None) -> None:
        limits = self._limits.get(tenant)
        if limits is None or not limits.tokens_per_minute or not delta_tokens:
            return
        try:
            await self._run(tenant, limits, now, 0, delta_tokens, "correct")
        except Unavailable:
            # The call was admitted and answered; losing its correction only makes the
            # bucket as generous as the estimate was. Never fail an answered call for it.
            log.warning("rate limit correction skipped: %s did not answer", _WHAT)

    async def aclose(self) -> None:
        await self._client.aclose()


def open_rate_limiter(config: Config, clock: Seconds | None = None) -> TenantRateLimiter:
    """Redis buckets when the ledger uses Redis (same URL), so replicas share one limit."""
    limits = limits_from_config(config)
    if config.ledger.backend == "redis":
        return RedisRateLimiter.from_url(
            config.ledger.redis_url(),
            limits,
            clock or time.time,
            timeout_s=config.ledger.redis_timeout_s,
        )
    return RateLimiter(limits, clock or time.monotonic)

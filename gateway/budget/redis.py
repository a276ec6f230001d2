"""The shared ledger for several replicas: one Redis, every mutation a Lua script.

Redis runs a script without interleaving any other command, so a reservation's check and hold
are one atomic step for every replica. Per bucket there are three keys: a hash with the settled
`spent` and the live `reserved` total, a sorted set of holds scored by expiry (so holds of a
crashed replica can be found and dropped), and a hash of each hold's amount. Charges go to one
stream for `celgate costs`. The scripts touch keys of several buckets and the stream, so the
target is a single Redis primary (with replicas or Sentinel), not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from gateway.budget.journal import Pending, SettlementJournal
from gateway.budget.ledger import (
    Bucket,
    Charge,
    Clock,
    HoldResult,
    Ledger,
    Reservation,
    Totals,
    to_usd,
    utc_now,
)
from gateway.config import Config
from gateway.errors import Reason, Unavailable

log = logging.getLogger(__name__)

PREFIX = "celgate:"
CHARGES_KEY = PREFIX + "charges"
# Bucket keys outlive their window so last period's figures stay readable for a while.
_RETENTION = timedelta(days=40)

# Shared by every script: drop the holds of bucket i that expired by `now`.
_SWEEP = """
local function sweep(b, z, a, now)
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  if #expired > 0 then
    local amounts = redis.call('HMGET', a, unpack(expired))
    local sum = 0
    for _, v in ipairs(amounts) do sum = sum + (tonumber(v) or 0) end
    redis.call('HINCRBY', b, 'reserved', -sum)
    redis.call('ZREM', z, unpack(expired))
    redis.call('HDEL', a, unpack(expired))
  end
  local v = redis.call('HMGET', b, 'spent', 'reserved')
  return tonumber(v[1]) or 0, tonumber(v[2]) or 0
end
"""

# KEYS: 3 per bucket. ARGV: now. Returns spent, reserved per bucket.
_LOAD = (
    _SWEEP
    + """
local out = {}
for i = 1, #KEYS / 3 do
  local s, r = sweep(KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i], ARGV[1])
  out[#out+1] = s; out[#out+1] = r
end
return out
"""
)

# KEYS: 3 per bucket. ARGV: reservation, amount, now, expires_at, then per bucket:
# limit, hard (1/0), ttl seconds. Returns blocked index (0 = held) then spent, reserved per
# bucket as they were before the hold.
_HOLD = (
    _SWEEP
    + """
local id, amount, now, expires = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local n = #KEYS / 3
local out = {0}
for i = 1, n do
  local s, r = sweep(KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i], now)
  out[#out+1] = s; out[#out+1] = r
  local limit, hard = tonumber(ARGV[2+3*i]), ARGV[3+3*i]
  if out[1] == 0 and hard == '1' and s + r + amount > limit then out[1] = i end
end
if out[1] == 0 then
  for i = 1, n do
    local b, z, a, ttl = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i], ARGV[4+3*i]
    redis.call('HINCRBY', b, 'reserved', amount)
    redis.call('ZADD', z, expires, id)
    redis.call('HSET', a, id, amount)
    redis.call('EXPIRE', b, ttl); redis.call('EXPIRE', z, ttl); redis.call('EXPIRE', a, ttl)
  end
end
return out
"""
)

# Drop reservation ARGV[1]'s hold from bucket i (helper for settle and release).
_DROP = """
local function drop(b, z, a, id)
  local amount = tonumber(redis.call('HGET', a, id))
  if amount then
    redis.call('HINCRBY', b, 'reserved', -amount)
    redis.call('HDEL', a, id)
    redis.call('ZREM', z, id)
  end
end
"""

# KEYS: 3 per bucket, then the settled marker, then the charges stream. ARGV: reservation,
# cost, marker ttl, then per bucket ttl, then the charge's stream fields. Returns 1, or 0 when
# the reservation was already settled.
_CHARGE = (
    _DROP
    + """
local nb = (#KEYS - 2) / 3
local marker, stream = KEYS[#KEYS-1], KEYS[#KEYS]
if not redis.call('SET', marker, '1', 'NX', 'EX', ARGV[3]) then return 0 end
local id, cost = ARGV[1], tonumber(ARGV[2])
for i = 1, nb do
  local b = KEYS[3*i-2]
  drop(b, KEYS[3*i-1], KEYS[3*i], id)
  redis.call('HINCRBY', b, 'spent', cost)
  redis.call('EXPIRE', b, ARGV[3+i])
end
local fields = {}
for j = 4 + nb, #ARGV do fields[#fields+1] = ARGV[j] end
redis.call('XADD', stream, '*', unpack(fields))
return 1
"""
)

# KEYS: 3 per bucket. ARGV: reservation.
_RELEASE = (
    _DROP
    + """
for i = 1, #KEYS / 3 do drop(KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i], ARGV[1]) end
return 1
"""
)


def _keys(buckets: Sequence[Bucket]) -> list[str]:
    keys: list[str] = []
    for b in buckets:
        keys += [f"{PREFIX}b:{b.key}", f"{PREFIX}z:{b.key}", f"{PREFIX}a:{b.key}"]
    return keys


def _ttl(bucket: Bucket, now: datetime) -> int:
    return max(1, int((bucket.end + _RETENTION - now).total_seconds()))


def _pairs(values: Sequence[Any]) -> list[Totals]:
    return [Totals(int(values[i]), int(values[i + 1])) for i in range(0, len(values), 2)]


_POOL_SIZE = 16


def redis_client(url: str, timeout_s: float, *, decode_responses: bool) -> aioredis.Redis:
    """A client whose every call is bounded by `timeout_s`: socket timeouts for connect and
    read, and no hidden retries (redis-py's default retries with backoff would hold a caller
    for seconds on a frozen server)."""
    # A bounded pool: a burst of requests shares a few connections (each call takes well
    # under a millisecond in Redis) instead of opening one each, whose handshakes would
    # crowd the event loop and the socket timeouts.
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=_POOL_SIZE,
        timeout=None,  # the wait for a connection counts against `bounded`'s limit
        decode_responses=decode_responses,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    return aioredis.Redis.from_pool(pool)


# The whole call (waiting for a connection, connecting, writing, reading) is bounded by this
# many times the socket timeout: the socket timeouts catch a server that does not answer, and
# this bound catches anything else, without failing calls that merely queued behind a burst.
_CALL_BOUND = 4


async def bounded(awaitable: Awaitable[Any], timeout_s: float, what: str) -> Any:
    """Await one Redis call on a `redis_client` (socket timeouts `timeout_s`), bounded as a
    whole too; any failure is `Unavailable` naming `what` and the kind of failure, never the
    URL (it may carry a password)."""
    try:
        async with asyncio.timeout(timeout_s * _CALL_BOUND):
            return await awaitable
    except (TimeoutError, RedisTimeout):
        raise Unavailable(
            f"{what} did not answer within {timeout_s * 1000:g} ms (ledger.redis_timeout_s)",
            reason=Reason.LEDGER_UNAVAILABLE,
        ) from None
    except RedisError as exc:
        raise Unavailable(
            f"{what} is unreachable: {type(exc).__name__}", reason=Reason.LEDGER_UNAVAILABLE
        ) from None


# Seconds between attempts to replay journaled settlements while Redis stays away.
_REPLAY_INTERVAL_S = 0.5


class RedisLedger(Ledger):
    def __init__(
        self,
        config: Config,
        url: str,
        *,
        clock: Clock = utc_now,
        journal_path: Path | None = None,
    ) -> None:
        super().__init__(config, clock=clock)
        self._timeout = config.ledger.redis_timeout_s
        self._redis: aioredis.Redis = redis_client(url, self._timeout, decode_responses=True)
        self._load_script = self._redis.register_script(_LOAD)
        self._hold_script = self._redis.register_script(_HOLD)
        self._charge_script = self._redis.register_script(_CHARGE)
        self._release_script = self._redis.register_script(_RELEASE)
        self._marker_ttl = int(self._ttl.total_seconds()) * 2 + 3600
        self._journal_path = journal_path or config.resolve(config.ledger.journal_path)
        self.journal: SettlementJournal | None = None
        self._replay_lock = asyncio.Lock()
        self._replayer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def open(self) -> None:
        self.journal = await asyncio.to_thread(SettlementJournal, self._journal_path)
        await self._call(self._redis.ping())
        if len(self.journal):
            log.warning(
                "%d settlements from an earlier Redis outage are waiting; replaying them",
                len(self.journal),
            )
        self._replayer = asyncio.get_running_loop().create_task(self._replay_forever())

    async def _call(self, awaitable: Any) -> Any:
        return await bounded(awaitable, self._timeout, "the Redis budget ledger (ledger.url)")

    async def replay(self) -> int:
        """Write the journaled settlements to Redis, oldest first; returns how many are left.
        Raises Unavailable (and keeps the rest) when Redis still does not answer."""
        journal = self.journal
        if journal is None or not len(journal):
            return 0
        async with self._replay_lock:
            while len(journal):
                batch = await asyncio.to_thread(journal.pending)
                if not batch:
                    break
                for item in batch:
                    # Already settled (the answer was lost, not the write): counted once.
                    await self._charge_now(item.reservation, item.cost, item.charge)
                    await asyncio.to_thread(journal.remove, item.reservation.id)
            log.info("journaled settlements replayed to Redis")
            return len(journal)

    async def _replay_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_REPLAY_INTERVAL_S):
                    await self._wake.wait()
            self._wake.clear()
            if self.journal is None or not len(self.journal):
                continue
            try:
                await self.replay()
            except Unavailable:
                continue
            except Exception as exc:  # keep the replayer alive; the entries stay on disk
                log.error("replaying journaled settlements failed: %s", type(exc).__name__)

    async def _load(self, buckets: Sequence[Bucket], now: datetime) -> list[Totals]:
        values = await self._call(self._load_script(keys=_keys(buckets), args=[now.timestamp()]))
        return _pairs(values)

    async def _hold(
        self,
        reservation_id: str,
        buckets: Sequence[Bucket],
        amount: int,
        now: datetime,
        expires_at: datetime,
    ) -> HoldResult:
        if self.journal is not None and len(self.journal):
            # Charges of answered calls come first: no new hold sees a budget that does not
            # yet count them (fails closed while Redis is still away).
            await self.replay()
        args: list[Any] = [reservation_id, amount, now.timestamp(), expires_at.timestamp()]
        for b in buckets:
            args += [b.limit_nanos, 1 if b.hard else 0, _ttl(b, now)]
        values = await self._call(self._hold_script(keys=_keys(buckets), args=args))
        blocked = int(values[0])
        return HoldResult(tuple(_pairs(values[1:])), blocked - 1 if blocked else None)

    async def _charge(self, reservation: Reservation, cost: int, charge: Charge) -> bool:
        try:
            return await self._charge_now(reservation, cost, charge)
        except Unavailable:
            if self.journal is None:
                raise
        # The call was answered, so it must be paid for: keep the charge on local disk until
        # Redis takes it (the reservation keeps holding the estimate meanwhile).
        await asyncio.to_thread(self.journal.add, Pending(reservation, cost, charge))
        log.warning(
            "Redis unreachable while settling a charge; journaled to %s for replay",
            self._journal_path,
        )
        self._wake.set()
        return True

    async def _charge_now(self, reservation: Reservation, cost: int, charge: Charge) -> bool:
        keys = [*_keys(reservation.buckets), f"{PREFIX}settled:{reservation.id}", CHARGES_KEY]
        args: list[Any] = [reservation.id, cost, self._marker_ttl]
        args += [_ttl(b, charge.at) for b in reservation.buckets]
        args += [
            "at", charge.at.timestamp(),
            "tenant", charge.tenant,
            "model", charge.model,
            "task_type", charge.task_type,
            "labels", json.dumps(dict(charge.labels), sort_keys=True),
            "cost", cost,
        ]  # fmt: skip
        return bool(await self._call(self._charge_script(keys=keys, args=args)))

    async def _unhold(self, reservation: Reservation) -> None:
        keys = _keys(reservation.buckets)
        await self._call(self._release_script(keys=keys, args=[reservation.id]))

    async def charges(self, since: datetime | None = None) -> list[Charge]:
        start = since.timestamp() if since else float("-inf")
        out: list[Charge] = []
        cursor = "-"
        while True:
            batch = await self._call(self._redis.xrange(CHARGES_KEY, min=cursor, count=5000))
            for _entry_id, f in batch:
                at = float(f["at"])
                if at >= start:
                    out.append(
                        Charge(
                            at=datetime.fromtimestamp(at, UTC),
                            tenant=f["tenant"],
                            model=f["model"],
                            task_type=f["task_type"],
                            cost_usd=to_usd(int(f["cost"])),
                            labels=json.loads(f["labels"]),
                        )
                    )
            if len(batch) < 5000:
                break
            cursor = "(" + batch[-1][0]
        out.sort(key=lambda c: c.at)
        return out

    async def aclose(self) -> None:
        if self._replayer is not None:
            self._replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replayer
        if self.journal is not None and len(self.journal):
            with contextlib.suppress(Unavailable):
                await self.replay()
        await self._redis.aclose()
        if self.journal is not None:
            self.journal.close()

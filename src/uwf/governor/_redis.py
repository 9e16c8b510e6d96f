"""Governor state in Redis (`UWF_GOVERNOR_URL=redis://…`), shared by every worker.

Each admission is one Lua script, which Redis runs atomically: read the pause, drop expired
leases from the connection's lease set (a sorted set scored by expiry, so a killed worker's
slot frees itself), check the daily counter and the GCRA's theoretical arrival time, then
count the request against all of them. Keys share a `{connection}` hash tag so a script only
touches one Redis Cluster slot. Times are passed in by the caller (the governor's clock), and
written with 17 significant digits: Lua's default 14 would round the schedule by up to 0.1 ms.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from uwf.governor._state import Budget, Grant

__all__ = ["RedisState"]

_ADMIT = """
local now = tonumber(ARGV[1])
local paused = redis.call('HMGET', KEYS[1], 'until', 'reason')
local paused_until = tonumber(paused[1])
if paused_until and paused_until > now then
  return {0, 'paused', string.format('%.17g', paused_until - now), paused[2]}
end
local concurrency = tonumber(ARGV[6])
if concurrency then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', string.format('%.17g', now))
  if redis.call('ZCARD', KEYS[4]) >= concurrency then
    local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
    return {0, 'concurrency', string.format('%.17g', tonumber(first[2]) - now)}
  end
end
local daily = tonumber(ARGV[4])
local day_end = tonumber(ARGV[5])
if daily then
  if tonumber(redis.call('GET', KEYS[3]) or '0') >= daily then
    return {0, 'daily', string.format('%.17g', day_end - now)}
  end
end
local interval = tonumber(ARGV[2])
if interval then
  local tolerance = tonumber(ARGV[3])
  local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
  if tat < now then tat = now end
  if tat > now + tolerance then
    return {0, 'rate', string.format('%.17g', tat - tolerance - now)}
  end
  tat = tat + interval
  redis.call('SET', KEYS[2], string.format('%.17g', tat), 'PX',
    math.ceil((tat - now) * 1000) + 1000)
end
if daily then
  redis.call('INCR', KEYS[3])
  redis.call('EXPIRE', KEYS[3], math.ceil(day_end - now) + 3600)
end
if concurrency then
  local lease = tonumber(ARGV[7])
  redis.call('ZADD', KEYS[4], string.format('%.17g', now + lease), ARGV[8])
  redis.call('PEXPIRE', KEYS[4], math.ceil(lease * 1000) + 1000)
end
return {1}
"""

_PAUSE = """
local current = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
if tonumber(ARGV[1]) > current then
  redis.call('HSET', KEYS[1], 'until', ARGV[1], 'reason', ARGV[2])
end
"""

_PACE = """
local now = tonumber(ARGV[1])
local current = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
if current <= now then
  current = now
  redis.call('HSET', KEYS[1], 'reason', ARGV[3])
end
redis.call('HSET', KEYS[1], 'until', string.format('%.17g', current + tonumber(ARGV[2])))
"""

_RENEW = """
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], 3600000)
"""


class RedisState:
    """State in Redis: one Lua script per admission, shared by every worker.

    Example:
        state = RedisState.from_url("redis://127.0.0.1:6379/0")
        governor = Governor(state)
    """

    def __init__(self, client: Redis, prefix: str = "uwf:governor:") -> None:
        self._client = client
        self._prefix = prefix
        self._admit = client.register_script(_ADMIT)
        self._pause = client.register_script(_PAUSE)
        self._pace = client.register_script(_PACE)
        self._renew = client.register_script(_RENEW)

    @classmethod
    def from_url(cls, url: str, prefix: str = "uwf:governor:") -> RedisState:
        """A state on its own connection pool to the Redis at `url`."""
        return cls(Redis.from_url(url), prefix)

    def _key(self, key: str, part: str) -> str:
        return f"{self._prefix}{{{key}}}:{part}"

    async def acquire(self, key: str, now: float, budget: Budget, token: str) -> Grant:
        day = f"day:{budget.day_start:.0f}"  # a counter per UTC day; each expires after its day
        keys = [self._key(key, p) for p in ("pause", "rate", day, "leases")]
        args: list[Any] = [
            now,
            _arg(budget.interval),
            budget.tolerance,
            _arg(budget.daily),
            budget.day_start + 86_400,
            _arg(budget.concurrency),
            budget.lease_seconds,
            token,
        ]
        reply = await self._admit(keys=keys, args=args)
        if int(reply[0]) == 1:
            return Grant(True, lease=token if budget.concurrency is not None else None)
        limit = _text(reply[1])
        reason = _text(reply[3]) if len(reply) > 3 and reply[3] is not None else None
        return Grant(False, max(float(reply[2]), 0.0), limit, reason)

    async def release(self, key: str, lease: str) -> None:
        await self._client.zrem(self._key(key, "leases"), lease)

    async def renew(self, key: str, leases: list[str], until: float) -> None:
        await self._renew(keys=[self._key(key, "leases")], args=[repr(until), *leases])

    async def paused_until(self, key: str) -> tuple[float, str | None]:
        until, reason = await self._client.hmget(self._key(key, "pause"), ["until", "reason"])
        if until is None:
            return 0.0, None
        return float(until), _text(reason) if reason is not None else None

    async def pause(self, key: str, until: float, reason: str) -> None:
        await self._pause(keys=[self._key(key, "pause")], args=[repr(until), reason])

    async def pace(self, key: str, now: float, interval: float, reason: str) -> None:
        await self._pace(keys=[self._key(key, "pause")], args=[now, interval, reason])

    async def close(self) -> None:
        await self._client.aclose()


def _arg(value: float | None) -> float | str:
    return "" if value is None else value  # Lua's tonumber('') is nil: the limit is unset


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

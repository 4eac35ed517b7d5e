"""One politeness budget across every worker of a queue: per-host slots,
per-host rate and cool-downs, kept in Redis.

Before a worker hands a request to its engine, it asks Redis for the
request's host (``host:port``, as ``Fetcher.host_stats`` names it), in one
script call for a whole batch of requests (:data:`ACQUIRE`):

- a **cool-down** the host is in (a 429 or 503 with ``Retry-After`` that any
  worker received): wait until it ends;
- a **slot** (``--per-host``): a lease in the host's sorted set, scored by
  its expiry on Redis's clock. A worker releases it when it commits the
  request's result, and its heartbeat extends the leases it holds, so a dead
  worker's slots free themselves after ``reclaim_after``;
- a **rate** token (``--per-host-rate``): GCRA on Redis's clock (``TIME``),
  the theoretical arrival time in one key per host, ``burst`` requests of
  tolerance. A request may reserve a start up to :data:`HORIZON_MS` ahead:
  the worker holds it until then, so a rate-limited host costs one call per
  horizon, not one per request.

A request refused waits in the worker (parked by host) and is asked for
again when Redis said (a rate or a cool-down), or when the worker frees one of
that host's slots, or after a short poll (a slot another worker holds).

The slot is held from the request's admission to its result, retries and
their waits included: more cautious than the engine's own slots. Redirects
to another host, and retries, are held to that host's limits by the worker's
engine only.
"""

from __future__ import annotations

from typing import Final

from fanout.engine.hoststate import shown_host
from fanout.models import Failure, Request
from fanout.urls import host_key, parse_request_url

__all__ = ["ACQUIRE", "HOLD", "HORIZON_MS", "host_of"]

HORIZON_MS: Final = 1000
"""How far ahead (ms) a rate token may be reserved."""

# KEYS: none (the host keys are built from ARGV[1], the queue's key prefix,
# all under the queue's hash tag). ARGV: prefix, per_host (0: no limit),
# interval_ms (0: no rate), tolerance_ms, lease_ms, horizon_ms, then
# (host, entry id) pairs. Returns one number per pair: >= 0 granted, start
# after that many ms; -1 no slot free (ask again later); < -1 ask again in
# (-that - 1) ms (a cool-down, or no rate token within the horizon).
ACQUIRE: Final = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local prefix, per_host = ARGV[1], tonumber(ARGV[2])
local interval, tolerance = tonumber(ARGV[3]), tonumber(ARGV[4])
local lease, horizon = tonumber(ARGV[5]), tonumber(ARGV[6])
local out = {}
local cleaned = {}
for i = 7, #ARGV, 2 do
  local host, member = ARGV[i], ARGV[i + 1]
  local answer = 0
  local cool = redis.call('PTTL', prefix .. 'cool:' .. host)
  if cool > 0 then
    answer = -cool - 1
  end
  local slots = prefix .. 'slots:' .. host
  if answer == 0 and per_host > 0 then
    if not cleaned[host] then
      redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
      cleaned[host] = true
    end
    if redis.call('ZCARD', slots) >= per_host then answer = -1 end
  end
  local tat_key = prefix .. 'tat:' .. host
  local tat = now
  if answer == 0 and interval > 0 then
    tat = math.max(tonumber(redis.call('GET', tat_key) or '0'), now)
    local start = tat - tolerance
    if start - now > horizon then
      answer = -(start - horizon - now) - 1
    else
      answer = math.max(start - now, 0)
    end
  end
  if answer >= 0 then
    if interval > 0 then
      redis.call('SET', tat_key, tat + interval, 'PX', tat + interval - now + 60000)
    end
    if per_host > 0 then
      redis.call('ZADD', slots, now + lease, member)
      redis.call('PEXPIRE', slots, lease * 2)
    end
  end
  table.insert(out, answer)
end
return out
"""

# ARGV: prefix, lease_ms, n, then n (host, entry id) pairs: the leases a live
# worker holds, extended; then (host, ms) pairs: cool-downs its engine is in,
# shared (a longer one already there is kept).
HOLD: Final = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local prefix, lease, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local last = 3 + 2 * n
for i = 4, last, 2 do
  local slots = prefix .. 'slots:' .. ARGV[i]
  redis.call('ZADD', slots, 'XX', now + lease, ARGV[i + 1])
  redis.call('PEXPIRE', slots, lease * 2)
end
for i = last + 1, #ARGV, 2 do
  local cool_key, ms = prefix .. 'cool:' .. ARGV[i], tonumber(ARGV[i + 1])
  if redis.call('PTTL', cool_key) < ms then
    redis.call('SET', cool_key, '1', 'PX', ms)
  end
end
return 1
"""


def host_of(request: Request) -> str | None:
    """The host a request's politeness is counted on (``host:port``), or None
    for a URL the engine will refuse anyway."""
    url = parse_request_url(request)
    return None if isinstance(url, Failure) else shown_host(host_key(url))

"""A request rate shared by every worker of a project.

Providers limit requests per second per account, not per worker: ten workers that each
keep under the limit still add up to ten times too many. So the slots are handed out
from one place. Each request takes the next free slot (a "generic cell rate" scheme:
slots are ``1 / rate`` seconds apart) and waits for it.

Where Django's default cache is Redis (Django's own RedisCache or django-redis), the
next free slot lives in Redis and is taken by one atomic script using Redis's clock, so
every worker on every machine shares it. Otherwise each process keeps its own, and the
``mailapi.W002`` check says so.

Slots are spaced 10% wider than ``1 / RATE_LIMIT`` so network jitter does not push two
requests into the provider's one-second window.

An outage of that Redis must not cost emails their retries (nothing was sent, and the
API was never asked). So a request that cannot reach Redis takes a slot from this
process's own limiter instead, and a warning says so (at most once per ``WARN_EVERY``
seconds per process, not once per email). Every later request tries Redis first, so the
shared limit is back as soon as Redis answers. While Redis is away each process keeps
the rate on its own: N worker processes may together go up to N times over it, and the
provider's 429s are then handled as usual.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

logger = logging.getLogger("django_mailapi")

MARGIN = 1.1
#: Seconds between two warnings that the shared limiter's Redis cannot be reached,
#: per process.
WARN_EVERY = 60.0

_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local interval = tonumber(ARGV[1])
local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
if slot < now then slot = now end
local following = slot + interval
redis.call('SET', KEYS[1], string.format('%.6f', following),
           'PX', math.ceil((following - now) * 1000) + 1000)
return string.format('%.6f', slot - now)
"""

_local_lock = threading.Lock()
_local_slots: dict[str, float] = {}
#: The slot script, registered once and run with whichever client is current. (Django's
#: RedisCache hands out a new client object per call: one registered per client would
#: keep every one of them alive.)
_script: Any = None

# The outage, as this process sees it (guarded by _local_lock).
_outage_since: float | None = None
_last_warning: float | None = None
_fallen_back: set[str] = set()


def fingerprint(api_key: str) -> str:
    """Names the key's bucket without storing the key (nor anything it can be read from)."""
    return hashlib.sha256(f"django-mailapi:{api_key}".encode()).hexdigest()[:24]


def redis_client() -> tuple[Any, Any] | None:
    """(redis client, cache backend) if the default cache is Redis, else None."""
    from django.core.cache import caches

    try:
        backend = caches["default"]
    except Exception:
        return None
    inner = getattr(backend, "_cache", None)
    if inner is not None and hasattr(inner, "get_client"):  # Django's RedisCache
        return inner.get_client(None, write=True), backend
    client = getattr(backend, "client", None)
    if client is not None and hasattr(client, "get_client"):  # django-redis
        return client.get_client(write=True), backend
    return None


def is_shared() -> bool:
    return redis_client() is not None


def _unreachable() -> tuple[type[BaseException], ...]:
    """The errors that mean "Redis cannot be asked right now"."""
    try:
        from redis.exceptions import RedisError
    except ImportError:  # pragma: no cover - a Redis cache without redis-py
        return (OSError,)
    return (RedisError, OSError)


def reserve_slot(api_key: str, rate: float) -> float:
    """Take the next slot for this API key; return the seconds to wait for it.

    The slot comes from Redis when the default cache is Redis and it answers, else from
    this process's own limiter.
    """
    interval = MARGIN / rate
    bucket = fingerprint(api_key)
    found = redis_client()
    if found is not None:
        try:
            delay = _reserve_shared(found, bucket, interval)
        except _unreachable() as exc:
            _fall_back(bucket, interval, exc)
        else:
            if _outage_since is not None:
                _recovered()
            return delay
    return _reserve_local(bucket, interval)


def _reserve_shared(found: tuple[Any, Any], bucket: str, interval: float) -> float:
    global _script
    client, backend = found
    if _script is None:
        _script = client.register_script(_SCRIPT)
    key = backend.make_key(f"mailapi:rate:{bucket}")
    return max(0.0, float(_script(keys=[key], args=[f"{interval:.6f}"], client=client)))


def _reserve_local(bucket: str, interval: float) -> float:
    with _local_lock:
        now = time.monotonic()
        slot = max(_local_slots.get(bucket, 0.0), now)
        _local_slots[bucket] = slot + interval
        return slot - now


def _fall_back(bucket: str, interval: float, exc: BaseException) -> None:
    """Note that Redis did not answer; warn unless this process warned lately."""
    global _outage_since, _last_warning
    with _local_lock:
        now = time.monotonic()
        if _outage_since is None:
            _outage_since = now
        if bucket not in _fallen_back:
            # Redis may have handed this key a slot a moment ago: the first local slot
            # is one interval away, so the switch adds no burst.
            _fallen_back.add(bucket)
            _local_slots[bucket] = max(_local_slots.get(bucket, 0.0), now + interval)
        warn = _last_warning is None or now - _last_warning >= WARN_EVERY
        if warn:
            _last_warning = now
    if warn:
        logger.warning(
            "django-mailapi: the shared rate limiter's Redis cannot be reached (%s: %s); "
            "this process keeps RATE_LIMIT with a per-process limiter until Redis answers "
            "again, so all workers together may exceed it meanwhile.",
            type(exc).__name__,
            exc,
        )


def _recovered() -> None:
    global _outage_since
    with _local_lock:
        since, _outage_since = _outage_since, None
        _fallen_back.clear()
    if since is not None:
        logger.info(
            "django-mailapi: the shared rate limiter's Redis is reachable again after "
            "%.0f s; requests share its slots again.",
            time.monotonic() - since,
        )


def wait_for_slot(api_key: str, rate: float | None) -> float:
    """Block until this API key may make a request. Returns the seconds waited."""
    if not rate:
        return 0.0
    delay = reserve_slot(api_key, rate)
    if delay > 0:
        time.sleep(delay)
    return delay

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
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

MARGIN = 1.1

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
_scripts: dict[int, Any] = {}


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


def reserve_slot(api_key: str, rate: float) -> float:
    """Take the next slot for this API key; return the seconds to wait for it."""
    interval = MARGIN / rate
    bucket = fingerprint(api_key)
    found = redis_client()
    if found is not None:
        client, backend = found
        script = _scripts.get(id(client))
        if script is None:
            script = _scripts[id(client)] = client.register_script(_SCRIPT)
        key = backend.make_key(f"mailapi:rate:{bucket}")
        return max(0.0, float(script(keys=[key], args=[f"{interval:.6f}"])))
    with _local_lock:
        now = time.monotonic()
        slot = max(_local_slots.get(bucket, 0.0), now)
        _local_slots[bucket] = slot + interval
        return slot - now


def wait_for_slot(api_key: str, rate: float | None) -> float:
    """Block until this API key may make a request. Returns the seconds waited."""
    if not rate:
        return 0.0
    delay = reserve_slot(api_key, rate)
    if delay > 0:
        time.sleep(delay)
    return delay

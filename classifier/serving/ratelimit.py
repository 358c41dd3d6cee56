"""Requests per client per time window, counted in the shared Django cache (Redis in production).

A fixed window: the counter ``ratelimit:<scope>:<client>:<window number>`` is created with
``cache.add`` (atomic "set if absent", expiring with its window) and bumped with
``cache.incr`` (atomic in Redis), so every web process on every host counts against the same
number. Clients are users when logged in, otherwise IP addresses (behind a proxy, the last
address the proxy appended to X-Forwarded-For).

A prediction is admitted with ``admit``: its rate counter and its in-flight counter in one Redis
round trip (a Lua script, run atomically by Redis), the in-flight count released once the answer
has been sent (the response's close, which the WSGI server calls after writing it). Other cache
backends (tests, a cache without Redis) take the same decisions through the cache API.

Imports nothing of classifier/ or training/ (Django and libraries only).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from django.http import HttpRequest, HttpResponseBase

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Limit:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int  # seconds until the window ends


def parse_rate(rate: str) -> tuple[int, int] | None:
    """"60/m" -> (60, 60); "off" -> None. Settings validate the format at start-up."""
    if rate == "off":
        return None
    count, period = rate.split("/")
    return int(count), PERIODS[period]


def client_id(request: HttpRequest) -> str:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    address = request.META.get("REMOTE_ADDR", "") or "unknown"
    if settings.BREEDLAB_BEHIND_PROXY:
        forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()]
        if forwarded:
            address = forwarded[-1]
    return f"ip:{address}"


def hit(request: HttpRequest, scope: str = "predict", *, cost: int = 1, rate: str | None = None) -> Limit:
    """Count ``cost`` requests for this client; ``allowed`` is False once the window's budget is spent.
    ``rate`` defaults to BREEDLAB_RATE_LIMIT."""
    parsed = parse_rate(rate or settings.BREEDLAB_RATE_LIMIT)
    if parsed is None:
        return Limit(True, 0, 0, 0)
    limit, period = parsed
    now = time.time()
    key = _rate_key(scope, client_id(request), period, now)
    cache.add(key, 0, timeout=period + 1)
    try:
        count = cache.incr(key, cost)
    except ValueError:  # expired between add and incr
        cache.add(key, cost, timeout=period + 1)
        count = cost
    return _limit(count, limit, period, now)


def _rate_key(scope: str, client: str, period: int, now: float) -> str:
    return f"ratelimit:{scope}:{client}:{int(now // period)}"


def _limit(count: int, limit: int, period: int, now: float) -> Limit:
    """The decision once ``count`` requests fall in the current window of ``period`` seconds."""
    retry_after = max(1, int((int(now // period) + 1) * period - now + 0.999))
    return Limit(count <= limit, limit, max(0, limit - count), retry_after)


IN_FLIGHT_TTL = 600  # a process killed mid-request cannot leave its client blocked for longer


class InFlight:
    """Requests one client has in flight, counted in the shared cache across every web process.

    ``with InFlight(request, scope) as slot:`` counts this request in; ``slot.allowed`` is False
    when the client already had ``BREEDLAB_MAX_IN_FLIGHT_PER_CLIENT`` running (the caller answers
    429). The count is released on the way out, whatever happened inside.
    """

    def __init__(self, request: HttpRequest, scope: str = "predict") -> None:
        self.key = f"inflight:{scope}:{client_id(request)}"
        self.limit = settings.BREEDLAB_MAX_IN_FLIGHT_PER_CLIENT
        self.allowed = True
        self._counted = False

    def __enter__(self) -> InFlight:
        cache.add(self.key, 0, timeout=IN_FLIGHT_TTL)
        try:
            count = cache.incr(self.key)
        except ValueError:  # expired between add and incr
            cache.add(self.key, 1, timeout=IN_FLIGHT_TTL)
            count = 1
        self._counted = True
        self.allowed = count <= self.limit
        return self

    def __exit__(self, *exc_info) -> None:
        if self._counted:
            try:
                cache.decr(self.key)
            except ValueError:  # expired meanwhile: nothing left to release
                pass


# KEYS: the rate counter, the in-flight counter, a key to read along (the caller's). ARGV: cost, rate
# limit, rate window seconds (0: no rate limit), in-flight limit, in-flight TTL. Returns {rate count
# (-1 without a rate limit), count in flight (-1 when the rate refused), the third key's raw value or
# false}; a request refused by either limit is not left counted in flight.
_ADMIT_LUA = """
local cost = tonumber(ARGV[1])
local rate = -1
local read = redis.call('GET', KEYS[3])
if ARGV[3] ~= '0' then
  rate = redis.call('INCRBY', KEYS[1], cost)
  if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
  if rate > tonumber(ARGV[2]) then return {rate, -1, read} end
end
local n = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[5])
if n > tonumber(ARGV[4]) then redis.call('DECR', KEYS[2]) end
return {rate, n, read}
"""

# The release: a count that expired meanwhile is not driven below zero; zero removes the key.
_RELEASE_LUA = """
local n = redis.call('DECR', KEYS[1])
if n <= 0 then redis.call('DEL', KEYS[1]) end
return n
"""

_scripts: dict[tuple[int, str], tuple] = {}
_scripts_lock = threading.Lock()


def _redis_scripts():
    """The registered admission and release scripts on this process's own Redis client (one connection pool per
    process, reused by every request), or None when the cache is not Redis."""
    backend = caches["default"]
    if not isinstance(backend, RedisCache):
        return None
    location = settings.CACHES["default"]["LOCATION"]
    url = (location if isinstance(location, str) else location[0]).split(",")[0]
    key = (os.getpid(), url)
    script = _scripts.get(key)
    if script is None:
        import redis

        with _scripts_lock:
            script = _scripts.get(key)
            if script is None:
                client = redis.Redis.from_url(url)
                script = (client.register_script(_ADMIT_LUA), client.register_script(_RELEASE_LUA))
                _scripts[key] = script
    return script


def when_sent(response: HttpResponseBase, fn) -> HttpResponseBase:
    """Run ``fn`` once ``response`` has been sent: Django's response.close(), which the WSGI server
    calls after writing it (and the test client after each request), runs its resource closers in
    the order they were added, before ``request_finished``; an exception there is swallowed."""
    response._resource_closers.append(fn)
    return response


class Admission:
    """One prediction request's admission: ``rate`` (Limit) and whether the client's requests in
    flight allow it (``allowed``). Use as a context manager; the in-flight count is released on
    exit, or after the answer is sent when the view returns ``release_when_sent(response)``.
    ``read``: the raw stored value of the key ``admit`` was asked to read along (None: absent, or
    the cache is not Redis)."""

    def __init__(self, rate: Limit, in_flight_limit: int, allowed: bool, release=None, read: bytes | None = None) -> None:
        self.rate = rate
        self.read = read
        self.limit = in_flight_limit
        self.allowed = rate.allowed and allowed
        self._release = release
        self._deferred = False

    def release_when_sent(self, response: HttpResponseBase) -> HttpResponseBase:
        if self._release is not None and not self._deferred:
            self._deferred = True
            when_sent(response, self._release)
        return response

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._release is not None and not self._deferred:
            self._release()
            self._release = None


def admit(request: HttpRequest, scope: str = "predict", *, cost: int = 1, read: str | None = None) -> Admission:
    """Count this request against the client's rate and its requests in flight (BREEDLAB_RATE_LIMIT,
    BREEDLAB_MAX_IN_FLIGHT_PER_CLIENT); one Redis round trip where the cache is Redis, which also
    reads the cache key ``read`` (its raw value in ``Admission.read``)."""
    in_flight_limit = settings.BREEDLAB_MAX_IN_FLIGHT_PER_CLIENT
    scripts = _redis_scripts()
    if scripts is None:
        limit = hit(request, scope, cost=cost)
        if not limit.allowed:
            return Admission(limit, in_flight_limit, True)
        slot = InFlight(request, scope).__enter__()
        return Admission(limit, in_flight_limit, slot.allowed, lambda: slot.__exit__(None, None, None))
    client = client_id(request)
    parsed = parse_rate(settings.BREEDLAB_RATE_LIMIT)
    now = time.time()
    limit, period = parsed if parsed is not None else (0, 0)
    rate_key = cache.make_key(_rate_key(scope, client, period, now) if period else f"ratelimit:{scope}:{client}:off")
    flight_key = cache.make_key(f"inflight:{scope}:{client}")
    admit_script, release_script = scripts
    read_key = cache.make_key(read) if read else cache.make_key(f"unused:{scope}")
    count, in_flight, value = admit_script(keys=[rate_key, flight_key, read_key],
                              args=[cost, limit, period + 1 if period else 0, in_flight_limit, IN_FLIGHT_TTL])
    rate = Limit(True, 0, 0, 0) if parsed is None else _limit(count, limit, period, now)
    value = value if read and value else None
    if in_flight < 0 or in_flight > in_flight_limit:
        return Admission(rate, in_flight_limit, in_flight < 0, read=value)
    return Admission(rate, in_flight_limit, True, lambda: release_script(keys=[flight_key]), read=value)

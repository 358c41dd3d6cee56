"""Requests per client per time window, counted in the shared Django cache (Redis in production).

A fixed window: the counter ``ratelimit:<scope>:<client>:<window number>`` is created with
``cache.add`` (atomic "set if absent", expiring with its window) and bumped with
``cache.incr`` (atomic in Redis), so every web process on every host counts against the same
number. Clients are users when logged in, otherwise IP addresses (behind a proxy, the last
address the proxy appended to X-Forwarded-For).

Imports nothing of classifier/ or training/ (Django and libraries only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

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
    window = int(now // period)
    key = f"ratelimit:{scope}:{client_id(request)}:{window}"
    cache.add(key, 0, timeout=period + 1)
    try:
        count = cache.incr(key, cost)
    except ValueError:  # expired between add and incr
        cache.add(key, cost, timeout=period + 1)
        count = cost
    retry_after = max(1, int((window + 1) * period - now + 0.999))
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

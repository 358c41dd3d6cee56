"""Admitting a prediction with Redis: rate and in-flight counters in one round trip (issue 17, bullet 3),
the in-flight count released once the answer has been sent."""

from __future__ import annotations

import pytest
import redis
from django.core.cache import cache
from django.http import HttpResponse

from classifier.serving import ratelimit, services
from tests.classifier.serving.test_load_limits import png  # a small white PNG upload

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory):
    """A Redis of this module's own, so that its command counts are this module's alone."""
    from tests.services import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("admission-redis"))
    yield server.url
    server.stop()


@pytest.fixture
def redis_cache(settings, own_redis):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": own_redis,
                                   "KEY_PREFIX": "breedlab"}}
    settings.BREEDLAB_RATE_LIMIT = "off"
    settings.BREEDLAB_MAX_IN_FLIGHT_PER_CLIENT = 2
    server = redis.Redis.from_url(own_redis)
    server.flushdb()
    yield server
    server.flushdb()


class Req:
    def __init__(self, address: str = "10.0.0.7") -> None:
        self.META = {"REMOTE_ADDR": address}
        self.user = None


def commands(server: redis.Redis) -> dict[str, int]:
    return {name: stats["calls"] for name, stats in server.info("commandstats").items()}


def calls_since(server: redis.Redis, before: dict[str, int]) -> dict[str, int]:
    after = commands(server)
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0) and k not in ("cmdstat_info",)}


def test_admission_is_one_round_trip_and_the_count_is_released_after_the_answer_is_sent(redis_cache):
    with ratelimit.admit(Req("10.0.0.1")):  # loads the scripts into this Redis
        pass
    before = commands(redis_cache)
    response = HttpResponse(b"answer")
    with ratelimit.admit(Req()) as admission:
        assert admission.allowed and admission.rate.allowed
        admission.release_when_sent(response)
    # One command from this process; GET, INCR and EXPIRE are the script's own, inside Redis.
    assert calls_since(redis_cache, before) == {"cmdstat_evalsha": 1, "cmdstat_incr": 1, "cmdstat_expire": 1, "cmdstat_get": 1}
    assert cache.get("inflight:predict:ip:10.0.0.7") == 1  # the answer has not been sent yet
    response.close()  # what the WSGI server calls after writing the answer
    assert cache.get("inflight:predict:ip:10.0.0.7") is None  # released (a zero count is removed)


def test_a_client_over_its_in_flight_limit_is_refused_and_not_left_counted(redis_cache):
    first, second = ratelimit.admit(Req()), ratelimit.admit(Req())
    third = ratelimit.admit(Req())
    assert first.allowed and second.allowed and not third.allowed and third.limit == 2
    assert cache.get("inflight:predict:ip:10.0.0.7") == 2
    with third:
        pass
    assert cache.get("inflight:predict:ip:10.0.0.7") == 2
    assert ratelimit.admit(Req("10.0.0.8")).allowed  # another client counts on its own
    with first, second:
        pass
    assert cache.get("inflight:predict:ip:10.0.0.7") is None


def test_the_rate_is_counted_in_the_same_round_trip_and_a_refusal_counts_nothing_in_flight(redis_cache, settings):
    settings.BREEDLAB_RATE_LIMIT = "3/m"
    with ratelimit.admit(Req(), cost=2) as admission:
        assert admission.allowed and admission.rate.remaining == 1
    refused = ratelimit.admit(Req(), cost=2)
    assert not refused.allowed and not refused.rate.allowed and 1 <= refused.rate.retry_after <= 60
    assert cache.get("inflight:predict:ip:10.0.0.7") is None
    ttl = [redis_cache.ttl(k) for k in redis_cache.keys("breedlab:*ratelimit:predict:ip:10.0.0.7:*")]
    assert len(ttl) == 1 and 0 < ttl[0] <= 61


def test_a_released_count_that_expired_meanwhile_does_not_go_negative(redis_cache):
    admission = ratelimit.admit(Req())
    redis_cache.delete(cache.make_key("inflight:predict:ip:10.0.0.7"))  # its TTL ran out
    with admission:
        pass
    assert cache.get("inflight:predict:ip:10.0.0.7") is None
    assert ratelimit.admit(Req()).allowed and cache.get("inflight:predict:ip:10.0.0.7") == 1


def test_the_api_releases_each_request_whatever_its_answer(client, redis_cache, settings, monkeypatch):
    settings.BREEDLAB_MAX_IN_FLIGHT_PER_CLIENT = 1
    answers = iter([services.ImageRejected("nope"), None, services.ImageRejected("nope"), None])

    class Answer:
        def as_api(self):
            return {"verdict": "dog"}

    def fake(**kwargs):
        outcome = next(answers)
        if outcome is not None:
            raise outcome
        return [Answer()]

    monkeypatch.setattr("classifier.serving.api.prediction_create", fake)
    statuses = [client.post("/api/predict", {"image": png()}).status_code for _ in range(4)]
    assert statuses == [400, 200, 400, 200]  # with a leak the second would already be 429
    assert cache.get("inflight:predict:ip:127.0.0.1") is None


def test_admission_reads_the_promotion_announcement_in_the_same_round_trip(redis_cache):
    from classifier.versions.selectors import ACTIVE_MODEL_CACHE_KEY

    assert ratelimit.admit(Req(), read=ACTIVE_MODEL_CACHE_KEY).read is None  # nothing announced yet
    cache.set(ACTIVE_MODEL_CACHE_KEY, {"id": 3, "promoted_at": "2026-11-30T12:00:00+00:00"}, timeout=None)
    first = ratelimit.admit(Req(), read=ACTIVE_MODEL_CACHE_KEY).read
    assert first is not None and first == ratelimit.admit(Req("10.0.0.2"), read=ACTIVE_MODEL_CACHE_KEY).read
    cache.set(ACTIVE_MODEL_CACHE_KEY, {"id": 4, "promoted_at": "2026-11-30T12:01:00+00:00"}, timeout=None)
    assert ratelimit.admit(Req("10.0.0.3"), read=ACTIVE_MODEL_CACHE_KEY).read not in (None, first)

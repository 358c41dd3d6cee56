"""Login throttling: after BREEDLAB_LOGIN_FAILURES failed logins from one client address, or for
one user name, within BREEDLAB_LOGIN_WINDOW_SECONDS, every login attempt from there (or for that
name) is refused until the window ends, even with the right password.

``ThrottledModelBackend`` is the authentication backend (settings.AUTHENTICATION_BACKENDS); the
``user_login_failed`` signal counts failures in the shared cache (Redis), so every web process
counts against the same numbers.

Shared (web/); imports classifier.serving.ratelimit (the client address) and Django.
"""

from __future__ import annotations

import hashlib
import time

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.signals import user_login_failed
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.dispatch import receiver

from classifier.serving.ratelimit import client_id


def _keys(request, username: str | None) -> list[str]:
    window = int(time.time() // settings.BREEDLAB_LOGIN_WINDOW_SECONDS)
    keys = []
    if request is not None:
        keys.append(f"login-failures:{client_id(request)}:{window}")
    if username:
        digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
        keys.append(f"login-failures:name:{digest}:{window}")
    return keys


def login_blocked(request, username: str | None) -> bool:
    counts = cache.get_many(_keys(request, username))
    return any(count >= settings.BREEDLAB_LOGIN_FAILURES for count in counts.values())


@receiver(user_login_failed)
def _count_failure(sender, credentials, request=None, **kwargs) -> None:  # noqa: ARG001
    for key in _keys(request, (credentials or {}).get("username")):
        cache.add(key, 0, timeout=settings.BREEDLAB_LOGIN_WINDOW_SECONDS + 1)
        try:
            cache.incr(key)
        except ValueError:
            cache.add(key, 1, timeout=settings.BREEDLAB_LOGIN_WINDOW_SECONDS + 1)


class ThrottledModelBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        if login_blocked(request, username):
            raise PermissionDenied("too many failed logins")  # authenticate() answers None: "invalid login"
        return super().authenticate(request, username=username, password=password, **kwargs)

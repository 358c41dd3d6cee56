"""Make a new web process ready before its first request needs it.

A fresh gunicorn worker would spend its first request importing every view (with PyTorch and
ONNX Runtime behind them) and loading the serving model: 3.5 s on this 2-core machine, against
21 ms for the first request of a warmed-up worker. ``start`` does both in a daemon thread as the process starts
(config/wsgi.py calls it), so the worker accepts connections at once and a request that arrives
meanwhile waits only for what is still loading (the model cache's lock).

Imports nothing of classifier/ or training/ (Django and libraries only).
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings

log = logging.getLogger(__name__)


def warm_up() -> str:
    """Import the URL configuration (every view module), then load and run the serving model.
    Runs in its own thread (``start``), whose database connection it closes at the end."""
    from django.db import connection
    from django.urls import get_resolver

    from classifier.serving import cache as inference

    try:
        get_resolver().url_patterns  # noqa: B018 - the attribute access imports the views
    except Exception as exc:  # noqa: BLE001 - the first request will raise it where it can be seen
        log.warning("warm-up could not import the URL configuration: %s: %s", type(exc).__name__, exc)
    try:
        return inference.warm_up()
    finally:
        connection.close()  # the warm-up thread's own connection: nobody else would close it


def start() -> threading.Thread | None:
    """Run ``warm_up`` in a daemon thread when ``settings.BREEDLAB_WARM_UP`` is on."""
    if not settings.BREEDLAB_WARM_UP:
        return None
    thread = threading.Thread(target=warm_up, name="breedlab-warm-up", daemon=True)
    thread.start()
    return thread

"""The Celery application. Workers run `celery -A config worker -Q training`."""

import os

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("breedlab")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Each domain keeps its tasks in its own package (classifier/<domain>/tasks.py).
app.autodiscover_tasks(["classifier.datasets", "classifier.runs", "classifier.serving", "classifier.storage", "classifier.web"])


@worker_ready.connect
def _start_heartbeat(sender, **kwargs):  # noqa: ARG001
    """Every worker announces itself and its queues for /api/health (classifier/web/heartbeat.py)."""
    from classifier.web import heartbeat

    queues = sorted(sender.app.amqp.queues.consume_from or {})
    heartbeat.start(sender.hostname, queues)


@worker_shutdown.connect
def _stop_heartbeat(sender, **kwargs):  # noqa: ARG001
    from classifier.web import heartbeat

    heartbeat.forget(getattr(sender, "hostname", "") or "")

"""The Celery application. Workers run `celery -A config worker -Q training`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("breedlab")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Each domain keeps its tasks in its own package (classifier/<domain>/tasks.py).
app.autodiscover_tasks(["classifier.datasets", "classifier.runs", "classifier.storage"])

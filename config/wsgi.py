"""WSGI entry point (gunicorn imports it once in every worker process, after the fork).

Each web process imports its views and loads the model that will serve in a background thread
as soon as it starts, so the first visitor does not wait for them (``BREEDLAB_WARM_UP=0`` turns that off).
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

from classifier.serving import warmup  # noqa: E402 - needs the app set up

warmup.start()

"""Settings for the test suite: the real settings with safe defaults for what tests need.

DATABASE_URL still chooses the database (CI runs the suite on SQLite and on PostgreSQL).
"""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz")
os.environ.setdefault("DATABASE_URL", "sqlite:///:memory:")
os.environ.setdefault("BREEDLAB_VAR_DIR", tempfile.mkdtemp(prefix="breedlab-test-var-"))

from config.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
BREEDLAB_HEALTH_TIMEOUT = 0.5

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not memory: integration tests start real worker processes that must see the rows.
    DATABASES["default"]["TEST"] = {"NAME": os.path.join(os.environ["BREEDLAB_VAR_DIR"], "test-db.sqlite3")}  # noqa: F405

os.makedirs(STATIC_ROOT, exist_ok=True)  # noqa: F405  (whitenoise warns when it is missing)

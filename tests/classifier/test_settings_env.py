import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, read_secret_key

ROOT = Path(__file__).resolve().parents[2]


def test_env_bool_rejects_a_value_that_is_not_a_boolean(monkeypatch):
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="DEBUG='maybe' is not a boolean"):
        env_bool("DEBUG")


def test_env_int_names_the_variable_and_the_bound(monkeypatch):
    monkeypatch.setenv("BREEDLAB_MAX_IMAGE_BYTES", "12")
    with pytest.raises(ImproperlyConfigured, match="BREEDLAB_MAX_IMAGE_BYTES=12 is too small"):
        env_int("BREEDLAB_MAX_IMAGE_BYTES", 5, minimum=1024)
    monkeypatch.setenv("BREEDLAB_MAX_IMAGE_BYTES", "ten")
    with pytest.raises(ImproperlyConfigured, match="not a whole number"):
        env_int("BREEDLAB_MAX_IMAGE_BYTES", 5)


def test_secret_key_is_required_when_debug_is_off(monkeypatch, tmp_path):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("SECRET_KEY_FILE", raising=False)
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY is not set"):
        read_secret_key(tmp_path, debug=False)
    assert read_secret_key(tmp_path, debug=True).startswith("django-insecure")


def test_secret_key_is_read_from_a_file(monkeypatch, tmp_path):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    (tmp_path / "key").write_text("k" * 50 + "\n")
    monkeypatch.setenv("SECRET_KEY_FILE", "key")
    assert read_secret_key(tmp_path, debug=False) == "k" * 50


def _manage_check(env_overrides: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "SECRET_KEY_FILE", "DEBUG")}
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_manage_py_stops_with_one_sentence_on_bad_configuration():
    result = _manage_check({"SECRET_KEY": "x" * 50, "DATABASE_URL": "nosuchdb://nowhere"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Configuration error: DATABASE_URL")

    result = _manage_check({})
    assert result.returncode == 2
    assert "SECRET_KEY is not set" in result.stderr


def test_a_malformed_storage_url_stops_the_process_with_one_sentence():
    result = _manage_check({"SECRET_KEY": "x" * 50, "BREEDLAB_STORAGE_URL": "gs://bucket/prefix"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Configuration error: BREEDLAB_STORAGE_URL")


def test_an_s3_storage_url_keeps_datasets_and_runs_in_the_storage_cache(tmp_path):
    code = "from django.conf import settings as s; print(s.BREEDLAB_STORAGE_S3, s.DATASETS_ROOT, s.RUNS_ROOT, sep='|')"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BREEDLAB_", "AWS_"))}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", SECRET_KEY="x" * 50, BREEDLAB_STORAGE_URL="s3://lab/breedlab/",
               BREEDLAB_STORAGE_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", f"import django; django.setup(); {code}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    parsed, datasets, runs = done.stdout.strip().split("|")
    assert parsed == "StorageUrl(bucket='lab', prefix='breedlab')"
    assert (datasets, runs) == (str(tmp_path / "cache" / "datasets"), str(tmp_path / "cache" / "runs"))


def test_check_deploy_passes_under_production_settings():
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG",)}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        SECRET_KEY="p" * 10 + "-Zq8#x!vR2@mT6^kL9&wN4*yH7$bJ3%" + "q" * 20,
        HTTPS="1",
        ALLOWED_HOSTS="breedlab.example.org",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr

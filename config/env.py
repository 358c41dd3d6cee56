"""Small helpers that read settings from the environment and fail loudly on a bad value.

Each helper raises ``ImproperlyConfigured`` with one sentence that names the variable, the
bad value and what would be accepted, so a misconfigured process stops at start-up instead
of misbehaving later.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None else value


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean: use one of 1/0, true/false, yes/no, on/off.")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a whole number.") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} is too small: it must be at least {minimum}.")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name}={number} is too large: it must be at most {maximum}.")
    return number


def env_float(name: str, default: float, *, minimum: float | None = None, maximum: float | None = None) -> float:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a number.") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} is too small: it must be at least {minimum}.")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name}={number} is too large: it must be at most {maximum}.")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_path(name: str, default: Path, *, base: Path) -> Path:
    """A filesystem path; relative values are taken relative to ``base`` (the project root)."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path)


def launcher_value(var_dir: Path, name: str) -> str | None:
    """A value that a running ``make run`` chose (var/launcher.json, written by scripts/run.py and
    removed when it stops); None when no launcher runs (the file is missing or its process is gone)."""
    import json

    try:
        data = json.loads((Path(var_dir) / "launcher.json").read_text())
        os.kill(int(data["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    value = data.get(name)
    return str(value) if value else None


def read_secret_key(base: Path, *, debug: bool, generated: Path | None = None) -> str:
    """SECRET_KEY from the environment, or from the file named by SECRET_KEY_FILE, or from
    ``generated`` (var/secret_key, which ``make run`` writes) when that file exists.

    In DEBUG a fixed development key is allowed; otherwise a missing key stops the process.
    """
    key = os.environ.get("SECRET_KEY", "").strip()
    key_file = os.environ.get("SECRET_KEY_FILE", "").strip()
    if key:
        return key
    if key_file:
        path = Path(key_file)
        path = path if path.is_absolute() else base / path
        try:
            key = path.read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"SECRET_KEY_FILE={key_file!r} cannot be read: {exc.strerror}.") from None
        if len(key) < 32:
            raise ImproperlyConfigured(f"SECRET_KEY_FILE={key_file!r} holds a key shorter than 32 characters.")
        return key
    if generated is not None and Path(generated).is_file():
        key = Path(generated).read_text().strip()
        if len(key) >= 32:
            return key
    if debug:
        return "django-insecure-development-only-key-do-not-use-in-production"
    raise ImproperlyConfigured(
        "SECRET_KEY is not set: set SECRET_KEY (or SECRET_KEY_FILE), or DEBUG=1 for local development "
        "('make run' generates one into var/secret_key)."
    )

import sys

from django.apps import AppConfig
from django.core import checks
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _


def _ensure_builtin_model(sender, **kwargs) -> None:  # noqa: ARG001
    """After every migrate (and every test database flush): the built-in model version exists
    and serves when no other version is active (classifier.versions.services.builtin_ensure)."""
    from django.apps import apps as global_apps

    apps = kwargs.get("apps") or global_apps  # flush sends no migration state
    try:
        historical = apps.get_model("classifier", "ModelVersion")
    except LookupError:
        return  # migrated backwards, before the table existed
    if "kind" not in {f.name for f in historical._meta.get_fields()}:
        return  # not yet migrated as far as the built-in model
    from classifier.versions.services import builtin_ensure

    builtin_ensure()


def check_python_tarfile(app_configs=None, **kwargs):
    """At start: is this Python's tarfile patched against CVE-2024-6232 and CVE-2025-8194?"""
    from classifier.datasets.archive_members import PATCHED_PYTHON, python_tarfile_patched

    if python_tarfile_patched():
        return []
    minimum = PATCHED_PYTHON.get(sys.version_info[:2])
    wanted = ".".join(map(str, minimum)) if minimum else "3.11.14"
    return [
        checks.Info(
            f"Python {sys.version.split()[0]} predates the tarfile fixes for CVE-2024-6232 and CVE-2025-8194 "
            f"(upgrade to {wanted} or later). Until then Breedlab mitigates both: tar headers are pre-scanned "
            "with size caps before tarfile reads them, and negative member offsets are refused.",
            id="breedlab.I001",
        )
    ]


class ClassifierConfig(AppConfig):
    name = "classifier"
    verbose_name = _("Breedlab")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        post_migrate.connect(_ensure_builtin_model, sender=self, dispatch_uid="breedlab-builtin-model")
        from classifier.web import auth  # noqa: F401  (connects the failed-login counter)

        # With `manage.py check --deploy` (make check-deploy); scripts/run.py says it at start too.
        # Not on every command: CLI errors stay one line.
        checks.register(check_python_tarfile, checks.Tags.security, deploy=True)

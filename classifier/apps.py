from django.apps import AppConfig
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


class ClassifierConfig(AppConfig):
    name = "classifier"
    verbose_name = _("Breedlab")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        post_migrate.connect(_ensure_builtin_model, sender=self, dispatch_uid="breedlab-builtin-model")

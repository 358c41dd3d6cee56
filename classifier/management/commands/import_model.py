"""manage.py import_model FILE: list an exported model archive (python -m training export, or a
model's Download button) as a model version that can be promoted.

    manage.py import_model breedlab-model-7.zip [--promote]

The archive is validated first (zip bounds, safetensors only, shapes against the named backbone,
labels, the stored sample photo's recorded answer). A refused archive is one line on stderr and
exit code 2.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.versions import services as version_services


class Command(BaseCommand):
    help = "Import an exported model archive as a new (inactive) model version."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the archive (.zip)")
        parser.add_argument("--promote", action="store_true", help="make it the serving model afterwards")

    def handle(self, *args, file: str, promote: bool, **options) -> None:
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"{file} does not exist or is not a file.", returncode=2)
        try:
            version = version_services.model_import(archive=path)
            if promote:
                version = version_services.model_promote(version=version)
        except version_services.VersionError as exc:
            raise CommandError(str(exc), returncode=2) from None
        state = "active" if version.is_active else "inactive; promote it on /models/"
        self.stdout.write(f"imported model version {version.pk}: {version.name} ({len(version.class_names)} classes, {state})")

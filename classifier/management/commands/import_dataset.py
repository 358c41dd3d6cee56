"""Import a dataset from a folder on the server, or the dog breeds of Oxford-IIIT Pet.

    manage.py import_dataset NAME PATH
    manage.py import_dataset NAME --oxford-pets-dogs

Errors are one line on stderr and exit code 2.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.datasets import services as dataset_services

# Oxford-IIIT Pet has 37 breeds: 25 dogs and 12 cats. torchvision names them by title-casing the
# file-name prefix ("american_pit_bull_terrier" -> "American Pit Bull Terrier"); the dataset marks
# dogs by a lower-case initial in its file names. These are the 25 dog breeds, by torchvision's names.
OXFORD_PET_DOG_BREEDS = (
    "American Bulldog",
    "American Pit Bull Terrier",
    "Basset Hound",
    "Beagle",
    "Boxer",
    "Chihuahua",
    "English Cocker Spaniel",
    "English Setter",
    "German Shorthaired",
    "Great Pyrenees",
    "Havanese",
    "Japanese Chin",
    "Keeshond",
    "Leonberger",
    "Miniature Pinscher",
    "Newfoundland",
    "Pomeranian",
    "Pug",
    "Saint Bernard",
    "Samoyed",
    "Scottish Terrier",
    "Shiba Inu",
    "Staffordshire Bull Terrier",
    "Wheaten Terrier",
    "Yorkshire Terrier",
)
OXFORD_SPLITS = ("trainval", "test")


def download_oxford_pet(root: Path) -> Path:
    """Download (or reuse) Oxford-IIIT Pet under ``root`` with torchvision; return its folder."""
    from torchvision.datasets import OxfordIIITPet

    for split in OXFORD_SPLITS:
        OxfordIIITPet(root=str(root), split=split, target_types="category", download=True)
    return root / "oxford-iiit-pet"


def arrange_oxford_dogs(root: Path, out: Path) -> dict[str, int]:
    """Copy the dog photos of the downloaded dataset at ``root`` into ``out/<breed>/`` (ImageFolder).

    Breeds come from torchvision's class list, images from its annotation files (``<split>.txt``:
    ``<image id> <class id> <species> <breed id>``). Returns photos per breed folder.
    """
    from torchvision.datasets import OxfordIIITPet

    wanted = set(OXFORD_PET_DOG_BREEDS)
    counts: dict[str, int] = {}
    for split in OXFORD_SPLITS:
        dataset = OxfordIIITPet(root=str(root.parent), split=split, target_types="category", download=False)
        annotations = root / "annotations" / f"{split}.txt"
        for line in annotations.read_text().splitlines():
            fields = line.split()
            if len(fields) < 2 or line.startswith("#"):
                continue
            image_id, class_id = fields[0], int(fields[1])
            breed = dataset.classes[class_id - 1]
            if breed not in wanted:
                continue
            folder_name = breed.lower().replace(" ", "_")
            source = root / "images" / f"{image_id}.jpg"
            if not source.is_file():
                continue
            target = out / folder_name / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            counts[folder_name] = counts.get(folder_name, 0) + 1
    return counts


class Command(BaseCommand):
    help = "Import an ImageFolder dataset (one folder per class) from PATH, or Oxford-IIIT Pet's 25 dog breeds."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Dataset name; an existing name gets a new version.")
        parser.add_argument("path", nargs="?", help="Folder on this server with one sub-folder per class.")
        parser.add_argument(
            "--oxford-pets-dogs",
            action="store_true",
            help="Download Oxford-IIIT Pet with torchvision and import its 25 dog breeds.",
        )
        parser.add_argument("--seed", type=int, default=dataset_services.DEFAULT_SEED, help="Split seed (default 0).")
        parser.add_argument(
            "--val-fraction",
            type=float,
            default=dataset_services.DEFAULT_VAL_FRACTION,
            help=f"Share of each class kept for validation (default {dataset_services.DEFAULT_VAL_FRACTION:g}; "
            "another 15%% is kept for the test report).",
        )
        parser.add_argument("--description", default="", help="A line shown on the dataset page.")
        parser.add_argument("--download-dir", help="Where to download Oxford-IIIT Pet (default: a temporary folder).")

    def handle(self, *args, name: str, path: str | None, oxford_pets_dogs: bool, **options) -> None:
        if oxford_pets_dogs == bool(path):
            raise CommandError("give either PATH or --oxford-pets-dogs (not both, not neither).", returncode=2)
        common = {
            "name": name,
            "seed": options["seed"],
            "val_fraction": options["val_fraction"],
            "description": options["description"],
        }
        try:
            if path:
                dataset = dataset_services.dataset_import_folder(source=Path(path), **common)
            else:
                dataset = self._import_oxford(options.get("download_dir"), common)
        except dataset_services.DatasetError as exc:
            raise CommandError(str(exc), returncode=2) from exc
        self._summary(dataset)

    def _import_oxford(self, download_dir: str | None, common: dict):
        with tempfile.TemporaryDirectory(prefix="breedlab-oxford-") as temp:
            root = Path(download_dir) if download_dir else Path(temp) / "download"
            root.mkdir(parents=True, exist_ok=True)
            self.stdout.write(f"Downloading Oxford-IIIT Pet into {root} …")
            try:
                base = download_oxford_pet(root)
            except Exception as exc:  # URLError, timeouts, checksum mismatches, torchvision's RuntimeError
                reason = str(getattr(exc, "reason", "") or exc) or type(exc).__name__
                raise CommandError(
                    f"cannot download Oxford-IIIT Pet: {reason}; import a folder instead with import_dataset NAME PATH",
                    returncode=2,
                ) from exc
            arranged = Path(temp) / "dogs"
            counts = arrange_oxford_dogs(base, arranged)
            self.stdout.write(f"Kept {sum(counts.values())} photos of {len(counts)} dog breeds.")
            common.setdefault("description", "")
            common["description"] = common["description"] or "Oxford-IIIT Pet, the 25 dog breeds."
            return dataset_services.dataset_import_folder(source=arranged, source_label="Oxford-IIIT Pet (dogs)", **common)

    def _summary(self, dataset) -> None:
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {dataset} (id {dataset.pk}): {dataset.image_count} photos in {dataset.class_count} classes, "
                f"{len(dataset.split.get('train', []))} train / {len(dataset.split.get('val', []))} validation / "
                f"{len(dataset.split.get('test', []))} test."
            )
        )
        skipped = len(dataset.report.get("skipped", []))
        if skipped:
            self.stdout.write(f"Skipped {skipped} file(s); see the dataset page for reasons.")
        for warning in dataset.report.get("warnings", []):
            self.stdout.write(self.style.WARNING(f"warning: {warning}"))
        for problem in dataset.problems:
            self.stderr.write(self.style.ERROR(f"problem: {problem}"))

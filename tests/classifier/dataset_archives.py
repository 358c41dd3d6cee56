"""Archive factories for the dataset tests: small real JPEGs, hostile and odd archives, built in
tmp_path at test time. Shared by the page, API and service tests."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image


def jpeg_bytes(seed: int = 0, size: tuple[int, int] = (96, 80)) -> bytes:
    """A small, valid JPEG whose content differs by seed (so no accidental duplicates)."""
    buffer = io.BytesIO()
    image = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    image.putpixel((seed % size[0], (seed // size[0]) % size[1]), (255, 255, 255))
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def imagefolder_entries(counts: dict[str, int], *, start: int = 0) -> dict[str, bytes]:
    """{"<class>/<n>.jpg": jpeg} for every class, ``counts[class]`` photos each."""
    entries, seed = {}, start
    for class_name, count in counts.items():
        for index in range(count):
            seed += 1
            entries[f"{class_name}/{index:03d}.jpg"] = jpeg_bytes(seed)
    return entries


def make_zip(path: Path, entries: dict[str, bytes], *, dirs: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in dirs:
            archive.writestr(zipfile.ZipInfo(name.rstrip("/") + "/"), b"")
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def zip_with_symlink(path: Path, entries: dict[str, bytes], link_name: str, target: str) -> Path:
    make_zip(path, entries)
    with zipfile.ZipFile(path, "a") as archive:
        info = zipfile.ZipInfo(link_name)
        info.create_system = 3  # Unix
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, target)
    return path


def tar_with_symlink(path: Path, entries: dict[str, bytes], link_name: str, target: str) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(link_name)
        link.type = tarfile.SYMTYPE
        link.linkname = target
        archive.addfile(link)
    return path


def zip_bomb(path: Path, *, megabytes: int = 40) -> Path:
    """One member of zeros: ~40 KB on disk, ``megabytes`` MB unpacked (ratio ~1000:1)."""
    good = imagefolder_entries({"beagle": 5, "pug": 5})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in good.items():
            archive.writestr(name, data)
        with archive.open("pug/huge.jpg", "w", force_zip64=True) as member:
            block = b"\0" * (1024 * 1024)
            for _ in range(megabytes):
                member.write(block)
    return path


@dataclass
class Case:
    """One archive and what must happen to it."""

    name: str
    build: object  # Callable[[Path], Path]
    refused: str | None = None  # a fragment of the refusal message
    skipped: dict[str, str] = field(default_factory=dict)  # path in report -> reason
    classes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # fragments


GOOD = {"beagle": 5, "pug": 5}


def _corrupt(tmp: Path) -> Path:
    entries = imagefolder_entries(GOOD)
    entries["pug/broken.jpg"] = jpeg_bytes(99)[:200]  # a JPEG cut short
    return make_zip(tmp / "corrupt.zip", entries)


def _non_images(tmp: Path) -> Path:
    entries = imagefolder_entries(GOOD)
    entries["beagle/notes.txt"] = b"not a photo"
    entries["beagle/page.html"] = b"<script>alert(1)</script>"
    return make_zip(tmp / "non-images.zip", entries)


def _nested(tmp: Path) -> Path:
    entries = {
        f"photos/{name.split('/')[0]}/2024/trip/{name.split('/')[1]}": data
        for name, data in imagefolder_entries(GOOD).items()
    }
    return make_zip(tmp / "nested.zip", entries)


def _unicode(tmp: Path) -> Path:
    entries = imagefolder_entries({"такса": 5, "chien_français": 5})
    entries["такса/фото собаки.jpg"] = jpeg_bytes(77)
    return make_zip(tmp / "юникод.zip", entries)


def _not_an_archive(tmp: Path) -> Path:
    path = tmp / "photo.zip"
    path.write_bytes(jpeg_bytes(3))
    return path


def _empty_class(tmp: Path) -> Path:
    return make_zip(tmp / "empty-class.zip", imagefolder_entries(GOOD), dirs=("husky/",))


HOSTILE_CASES = [
    Case(
        "parent_paths",
        lambda tmp: make_zip(tmp / "parent.zip", {**imagefolder_entries(GOOD), "../../evil.jpg": jpeg_bytes(1)}),
        refused="outside its folder",
    ),
    Case(
        "absolute_path",
        lambda tmp: make_zip(tmp / "absolute.zip", {**imagefolder_entries(GOOD), "/tmp/evil.jpg": jpeg_bytes(1)}),
        refused="absolute path",
    ),
    Case(
        "zip_symlink",
        lambda tmp: zip_with_symlink(tmp / "link.zip", imagefolder_entries(GOOD), "pug/evil.jpg", "/etc/passwd"),
        refused="link",
    ),
    Case(
        "tar_symlink",
        lambda tmp: tar_with_symlink(
            tmp / "link.tar.gz", imagefolder_entries(GOOD), "pug/evil.jpg", "../../../etc/passwd"
        ),
        refused="link",
    ),
    Case("zip_bomb", lambda tmp: zip_bomb(tmp / "bomb.zip"), refused="zip bomb"),
    Case("not_an_archive", _not_an_archive, refused="neither a ZIP nor a tar"),
    Case("corrupt_image", _corrupt, skipped={"pug/broken.jpg": "corrupt"}, classes=["beagle", "pug"]),
    Case(
        "non_image_files",
        _non_images,
        skipped={"beagle/notes.txt": "not_image", "beagle/page.html": "not_image"},
        classes=["beagle", "pug"],
    ),
    Case("nested_folders", _nested, classes=["beagle", "pug"]),
    Case("unicode_names", _unicode, classes=["chien_français", "такса"]),
    Case("empty_class", _empty_class, classes=["beagle", "pug"], problems=["'husky' is empty"]),
]


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}

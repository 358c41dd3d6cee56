"""classifier.datasets.archives: safe, streaming extraction of users' ZIP and tar archives.

Every archive is built in tmp_path at test time. Refusals are checked to leave the whole tmp
folder exactly as it was; successes may only add the destination folder.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import tarfile
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from classifier.datasets.archives import ArchiveError, ArchiveLimits, ExtractResult, extract_archive


@pytest.fixture(autouse=True)
def _isolated_storage():
    """Overrides the Django-side autouse fixture of tests/classifier/conftest.py: this module is
    pure Python and must run without Django (``-p no:django``)."""


# Factories ------------------------------------------------------------------------------------


def jpeg_bytes(seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (80, 72), ((seed * 37) % 256, (seed * 91) % 256, 120)).save(buffer, "JPEG")
    return buffer.getvalue()


def make_zip(path: Path, entries: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def tar_file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, io.BytesIO(data)


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, io.BytesIO | None]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as archive:
        for info, data in members:
            archive.addfile(info, data)
    return path


def special_member(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def patch_zip_flags(path: Path, *, set_bits: int = 0, clear_bits: int = 0) -> None:
    """Rewrite the general-purpose flag of every member, in the local and central headers."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        infos, start_dir = archive.infolist(), archive.start_dir
    for info in infos:  # local header: signature(4) version(2) flags(2)
        (flags,) = struct.unpack_from("<H", data, info.header_offset + 6)
        struct.pack_into("<H", data, info.header_offset + 6, (flags | set_bits) & ~clear_bits)
    offset = start_dir
    for _ in infos:  # central header: signature(4) made-by(2) version(2) flags(2) ...
        (flags,) = struct.unpack_from("<H", data, offset + 8)
        struct.pack_into("<H", data, offset + 8, (flags | set_bits) & ~clear_bits)
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, offset + 28)
        offset += 46 + name_len + extra_len + comment_len
    path.write_bytes(bytes(data))


def snapshot(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "uploads").mkdir()
    return tmp_path


@pytest.fixture
def dest(workspace: Path) -> Path:
    return workspace / "datasets" / "mine"


def assert_refused(archive: Path, dest: Path, match: str, limits: ArchiveLimits | None = None) -> None:
    root = dest.parent.parent
    before = snapshot(root)
    with pytest.raises(ArchiveError, match=match):
        extract_archive(archive, dest, limits=limits or ArchiveLimits())
    assert snapshot(root) == before, "a refused archive left files behind"


def assert_extracted(archive: Path, dest: Path, **kwargs) -> ExtractResult:
    root = dest.parent.parent
    before = snapshot(root)
    result = extract_archive(archive, dest, **kwargs)
    added = snapshot(root) - before
    dest_rel = dest.relative_to(root).as_posix()
    outside = {p for p in added if p != dest_rel and not p.startswith(dest_rel + "/")}
    # The parent folder of dest may be created; nothing else.
    assert outside <= {dest.parent.relative_to(root).as_posix()}, outside
    assert result.root == dest
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == result.extracted
    return result


# Layout -----------------------------------------------------------------------------------------


def test_it_extracts_zip_in_imagefolder_layout(workspace: Path, dest: Path) -> None:
    archive = make_zip(
        workspace / "uploads" / "dogs.zip",
        {"beagle/1.jpg": jpeg_bytes(1), "beagle/2.jpg": jpeg_bytes(2), "pug/1.jpg": jpeg_bytes(3)},
    )
    result = assert_extracted(archive, dest)
    assert result.format == "zip"
    assert result.extracted == ["beagle/1.jpg", "beagle/2.jpg", "pug/1.jpg"]
    assert result.classes == ["beagle", "pug"]
    assert result.skipped == [] and result.flattened == [] and result.stripped_root is None
    assert (dest / "pug" / "1.jpg").read_bytes() == jpeg_bytes(3)
    assert result.total_bytes == sum(len(jpeg_bytes(i)) for i in (1, 2, 3))


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_it_extracts_tar_in_every_compression(workspace: Path, dest: Path, mode: str) -> None:
    members = [tar_file_member("beagle/1.jpg", jpeg_bytes(1)), tar_file_member("pug/1.jpg", jpeg_bytes(2))]
    archive = make_tar(workspace / "uploads" / "upload.bin", members, mode)  # the name says nothing
    result = assert_extracted(archive, dest)
    assert result.format == "tar"
    assert result.extracted == ["beagle/1.jpg", "pug/1.jpg"]


def test_it_detects_zip_by_content_not_by_name(workspace: Path, dest: Path) -> None:
    archive = make_zip(
        workspace / "uploads" / "photos.tar.gz", {"beagle/1.jpg": jpeg_bytes(), "pug/1.jpg": jpeg_bytes(1)}
    )
    assert extract_archive(archive, dest).format == "zip"


@pytest.mark.parametrize("content", [b"just some text\n", b"", jpeg_bytes()])
def test_it_rejects_files_that_are_neither_zip_nor_tar(workspace: Path, dest: Path, content: bytes) -> None:
    archive = workspace / "uploads" / "dogs.zip"
    archive.write_bytes(content)
    assert_refused(archive, dest, "is neither a ZIP nor a tar archive")


def test_it_strips_a_single_root_folder_that_holds_the_classes(workspace: Path, dest: Path) -> None:
    archive = make_zip(
        workspace / "uploads" / "dogs.zip",
        {"dogs/": b"", "dogs/beagle/1.jpg": jpeg_bytes(1), "dogs/pug/1.jpg": jpeg_bytes(2), "dogs/README.txt": b"hi"},
    )
    result = assert_extracted(archive, dest)
    assert result.stripped_root == "dogs"
    assert result.extracted == ["beagle/1.jpg", "pug/1.jpg"]
    assert result.skipped == [("dogs/README.txt", "not inside a class folder")]


def test_it_keeps_a_single_top_folder_with_photos_as_the_class(workspace: Path, dest: Path) -> None:
    archive = make_zip(
        workspace / "uploads" / "b.zip", {"beagle/1.jpg": jpeg_bytes(1), "beagle/puppies/2.jpg": jpeg_bytes(2)}
    )
    result = assert_extracted(archive, dest)
    assert result.stripped_root is None
    assert result.extracted == ["beagle/1.jpg", "beagle/puppies__2.jpg"]


def test_it_flattens_nested_folders_into_the_class(workspace: Path, dest: Path) -> None:
    archive = make_zip(
        workspace / "uploads" / "dogs.zip",
        {
            "beagle/1.jpg": jpeg_bytes(1),
            "beagle/a/1.jpg": jpeg_bytes(2),
            "beagle/a/b/1.jpg": jpeg_bytes(3),
            "beagle/a__1.jpg": jpeg_bytes(4),  # collides with the flattened name of beagle/a/1.jpg
            "pug/1.jpg": jpeg_bytes(5),
        },
    )
    result = assert_extracted(archive, dest)
    assert result.extracted == [
        "beagle/1.jpg",
        "beagle/a__1.jpg",
        "beagle/a__1~2.jpg",
        "beagle/a__b__1.jpg",
        "pug/1.jpg",
    ]
    assert result.flattened == [("beagle/a/1.jpg", "beagle/a__1~2.jpg"), ("beagle/a/b/1.jpg", "beagle/a__b__1.jpg")]
    assert (dest / "beagle" / "a__1.jpg").read_bytes() == jpeg_bytes(4)
    assert (dest / "beagle" / "a__1~2.jpg").read_bytes() == jpeg_bytes(2)


def test_it_skips_files_outside_class_folders(workspace: Path, dest: Path) -> None:
    archive = make_zip(workspace / "uploads" / "d.zip", {"loose.jpg": jpeg_bytes(), "beagle/1.jpg": jpeg_bytes(1)})
    result = assert_extracted(archive, dest)
    assert result.extracted == ["beagle/1.jpg"]
    assert result.skipped == [("loose.jpg", "not inside a class folder")]
    assert not (dest / "loose.jpg").exists()


def test_it_skips_macos_and_windows_junk_and_hidden_files(workspace: Path, dest: Path) -> None:
    archive = make_zip(
        workspace / "uploads" / "mac.zip",
        {
            "dogs/beagle/1.jpg": jpeg_bytes(1),
            "dogs/pug/1.jpg": jpeg_bytes(2),
            "__MACOSX/dogs/beagle/._1.jpg": b"\x00\x05\x16\x07",
            "dogs/.DS_Store": b"junk",
            "dogs/pug/Thumbs.db": b"junk",
            "dogs/pug/.hidden.jpg": jpeg_bytes(3),
        },
    )
    result = assert_extracted(archive, dest)
    assert result.stripped_root == "dogs"  # __MACOSX does not count as a second top-level folder
    assert result.extracted == ["beagle/1.jpg", "pug/1.jpg"]
    assert dict(result.skipped) == {
        "__MACOSX/dogs/beagle/._1.jpg": "macOS metadata (__MACOSX)",
        "dogs/.DS_Store": "hidden file or folder",
        "dogs/pug/Thumbs.db": "system file",
        "dogs/pug/.hidden.jpg": "hidden file or folder",
    }


def test_it_keeps_empty_class_folders_so_the_report_can_name_them(workspace: Path, dest: Path) -> None:
    archive = make_zip(workspace / "uploads" / "d.zip", {"beagle/1.jpg": jpeg_bytes(), "pug/": b""})
    result = assert_extracted(archive, dest)
    assert (dest / "pug").is_dir() and not any((dest / "pug").iterdir())
    assert result.classes == ["beagle"]


def test_it_extracts_cyrillic_names_from_zip_and_tar(workspace: Path, tmp_path: Path) -> None:
    zipped = make_zip(workspace / "uploads" / "ru.zip", {"такса/фото.jpg": jpeg_bytes(1), "лайка/1.jpg": jpeg_bytes(2)})
    with zipfile.ZipFile(zipped) as archive:
        assert all(info.flag_bits & 0x800 for info in archive.infolist())
    assert assert_extracted(zipped, tmp_path / "out" / "zip").extracted == ["лайка/1.jpg", "такса/фото.jpg"]

    tarred = make_tar(workspace / "uploads" / "ru.tar.gz", [tar_file_member("такса/фото.jpg", jpeg_bytes(1))], "w:gz")
    assert assert_extracted(tarred, tmp_path / "out" / "tar").extracted == ["такса/фото.jpg"]
    assert (tmp_path / "out" / "tar" / "такса" / "фото.jpg").read_bytes() == jpeg_bytes(1)


def test_it_reads_utf8_zip_names_written_without_the_utf8_flag(workspace: Path, dest: Path) -> None:
    archive = make_zip(workspace / "uploads" / "ru.zip", {"такса/фото.jpg": jpeg_bytes(1), "pug/1.jpg": jpeg_bytes(2)})
    patch_zip_flags(archive, clear_bits=0x800)
    with zipfile.ZipFile(archive) as opened:
        assert "такса/фото.jpg" not in opened.namelist()  # zipfile alone would decode it as cp437
    assert assert_extracted(archive, dest).extracted == ["pug/1.jpg", "такса/фото.jpg"]


def test_it_decodes_legacy_cp437_zip_names(workspace: Path, dest: Path) -> None:
    archive = make_zip(workspace / "uploads" / "old.zip", {"pug/1.jpg": jpeg_bytes(1)})
    data = archive.read_bytes().replace(b"pug/1.jpg", "pug/\u00e91.jpg".encode("cp437")[:-1])  # same length
    archive.write_bytes(data)
    assert assert_extracted(archive, dest).extracted == ["pug/\u00e91.jp"]


# Refusals: paths ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../evil.jpg", "beagle/../../evil.jpg", "..\\evil.jpg", "beagle/.."])
def test_it_rejects_zip_with_parent_paths(workspace: Path, dest: Path, name: str) -> None:
    archive = make_zip(workspace / "uploads" / "evil.zip", {"beagle/1.jpg": jpeg_bytes(), name: b"x"})
    assert_refused(archive, dest, "points outside its folder")


def test_it_rejects_tar_with_parent_paths(workspace: Path, dest: Path) -> None:
    archive = make_tar(
        workspace / "uploads" / "evil.tar",
        [tar_file_member("beagle/1.jpg", jpeg_bytes()), tar_file_member("../../evil.jpg", b"x")],
    )
    assert_refused(archive, dest, "points outside its folder")
    assert not (workspace / "evil.jpg").exists()


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("/etc/evil.jpg", "absolute path"),
        ("\\evil.jpg", "absolute path"),
        ("C:/evil.jpg", "drive letter"),
        ("c:\\evil.jpg", "drive letter"),
    ],
)
def test_it_rejects_zip_with_absolute_paths_and_drive_letters(
    workspace: Path, dest: Path, name: str, match: str
) -> None:
    archive = make_zip(workspace / "uploads" / "evil.zip", {"beagle/1.jpg": jpeg_bytes(), name: b"x"})
    assert_refused(archive, dest, match)


def test_it_rejects_tar_with_absolute_paths(workspace: Path, dest: Path) -> None:
    target = workspace / "evil.jpg"
    archive = make_tar(workspace / "uploads" / "evil.tar", [tar_file_member(str(target), b"x")])
    with tarfile.open(archive) as opened:
        assert opened.getnames() == [str(target)]
    assert_refused(archive, dest, "absolute path")
    assert not target.exists()


# Refusals: entry types ------------------------------------------------------------------------


def test_it_rejects_zip_symlink_entries(workspace: Path, dest: Path) -> None:
    archive = workspace / "uploads" / "link.zip"
    with zipfile.ZipFile(archive, "w") as opened:
        opened.writestr("beagle/1.jpg", jpeg_bytes())
        link = zipfile.ZipInfo("beagle/2.jpg")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        opened.writestr(link, "/etc/passwd")
    assert_refused(archive, dest, "contains a link")


@pytest.mark.parametrize(
    "member",
    [
        special_member("beagle/2.jpg", tarfile.SYMTYPE, "/etc/passwd"),
        special_member("beagle/2.jpg", tarfile.SYMTYPE, "../../outside"),
        special_member("beagle/2.jpg", tarfile.LNKTYPE, "beagle/1.jpg"),
        special_member("beagle/2.jpg", tarfile.LNKTYPE, "/etc/passwd"),
    ],
    ids=["symlink-absolute", "symlink-relative", "hardlink-inside", "hardlink-absolute"],
)
def test_it_rejects_tar_symlinks_and_hardlinks(workspace: Path, dest: Path, member) -> None:
    archive = make_tar(workspace / "uploads" / "links.tar", [tar_file_member("beagle/1.jpg", jpeg_bytes()), member])
    assert_refused(archive, dest, "contains a link")


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE], ids=["char", "block", "fifo"])
def test_it_rejects_tar_device_files_and_fifos(workspace: Path, dest: Path, kind: bytes) -> None:
    archive = make_tar(
        workspace / "uploads" / "dev.tar",
        [tar_file_member("beagle/1.jpg", jpeg_bytes()), special_member("beagle/dev", kind)],
    )
    assert_refused(archive, dest, "device file or pipe")


@pytest.mark.parametrize("file_type", [stat.S_IFCHR, stat.S_IFIFO, stat.S_IFSOCK], ids=["char", "fifo", "socket"])
def test_it_rejects_zip_device_and_fifo_entries(workspace: Path, dest: Path, file_type: int) -> None:
    archive = workspace / "uploads" / "dev.zip"
    with zipfile.ZipFile(archive, "w") as opened:
        info = zipfile.ZipInfo("beagle/dev")
        info.create_system = 3
        info.external_attr = (file_type | 0o644) << 16
        opened.writestr(info, b"")
    assert_refused(archive, dest, "device file or pipe")


def test_it_rejects_encrypted_zip_members(workspace: Path, dest: Path) -> None:
    archive = make_zip(workspace / "uploads" / "secret.zip", {"beagle/1.jpg": jpeg_bytes()})
    patch_zip_flags(archive, set_bits=0x1)
    assert_refused(archive, dest, "encrypted")


def test_it_rejects_duplicate_entry_names(workspace: Path, dest: Path) -> None:
    archive = make_tar(
        workspace / "uploads" / "dup.tar",
        [tar_file_member("beagle/1.jpg", b"one"), tar_file_member("./beagle/1.jpg", b"two")],
    )
    assert_refused(archive, dest, "more than once")


def test_it_rejects_damaged_zip_members(workspace: Path, dest: Path) -> None:
    archive = make_zip(workspace / "uploads" / "bad.zip", {"beagle/1.jpg": b"A" * 1000}, compression=zipfile.ZIP_STORED)
    archive.write_bytes(archive.read_bytes().replace(b"A" * 10, b"B" * 10, 1))
    assert_refused(archive, dest, "is damaged")


def test_it_rejects_truncated_tar_gz(workspace: Path, dest: Path) -> None:
    archive = make_tar(
        workspace / "uploads" / "cut.tar.gz", [tar_file_member("beagle/1.jpg", os.urandom(200_000))], "w:gz"
    )
    archive.write_bytes(archive.read_bytes()[:120_000])
    assert_refused(archive, dest, "damaged")


# Refusals: bombs ------------------------------------------------------------------------------

ZEROS = b"\x00" * (8 * 1024 * 1024)


def test_it_rejects_zip_bomb_over_the_size_cap(workspace: Path, dest: Path) -> None:
    archive = make_zip(workspace / "uploads" / "bomb.zip", {"beagle/1.jpg": jpeg_bytes(), "beagle/zeros.jpg": ZEROS})
    assert archive.stat().st_size < 100_000
    assert_refused(archive, dest, "unpacks to more than 1 MiB", ArchiveLimits(max_total_bytes=1024 * 1024))


def test_it_counts_real_bytes_while_streaming_a_tar_gz_bomb(workspace: Path, dest: Path) -> None:
    archive = make_tar(workspace / "uploads" / "bomb.tar.gz", [tar_file_member("beagle/zeros.jpg", ZEROS)], "w:gz")
    assert_refused(
        archive, dest, "unpacks to more than 1 MiB", ArchiveLimits(max_total_bytes=1024 * 1024, max_ratio=10_000)
    )


def test_it_rejects_zip_members_with_a_suspicious_compression_ratio(workspace: Path, dest: Path) -> None:
    archive = make_zip(
        workspace / "uploads" / "bomb.zip", {"beagle/zeros.jpg": ZEROS, "pug/1.jpg": os.urandom(4 * 1024 * 1024)}
    )
    limits = ArchiveLimits(max_ratio=50, ratio_grace_bytes=64 * 1024)
    assert_refused(archive, dest, "looks like a zip bomb", limits)


def test_it_rejects_tar_that_unpacks_to_many_times_its_size(workspace: Path, dest: Path) -> None:
    archive = make_tar(workspace / "uploads" / "bomb.tar.xz", [tar_file_member("beagle/zeros.jpg", ZEROS)], "w:xz")
    assert_refused(archive, dest, "looks like a zip bomb", ArchiveLimits(max_ratio=50, ratio_grace_bytes=64 * 1024))


def test_it_rejects_file_count_bombs(workspace: Path, tmp_path: Path) -> None:
    entries = {f"beagle/{i}.jpg": b"x" for i in range(50)}
    limits = ArchiveLimits(max_entries=10)
    assert_refused(
        make_zip(workspace / "uploads" / "many.zip", entries), tmp_path / "out" / "zip", "more than 10 entries", limits
    )
    tarred = make_tar(workspace / "uploads" / "many.tar", [tar_file_member(n, d) for n, d in entries.items()])
    assert_refused(tarred, tmp_path / "out" / "tar", "more than 10 entries", limits)


def test_it_streams_large_members_without_reading_them_into_memory(workspace: Path, dest: Path) -> None:
    big = os.urandom(24 * 1024 * 1024)
    archive = make_zip(
        workspace / "uploads" / "big.zip", {"beagle/big.jpg": big, "pug/1.jpg": b"x"}, compression=zipfile.ZIP_STORED
    )
    del big
    tracemalloc.start()
    try:
        result = extract_archive(archive, dest)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.total_bytes == 24 * 1024 * 1024 + 1
    assert peak < 6 * 1024 * 1024, f"peak {peak:,} bytes"


# Destination ----------------------------------------------------------------------------------


def test_it_refuses_a_destination_that_is_not_empty(workspace: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    (dest / "keep.txt").write_text("mine")
    archive = make_zip(workspace / "uploads" / "d.zip", {"beagle/1.jpg": jpeg_bytes()})
    assert_refused(archive, dest, "not an empty folder")
    assert (dest / "keep.txt").read_text() == "mine"


def test_it_extracts_into_an_existing_empty_destination(workspace: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    archive = make_zip(workspace / "uploads" / "d.zip", {"beagle/1.jpg": jpeg_bytes()})
    assert extract_archive(archive, dest).extracted == ["beagle/1.jpg"]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["mine"]  # no staging folder left


def test_result_serialises_to_a_plain_dict(workspace: Path, dest: Path) -> None:
    import json

    archive = make_zip(workspace / "uploads" / "d.zip", {"beagle/a/1.jpg": jpeg_bytes(), "x.txt": b""})
    data = extract_archive(archive, dest).as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["flattened"] == [{"name": "beagle/a/1.jpg", "written_as": "beagle/a__1.jpg"}]

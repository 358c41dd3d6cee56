"""Archives bounded before parsing (issue 13, bullet 8)."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from classifier.datasets import archive_members
from classifier.datasets.archives import ArchiveError, ArchiveLimits, extract_archive
from tests.classifier.dataset_archives import jpeg_bytes, make_zip


@pytest.fixture
def no_stdlib_parsing(monkeypatch):
    """Fail the test if tarfile or zipfile parse the archive before the bounds were checked."""

    def refuse(*args, **kwargs):
        raise AssertionError("the archive was handed to the standard library before the pre-scan refused it")

    monkeypatch.setattr(archive_members.tarfile, "open", refuse)
    monkeypatch.setattr(archive_members.tarfile, "is_tarfile", refuse)
    monkeypatch.setattr(archive_members.zipfile, "ZipFile", refuse)


def _header(name: bytes, size_field: bytes, kind: bytes) -> bytes:
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108] = b"0000644\x00"
    block[124:136] = size_field
    block[136:148] = b"00000000000\x00"
    block[156:157] = kind
    block[257:263] = b"ustar\x00"
    block[263:265] = b"00"
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}\x00 ".encode()
    return bytes(block)


def _octal(size: int) -> bytes:
    return f"{size:011o}\x00".encode()


def test_a_huge_gnu_long_name_is_refused_before_tarfile_reads_it(tmp_path, no_stdlib_parsing):
    size = 4 * 1024 * 1024
    body = _header(b"././@LongLink", _octal(size), b"L") + b"a" * size + bytes(1024)
    path = tmp_path / "long.tar"
    path.write_bytes(body)
    with pytest.raises(ArchiveError, match="long-name or pax header"):
        extract_archive(path, tmp_path / "out")


def test_a_huge_pax_header_is_refused_before_tarfile_reads_it(tmp_path):
    path = tmp_path / "pax.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("dogs/a.jpg")
        data = jpeg_bytes(1)
        info.size = len(data)
        info.pax_headers = {"comment": "x" * (1024 * 1024)}
        archive.addfile(info, io.BytesIO(data))
    with pytest.raises(ArchiveError, match="long-name or pax header"):
        extract_archive(path, tmp_path / "out")


def test_a_negative_member_size_is_refused_at_once(tmp_path, no_stdlib_parsing):
    path = tmp_path / "negative.tar"
    path.write_bytes(_header(b"dogs/a.jpg", b"\xff" * 12, b"0") + bytes(2048))
    with pytest.raises(ArchiveError, match="invalid size"):
        extract_archive(path, tmp_path / "out")


def test_tar_entry_count_and_declared_bytes_are_capped_in_the_prescan(tmp_path, no_stdlib_parsing):
    path = tmp_path / "many.tar"
    body = b"".join(_header(f"dogs/{i}.jpg".encode(), _octal(0), b"0") for i in range(30)) + bytes(1024)
    path.write_bytes(body)
    with pytest.raises(ArchiveError, match="more than 10 entries"):
        extract_archive(path, tmp_path / "out", limits=ArchiveLimits(max_entries=10))
    big = tmp_path / "big.tar"
    big.write_bytes(_header(b"dogs/a.jpg", _octal(10**12), b"0") + bytes(1024))
    with pytest.raises(ArchiveError, match="unpacks to more than"):
        extract_archive(big, tmp_path / "out2")


def test_a_zips_entry_count_comes_from_its_end_record_before_zipfile_opens_it(tmp_path, monkeypatch):
    path = make_zip(tmp_path / "many.zip", {f"dogs/{i}.jpg": b"x" for i in range(25)})
    assert archive_members.zip_directory_bounds(path)[0] == 25
    opened = []
    monkeypatch.setattr(archive_members.zipfile, "ZipFile", lambda *a, **k: opened.append(a) or zipfile.ZipFile(*a, **k))
    with pytest.raises(ArchiveError, match="more than 10 entries"):
        extract_archive(path, tmp_path / "out", limits=ArchiveLimits(max_entries=10))
    assert opened == []


def test_ordinary_archives_still_extract(tmp_path):
    entries = {f"{c}/{i}.jpg": jpeg_bytes(i + (9 if c == "pug" else 0)) for c in ("beagle", "pug") for i in range(2)}
    result = extract_archive(make_zip(tmp_path / "a.zip", entries), tmp_path / "out")
    assert result.classes == ["beagle", "pug"]
    tar = tmp_path / "a.tar.gz"
    with tarfile.open(tar, "w:gz") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    assert extract_archive(tar, tmp_path / "out2").classes == ["beagle", "pug"]


@pytest.mark.parametrize(
    ("version", "patched"),
    [((3, 11, 7), False), ((3, 11, 14), True), ((3, 12, 6), False), ((3, 12, 12), True), ((3, 13, 5), False),
     ((3, 13, 6), True), ((3, 14, 0), True)],
)
def test_the_minimum_patched_python_is_known(version, patched):
    assert archive_members.python_tarfile_patched(version) is patched


def test_check_deploy_names_the_minimum_on_an_old_python(monkeypatch):
    from classifier.apps import check_python_tarfile

    monkeypatch.setattr(archive_members, "python_tarfile_patched", lambda version=None: False)
    (message,) = check_python_tarfile()
    assert message.id == "breedlab.I001" and "CVE-2025-8194" in message.msg
    monkeypatch.setattr(archive_members, "python_tarfile_patched", lambda version=None: True)
    assert check_python_tarfile() == []
    from django.core.checks import registry

    assert check_python_tarfile in registry.registry.get_checks(include_deployment_checks=True)
    assert check_python_tarfile not in registry.registry.get_checks()  # CLI errors stay one line


def test_negative_offsets_never_loop_in_tarfile_itself():
    info = tarfile.TarInfo("x")
    with pytest.raises(tarfile.InvalidHeaderError):
        info._block(-512)

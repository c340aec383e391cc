"""model.tar.gz as SageMaker packs /opt/ml/model, and unpacking only safe archives."""

from __future__ import annotations

import io
import stat
import tarfile
from pathlib import Path

import pytest

from dogbreed.core.errors import ModelError
from dogbreed.local.archive import extract_model, pack_model


def model_tree(root: Path) -> Path:
    (root / "code").mkdir(parents=True)
    (root / "metadata.json").write_text('{"labels": ["a", "b"]}')
    (root / "model.onnx").write_bytes(bytes(range(256)) * 10)
    (root / "code" / "notes.txt").write_text("inside a sub-directory")
    return root


def test_members_are_relative_with_no_leading_folder(tmp_path):
    archive = pack_model(model_tree(tmp_path / "model"), tmp_path / "out" / "model.tar.gz")
    with tarfile.open(archive, "r:gz") as tar:  # gzip, as SageMaker writes it
        names = sorted(tar.getnames())
    assert names == ["code", "code/notes.txt", "metadata.json", "model.onnx"]
    assert not any(n.startswith(("/", "./", "model/")) for n in names)
    assert not (tmp_path / "out" / "model.tar.gz.partial").exists()


def test_pack_then_extract_round_trips(tmp_path):
    src = model_tree(tmp_path / "model")
    archive = pack_model(src, tmp_path / "model.tar.gz")
    dest = extract_model(archive, tmp_path / "unpacked")
    got = {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    want = {p.relative_to(src): p.read_bytes() for p in src.rglob("*") if p.is_file()}
    assert got == want
    for path in dest.rglob("*"):  # the serve image reads it as another user
        assert path.stat().st_mode & stat.S_IROTH


def test_no_model_directory_is_a_model_error(tmp_path):
    with pytest.raises(ModelError):
        pack_model(tmp_path / "missing", tmp_path / "model.tar.gz")


def archive_with(tmp_path: Path, *members: tarfile.TarInfo) -> Path:
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("metadata.json")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"{}"))
        for member in members:
            data = b"x" * member.size if member.isfile() else None
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    return path


def file_member(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 1
    return info


def link_member(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def device_member(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    return info


@pytest.mark.parametrize(
    "member",
    [
        file_member("../escape.txt"),
        file_member("a/../../escape.txt"),
        file_member("/etc/evil"),
        link_member("link", "/etc/passwd"),
        link_member("link", "../../outside"),
        link_member("sub/link", "../../outside"),
        link_member("hard", "../outside", tarfile.LNKTYPE),
        device_member("tty"),
    ],
    ids=lambda m: f"{m.name}->{m.linkname}" if m.linkname else m.name,
)
def test_unsafe_members_are_refused_before_anything_is_written(tmp_path, member):
    archive = archive_with(tmp_path, member)
    dest = tmp_path / "dest" / "model"
    with pytest.raises(ModelError, match="model archive"):
        extract_model(archive, dest)
    assert not dest.exists()
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "outside").exists()


def test_a_link_that_stays_inside_is_kept(tmp_path):
    archive = archive_with(tmp_path, file_member("real.bin"), link_member("alias.bin", "real.bin"))
    dest = extract_model(archive, tmp_path / "dest")
    assert (dest / "alias.bin").is_symlink() and (dest / "alias.bin").read_bytes() == b"x"


def test_not_a_tar_archive_is_a_model_error(tmp_path):
    bad = tmp_path / "model.tar.gz"
    bad.write_bytes(b"\x1f\x8b" + b"not really gzip")
    with pytest.raises(ModelError, match="not a readable tar archive"):
        extract_model(bad, tmp_path / "dest")

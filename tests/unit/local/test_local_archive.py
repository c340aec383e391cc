"""model.tar.gz as SageMaker packs /opt/ml/model, and unpacking only safe archives."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def dir_member(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


@pytest.mark.parametrize(
    "members",
    [
        # Each looks harmless on its own: `a` is the target, so `a/b` is its parent.
        [link_member("a", "."), link_member("a/b", ".."), file_member("a/b/escape.txt")],
        # `b` is inside by its name alone; through `a` it is the target's parent.
        [link_member("b", "a/.."), link_member("a", ".")],
        [dir_member("sub"), link_member("d", "sub"), link_member("e", "d/../..")],
        [link_member("loop", "loop")],
        # A file written where a link already is would be written through it.
        [link_member("x", "sub"), dir_member("sub"), file_member("x")],
        [link_member("d", "sub"), dir_member("sub"), file_member("d/escape.txt")],
        [file_member("f"), file_member("f/escape.txt")],
        [dir_member("sub"), link_member("h", "sub", tarfile.LNKTYPE)],
        [link_member("h", "missing", tarfile.LNKTYPE)],
    ],
    ids=[
        "dot-chain",
        "later-link",
        "two-links",
        "loop",
        "twice",
        "through",
        "file",
        "hard-dir",
        "hard-missing",
    ],
)
def test_links_are_resolved_against_the_whole_archive(tmp_path, members):
    archive = archive_with(tmp_path, *members)
    dest = tmp_path / "dest" / "model"
    with pytest.raises(ModelError, match="model archive"):
        extract_model(archive, dest)
    assert not dest.exists() and not (tmp_path / "escape.txt").exists()


def test_a_hard_link_through_an_inside_link_is_kept(tmp_path):
    archive = archive_with(
        tmp_path,
        file_member("real.bin"),
        link_member("alias", "real.bin"),
        link_member("hard.bin", "alias", tarfile.LNKTYPE),
    )
    dest = extract_model(archive, tmp_path / "dest")
    assert (dest / "hard.bin").read_bytes() == b"x" and not (dest / "hard.bin").is_symlink()
    assert (dest / "hard.bin").stat().st_ino == (dest / "real.bin").stat().st_ino


def test_only_an_empty_target_is_unpacked_into(tmp_path):
    archive = archive_with(tmp_path, file_member("real.bin"))
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "link").symlink_to(tmp_path)  # left by someone else: writes could follow it
    with pytest.raises(ModelError, match="empty directory"):
        extract_model(archive, dest)


# Member names mostly plausible (now and then '..' or a leading '/'), link targets
# often climbing with '..': enough archives pass to check where they write.
def paths(components: list[str], absolute_one_in: int) -> st.SearchStrategy[str]:
    return st.builds(
        lambda absolute, parts: ("/" if absolute else "") + "/".join(parts),
        st.sampled_from([False] * (absolute_one_in - 1) + [True]),
        st.lists(st.sampled_from(components), min_size=1, max_size=3),
    )


NAMES = paths(["a", "b", "c", "d"] * 5 + [".", "", ".."], absolute_one_in=30)
TARGETS = paths(["a", "b", "c", ".", "..", ".."], absolute_one_in=10)
KINDS = st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE])


@st.composite
def members(draw) -> list[tarfile.TarInfo]:
    found = []
    for _ in range(draw(st.integers(1, 6))):
        info = tarfile.TarInfo(draw(NAMES))
        info.type = draw(KINDS)
        if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
            info.linkname = draw(TARGETS)
        if info.type == tarfile.REGTYPE:
            info.size = 1
        found.append(info)
    return found


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@settings(max_examples=400, deadline=None)
@given(members())
def test_no_archive_reaches_outside_its_target(found):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "outside.txt").write_text("keep")
        archive = archive_with(root, *found)
        before = tree(root)
        target = root / "work" / "model"
        try:
            extract_model(archive, target)
        except ModelError:
            assert not target.exists()
            assert tree(root) == before
            return
        outside = tree(root) - before
        assert all(p == "work" or p.startswith("work/model") for p in outside), outside
        assert (root / "outside.txt").read_text() == "keep"
        real = os.path.realpath(target)
        for path in target.rglob("*"):
            assert os.path.commonpath([real, os.path.realpath(path)]) == real, path

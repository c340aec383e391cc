"""model.tar.gz as SageMaker makes it from /opt/ml/model, and unpacking one safely.

SageMaker tars the *contents* of /opt/ml/model: member names are relative
(`model.onnx`, `code/x.py`), with no leading folder. An archive from elsewhere is
not trusted: absolute names, `..` components, links that lead outside the target
and device files are refused before anything is written.
"""

from __future__ import annotations

import posixpath
import tarfile
from pathlib import Path

from dogbreed.core.errors import ModelError


def pack_model(model_dir: Path, archive: Path) -> Path:
    """Write `archive` (gzip tar) holding the contents of `model_dir`, names relative."""
    if not model_dir.is_dir():
        raise ModelError(f"{model_dir}: no model directory to pack")
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        for path in sorted(model_dir.rglob("*")):
            tar.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False)
    partial.replace(archive)  # never a half-written model.tar.gz
    return archive


def _escapes(name: str) -> bool:
    """True if a relative POSIX path leaves the directory it is resolved in."""
    if name.startswith("/") or posixpath.isabs(name) or (len(name) > 1 and name[1] == ":"):
        return True
    depth = 0
    for part in name.replace("\\", "/").split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def check_member(member: tarfile.TarInfo) -> None:
    """Refuse a member that could write outside the target directory (ModelError)."""
    name = member.name
    if _escapes(name) or ".." in name.replace("\\", "/").split("/"):
        raise ModelError(f"unsafe member {name!r} in the model archive (absolute or '..')")
    if member.issym():
        target = posixpath.join(posixpath.dirname(name), member.linkname)
        if posixpath.isabs(member.linkname) or _escapes(target):
            raise ModelError(
                f"unsafe link {name!r} -> {member.linkname!r} in the model archive "
                "(points outside it)"
            )
    elif member.islnk():
        if _escapes(member.linkname):
            raise ModelError(
                f"unsafe hard link {name!r} -> {member.linkname!r} in the model archive"
            )
    elif not (member.isfile() or member.isdir()):
        raise ModelError(f"unsupported member {name!r} in the model archive (device or fifo)")


def extract_model(archive: Path, target: Path) -> Path:
    """Unpack a model.tar.gz into `target` after checking every member; files readable by
    all (the serve image runs as its own user)."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                check_member(member)
            target.mkdir(parents=True, exist_ok=True)
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12: a second guard
                tar.extractall(target, members=members, filter="data")
            else:
                tar.extractall(target, members=members)
    except (tarfile.TarError, EOFError) as exc:
        raise ModelError(f"{archive}: not a readable tar archive ({exc})") from None
    for path in [target, *target.rglob("*")]:
        if path.is_symlink():
            continue
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target

"""model.tar.gz as SageMaker makes it from /opt/ml/model, and unpacking one safely.

SageMaker tars the *contents* of /opt/ml/model: member names are relative
(`model.onnx`, `code/x.py`), with no leading folder. An archive from elsewhere is
not trusted, and a name-by-name look is not enough (`a -> .`, then `a/b -> ..`,
then `a/b/x` each look harmless). So the whole archive is laid out in memory first
and every path is resolved the way the kernel would, through the archive's own
links: absolute names, `..` in a name, links that lead outside the target, anything
written through a link, names given twice, and device files are refused before
anything is written. Extraction is ours, not tarfile's (whose `data` filter is
absent before Python 3.10.12 and could be bypassed before 3.11.13/3.12.11):
directories, then files (`O_EXCL | O_NOFOLLOW`), then hard links, and symbolic
links last, into an empty target.
"""

from __future__ import annotations

import os
import shutil
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


MAX_LINK_HOPS = 40  # the kernel's own limit on links followed in one path (ELOOP)
FILE, DIR, SYMLINK, HARDLINK = "file", "dir", "symlink", "hardlink"
Parts = tuple[str, ...]


class _Escapes(Exception):
    """A path that resolves outside the target (or through too many links)."""


def _parts(name: str, what: str) -> Parts:
    """A member name as path components, refusing what could leave the target."""
    if not name or name.startswith("/") or "\\" in name or "\0" in name:
        raise ModelError(f"unsafe {what} {name!r} in the model archive (absolute or odd)")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise ModelError(f"unsafe {what} {name!r} in the model archive ('..')")
    return parts


def _kind(member: tarfile.TarInfo) -> str:
    if member.isfile():
        return FILE
    if member.isdir():
        return DIR
    if member.issym():
        return SYMLINK
    if member.islnk():
        return HARDLINK
    raise ModelError(f"unsupported member {member.name!r} in the model archive (device or fifo)")


class Layout:
    """The tree an archive makes in an empty target, and path resolution through its links
    (resolved: a tuple of components under the target, links followed)."""

    def __init__(self) -> None:
        self.kinds: dict[Parts, str] = {(): DIR}
        self.links: dict[Parts, str] = {}  # symbolic link -> its target, as written

    def add(self, parts: Parts, kind: str, linkname: str = "") -> None:
        for depth in range(1, len(parts)):  # parents a member implies are directories
            self.kinds.setdefault(parts[:depth], DIR)
        if parts in self.kinds and not (kind == DIR and self.kinds[parts] == DIR):
            raise ModelError(f"member {'/'.join(parts)!r} appears twice in the model archive")
        self.kinds[parts] = kind
        if kind == SYMLINK:
            self.links[parts] = linkname

    def resolve(self, start: Parts, rest: Parts, follow_last: bool = True) -> Parts:
        """`rest` walked from directory `start`, following the archive's symbolic links as
        the kernel would; _Escapes if it leaves the target."""
        path = list(start)
        pending = list(reversed(rest))
        hops = 0
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not path:
                    raise _Escapes
                path.pop()
                continue
            target = self.links.get((*path, part))
            if target is None or (not pending and not follow_last):
                path.append(part)
                continue
            hops += 1
            if hops > MAX_LINK_HOPS or target.startswith("/"):
                raise _Escapes
            pending.extend(reversed(target.split("/")))  # relative to the link's folder
        return tuple(path)


def plan(members: list[tarfile.TarInfo]) -> Layout:
    """Check every member against the whole archive; the layout, or ModelError."""
    layout = Layout()
    for member in members:
        kind = _kind(member)
        parts = _parts(member.name, "member")
        if not parts:  # "." or "./": the target itself
            if kind != DIR:
                raise ModelError(f"unsafe member {member.name!r} in the model archive")
            continue
        link = member.linkname
        if kind in (SYMLINK, HARDLINK) and (
            not link or link.startswith("/") or "\\" in link or "\0" in link
        ):
            raise ModelError(
                f"unsafe link {member.name!r} -> {link!r} in the model archive "
                "(absolute, empty or odd)"
            )
        layout.add(parts, kind, member.linkname)
    for member in members:
        _check_paths(layout, member)
    return layout


def _check_paths(layout: Layout, member: tarfile.TarInfo) -> None:
    parts = _parts(member.name, "member")
    if not parts:
        return
    name, link = member.name, member.linkname
    try:
        parent = layout.resolve((), parts[:-1])
    except _Escapes:
        parent = None
    if parent != parts[:-1] or any(layout.kinds.get(parts[:d]) != DIR for d in range(len(parts))):
        raise ModelError(
            f"unsafe member {name!r} in the model archive (it would be written through a "
            "link or into a file)"
        )
    if member.issym():
        try:
            layout.resolve(parts[:-1], tuple(link.split("/")))
        except _Escapes:
            raise ModelError(
                f"unsafe link {name!r} -> {link!r} in the model archive (points outside it, "
                "or loops)"
            ) from None
    elif member.islnk() and _hard_link_source(layout, link) is None:
        raise ModelError(
            f"unsafe hard link {name!r} -> {link!r} in the model archive (not a file in it)"
        )


def _hard_link_source(layout: Layout, linkname: str) -> Parts | None:
    """Where a hard link's file really is (its name is relative to the archive's root),
    or None when that is not a regular file of the archive."""
    try:
        source = layout.resolve((), _parts(linkname, "hard link"))
    except (_Escapes, ModelError):
        return None
    return source if layout.kinds.get(source) == FILE else None


def extract_model(archive: Path, target: Path) -> Path:
    """Unpack a model.tar.gz into `target` (absent or empty) after checking every member
    against the whole archive; files readable by all (the serve image runs as its own
    user)."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ModelError(f"{target}: unpack a model archive into an empty directory only")
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            layout = plan(members)
            target.mkdir(parents=True, exist_ok=True)
            _write(tar, members, layout, target)
    except (tarfile.TarError, EOFError) as exc:
        raise ModelError(f"{archive}: not a readable tar archive ({exc})") from None
    for path in [target, *target.rglob("*")]:
        if path.is_symlink():
            continue
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


def _write(tar: tarfile.TarFile, members: list, layout: Layout, target: Path) -> None:
    """Directories, files, hard links, then symbolic links: while anything is written no
    symbolic link exists yet, so nothing can be written through one."""
    for parts, kind in sorted(layout.kinds.items()):
        if kind == DIR and parts:
            target.joinpath(*parts).mkdir(parents=True, exist_ok=True)
    by_kind = {FILE: [], HARDLINK: [], SYMLINK: []}
    for member in members:
        parts = _parts(member.name, "member")
        if parts and layout.kinds[parts] != DIR:
            by_kind[layout.kinds[parts]].append((parts, member))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for parts, member in by_kind[FILE]:
        source = tar.extractfile(member)
        with source, os.fdopen(os.open(target.joinpath(*parts), flags, 0o644), "wb") as out:
            shutil.copyfileobj(source, out)
    for parts, member in by_kind[HARDLINK]:
        source = _hard_link_source(layout, member.linkname)
        os.link(target.joinpath(*source), target.joinpath(*parts), follow_symlinks=False)
    for parts, member in by_kind[SYMLINK]:
        os.symlink(member.linkname, target.joinpath(*parts))

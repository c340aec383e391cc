"""Download and unpack the 133-breed dogImages archive.

Resumes a partial download with an HTTP Range request, starts clean when the
server ignores ranges, retries a bounded number of times, verifies the size
(and a SHA-256 when given) and the zip's CRCs, then unpacks safely. An archive
already in OUT is verified the same way before it is unpacked.

Plain http is refused unless asked for (`allow_http`), redirects included: anyone
on the way could swap the archive. What an archive may unpack to is bounded
(total size and member count, read from its directory before anything is
decompressed), so a zip bomb is one line, not a full disk.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tqdm import tqdm

from dogbreed.core.errors import ConfigError, DataError, DownloadError
from dogbreed.core.settings import http_url

log = logging.getLogger(__name__)

# The course's public copy of the dataset (Udacity dog project).
DEFAULT_URL = "https://s3-us-west-1.amazonaws.com/udacity-aind/dog-project/dogImages.zip"
CHUNK = 1 << 20
SPLITS = ("train", "valid", "test")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class Limits:
    """What an archive may unpack to. dogImages is about 1.1 GB in 8,351 images."""

    max_bytes: int = 8 << 30
    max_members: int = 100_000


def check_url(url: str, allow_http: bool = False) -> str:
    """The archive URL: https, or http only when asked for (ConfigError otherwise)."""
    url = http_url(url, "--url")
    if urlsplit(url).scheme != "https" and not allow_http:
        raise ConfigError(
            f"--url {url}: plain http can be altered on the way; use https "
            "(or --allow-http to accept it)"
        )
    return url


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects, but never from https down to plain http unless allowed."""

    def __init__(self, allow_http: bool) -> None:
        self.allow_http = allow_http

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(newurl).scheme != "https" and not self.allow_http:
            raise DownloadError(
                f"{req.full_url} redirects to plain http ({newurl}): refused "
                "(--allow-http to accept it)"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _remote_size(response) -> int | None:
    """Total size from Content-Range (206) or Content-Length (200)."""
    content_range = response.headers.get("Content-Range")
    if content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _attempt(
    opener: urllib.request.OpenerDirector, url: str, part: Path, timeout: float, progress: bool
) -> int | None:
    """One GET that appends to `part` (from its current size); returns the total size."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # asked past the end: the part file is already whole
            return have
        raise
    with response:
        if have and response.status != 206:  # the server ignored the range: start again
            have = 0
        total = _remote_size(response)
        with (
            part.open("ab" if have else "wb") as fh,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name.removesuffix(".part"),
                disable=not progress,
            ) as bar,
        ):
            while chunk := response.read(CHUNK):
                fh.write(chunk)
                bar.update(len(chunk))
    return total


def download(
    url: str,
    dest: Path,
    sha256: str | None = None,
    retries: int = 5,
    timeout: float = 60.0,
    progress: bool = True,
    allow_http: bool = False,
    limits: Limits = Limits(),
) -> Path:
    """Download url to dest (resuming dest.part); verify size, SHA-256 and zip CRCs."""
    url = check_url(url, allow_http)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    opener = urllib.request.build_opener(_Redirects(allow_http))
    last_error = "no attempt made"
    for attempt in range(1, retries + 1):
        try:
            total = _attempt(opener, url, part, timeout, progress)
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                raise DownloadError(
                    f"download of {url} refused: HTTP {exc.code} {exc.reason}"
                ) from None
            last_error, total = f"HTTP {exc.code} {exc.reason}", None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            last_error, total = f"{exc.__class__.__name__}: {exc}", None
        else:
            size = part.stat().st_size
            if total is None or size == total:
                break
            last_error = f"got {size} of {total} bytes"
            if size > total:
                part.unlink()
        time.sleep(min(2.0 ** (attempt - 1), 10.0) * 0.1)
    else:
        raise DownloadError(f"download of {url} failed after {retries} attempts ({last_error})")
    verify(part, sha256, limits)
    part.replace(dest)
    return dest


def verify(path: Path, sha256: str | None, limits: Limits = Limits()) -> None:
    """SHA-256 (when given), then what the zip would unpack to, then every member's CRC.

    A file that is corrupt or not the one expected is removed (the next run downloads
    it afresh); one over the limits is kept and refused.
    """
    if sha256:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                digest.update(chunk)
        if digest.hexdigest() != sha256.lower():
            path.unlink()
            raise DownloadError(f"SHA-256 mismatch for {path.name}: got {digest.hexdigest()}")
    try:
        with zipfile.ZipFile(path) as zf:
            check_bounds(zf, path.name, limits)  # before testzip decompresses anything
            bad = zf.testzip()
    except (zipfile.BadZipFile, EOFError) as exc:
        path.unlink()
        raise DownloadError(
            f"{path.name} is not a valid zip archive ({exc}); removed, run again to download afresh"
        ) from None
    if bad is not None:
        path.unlink()
        raise DownloadError(f"{path.name}: member {bad} fails its CRC check; removed")


def check_bounds(zf: zipfile.ZipFile, name: str, limits: Limits) -> None:
    """Refuse an archive whose directory promises more members or bytes than the limits.

    zipfile never writes more than a member's declared size (it stops there, and the
    CRC check fails), so the declared sizes bound what unpacking can write.
    """
    members = zf.infolist()
    total = sum(m.file_size for m in members)
    if len(members) > limits.max_members or total > limits.max_bytes:
        raise DownloadError(
            f"{name} would unpack to {total / 2**30:.2f} GiB in {len(members)} members, "
            f"over the limit of {limits.max_bytes / 2**30:.2f} GiB / {limits.max_members} "
            "members: refused (a zip bomb?)"
        )


def _split_root(tree: Path) -> Path:
    """The folder under `tree` that holds train/, valid/ and test/."""
    for candidate in [tree, *sorted(p for p in tree.rglob("*") if p.is_dir())]:
        if all((candidate / s).is_dir() for s in SPLITS):
            return candidate
    raise DataError("the archive holds no folder with train/, valid/ and test/ in it")


def _extract(zf: zipfile.ZipFile, staging: Path, limits: Limits) -> None:
    """Every member with a safe name, counting what is written against the limit too."""
    root = staging.resolve()
    written = 0
    for member in zf.infolist():
        target = (staging / member.filename).resolve()
        if not target.is_relative_to(root) or member.filename.startswith("__MACOSX"):
            continue
        if member.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(member) as src, target.open("wb") as dst:
            while chunk := src.read(CHUNK):
                written += len(chunk)
                if written > limits.max_bytes:
                    raise DownloadError(
                        f"the archive unpacks to more than {limits.max_bytes / 2**30:.2f} GiB: "
                        "refused (a zip bomb?)"
                    )
                dst.write(chunk)


def unpack(archive: Path, out: Path, limits: Limits = Limits()) -> Path:
    """Extract into out/ so that out/{train,valid,test} exist; refuses unsafe paths."""
    staging = out / ".unpack"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            check_bounds(zf, archive.name, limits)
            _extract(zf, staging, limits)
        root = _split_root(staging)
        for split in SPLITS:
            shutil.rmtree(out / split, ignore_errors=True)
            shutil.move(str(root / split), str(out / split))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def fetch(
    out: Path,
    url: str = DEFAULT_URL,
    sha256: str | None = None,
    keep_archive: bool = False,
    progress: bool = True,
    allow_http: bool = False,
    limits: Limits = Limits(),
) -> dict[str, int]:
    """Download (or verify the archive already in `out`) and unpack the dataset; returns
    image counts per split."""
    url = check_url(url, allow_http)
    if sha256 is not None and not _SHA256.fullmatch(sha256):
        raise ConfigError(f"--sha256 {sha256!r}: expected 64 hexadecimal digits")
    out.mkdir(parents=True, exist_ok=True)
    archive = out / (Path(url.split("?", 1)[0]).name or "dataset.zip")
    if archive.is_file():
        log.info("%s is here already: verifying it instead of downloading", archive)
        verify(archive, sha256, limits)
    else:
        download(
            url, archive, sha256=sha256, progress=progress, allow_http=allow_http, limits=limits
        )
    unpack(archive, out, limits)
    if not keep_archive:
        archive.unlink()
    return {s: sum(1 for p in (out / s).rglob("*") if p.is_file()) for s in SPLITS}

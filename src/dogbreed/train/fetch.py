"""Download and unpack the 133-breed dogImages archive.

Resumes a partial download with an HTTP Range request, starts clean when the
server ignores ranges, retries a bounded number of times, verifies the size
(and a SHA-256 when given) and the zip's CRCs, then unpacks safely.
"""

from __future__ import annotations

import hashlib
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from dogbreed.core.errors import DataError, DownloadError
from dogbreed.core.settings import http_url

# The course's public copy of the dataset (Udacity dog project).
DEFAULT_URL = "https://s3-us-west-1.amazonaws.com/udacity-aind/dog-project/dogImages.zip"
CHUNK = 1 << 20
SPLITS = ("train", "valid", "test")


def _remote_size(response) -> int | None:
    """Total size from Content-Range (206) or Content-Length (200)."""
    content_range = response.headers.get("Content-Range")
    if content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _attempt(url: str, part: Path, timeout: float, progress: bool) -> int | None:
    """One GET that appends to `part` (from its current size); returns the total size."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
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
) -> Path:
    """Download url to dest (resuming dest.part); verify size, SHA-256 and zip CRCs."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_error = "no attempt made"
    for attempt in range(1, retries + 1):
        try:
            total = _attempt(url, part, timeout, progress)
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
    _verify(part, sha256)
    part.replace(dest)
    return dest


def _verify(path: Path, sha256: str | None) -> None:
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
            bad = zf.testzip()
    except zipfile.BadZipFile as exc:
        path.unlink()
        raise DownloadError(
            f"{path.name} is not a valid zip archive ({exc}); removed, run again to download afresh"
        ) from None
    if bad is not None:
        path.unlink()
        raise DownloadError(f"{path.name}: member {bad} fails its CRC check; removed")


def _split_root(tree: Path) -> Path:
    """The folder under `tree` that holds train/, valid/ and test/."""
    for candidate in [tree, *sorted(p for p in tree.rglob("*") if p.is_dir())]:
        if all((candidate / s).is_dir() for s in SPLITS):
            return candidate
    raise DataError("the archive holds no folder with train/, valid/ and test/ in it")


def unpack(archive: Path, out: Path) -> Path:
    """Extract into out/ so that out/{train,valid,test} exist; refuses unsafe paths."""
    staging = out / ".unpack"
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            target = (staging / member).resolve()
            if not target.is_relative_to(staging.resolve()) or member.startswith("__MACOSX"):
                continue
            zf.extract(member, staging)
    root = _split_root(staging)
    for split in SPLITS:
        shutil.rmtree(out / split, ignore_errors=True)
        shutil.move(str(root / split), str(out / split))
    shutil.rmtree(staging, ignore_errors=True)
    return out


def fetch(
    out: Path,
    url: str = DEFAULT_URL,
    sha256: str | None = None,
    keep_archive: bool = False,
    progress: bool = True,
) -> dict[str, int]:
    """Download and unpack the dataset; returns image counts per split."""
    out.mkdir(parents=True, exist_ok=True)
    url = http_url(url, "--url")
    archive = out / (Path(url.split("?", 1)[0]).name or "dataset.zip")
    if not archive.is_file():
        download(url, archive, sha256=sha256, progress=progress)
    unpack(archive, out)
    if not keep_archive:
        archive.unlink()
    return {s: sum(1 for p in (out / s).rglob("*") if p.is_file()) for s in SPLITS}

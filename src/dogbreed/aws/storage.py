"""`dogbreed aws upload-data`: put a dataset tree in S3, skipping files already there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from dogbreed.aws.context import Ctx, aws_error
from dogbreed.aws.policies import split_s3
from dogbreed.core.errors import AwsError, ConfigError


@dataclass(frozen=True)
class UploadOptions:
    local: Path
    uri: str
    progress: bool = False  # a progress bar on stderr


def cmd_upload_data(ctx: Ctx, opts: UploadOptions) -> int:
    """Upload what is missing or differs in size; returns the number of files sent."""
    bucket, prefix = split_s3(opts.uri, "upload-data URI")
    if not opts.local.is_dir():
        raise ConfigError(f"{opts.local} is not a directory")
    files = sorted(p for p in opts.local.rglob("*") if p.is_file())
    from tqdm import tqdm

    sent, sent_bytes = 0, 0
    with tqdm(
        total=sum(p.stat().st_size for p in files),
        unit="B",
        unit_scale=True,
        desc=f"s3://{bucket}/{prefix}",
        disable=not opts.progress,
    ) as bar:
        for path in files:
            key = "/".join(filter(None, [prefix, path.relative_to(opts.local).as_posix()]))
            size = path.stat().st_size
            # Equal size counts as uploaded: a dataset's files are not edited in place.
            head = ctx.find("s3", "head_object", Bucket=bucket, Key=key)
            if head is None or head["ContentLength"] != size:
                _put(ctx, path, bucket, key)
                sent, sent_bytes = sent + 1, sent_bytes + size
            bar.update(size)
    where = f"s3://{bucket}/{prefix}{'/' if prefix else ''}"
    if ctx.dry_run:  # one line for the lot: a dataset is thousands of put_object requests
        ctx.say(
            f"would upload {_files(sent)} ({human_bytes(sent_bytes)}) to {where}, one "
            "s3.put_object each (a real run skips those already there; --verbose lists them)"
        )
    else:
        ctx.say(f"uploaded {sent:,} of {_files(len(files))} ({human_bytes(sent_bytes)}) to {where}")
    return sent


def _files(count: int) -> str:
    return f"{count:,} file{'' if count == 1 else 's'}"


def human_bytes(n: int) -> str:
    """1234567 -> '1.2 MB' (decimal units, as S3's console shows sizes)."""
    if n < 1000:
        return f"{n} bytes"
    size, unit = n / 1000, "kB"
    for bigger in ("MB", "GB", "TB"):
        if size < 1000:
            break
        size, unit = size / 1000, bigger
    return f"{size:.1f} {unit}"


def _put(ctx: Ctx, path: Path, bucket: str, key: str) -> None:
    if ctx.dry_run:
        ctx.would_write("s3", "put_object", Bucket=bucket, Key=key)
        return
    from boto3.exceptions import S3UploadFailedError

    # upload_file (multipart for large files) is boto3's transfer layer, not a client call.
    try:
        ctx.client("s3").upload_file(str(path), bucket, key)
    except (S3UploadFailedError, ClientError, BotoCoreError) as exc:
        if "NoSuchBucket" in str(exc):  # the transfer layer keeps only the message
            raise AwsError(
                f"s3 upload_file: NoSuchBucket: bucket {bucket} does not exist: create it "
                "in your account and region, or name a bucket of yours"
            ) from None
        raise aws_error("s3", "upload_file", exc) from None

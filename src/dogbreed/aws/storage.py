"""`dogbreed aws upload-data`: put a dataset tree in S3, skipping files already there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from dogbreed.aws.context import Ctx, aws_error
from dogbreed.aws.policies import split_s3
from dogbreed.core.errors import ConfigError


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

    sent = 0
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
                sent += 1
            bar.update(size)
    ctx.say(f"uploaded {sent} of {len(files)} files to s3://{bucket}/{prefix}")
    return sent


def _put(ctx: Ctx, path: Path, bucket: str, key: str) -> None:
    if ctx.dry_run:
        ctx.write("s3", "put_object", Bucket=bucket, Key=key)
        return
    from boto3.exceptions import S3UploadFailedError

    # upload_file (multipart for large files) is boto3's transfer layer, not a client call.
    try:
        ctx.client("s3").upload_file(str(path), bucket, key)
    except (S3UploadFailedError, ClientError, BotoCoreError) as exc:
        raise aws_error("s3", "upload_file", exc) from None

"""Dataset storage through Beam's FileSystems (local paths and s3://), with atomic writes.

A file is visible under its final name only when complete: locally via a temp file and an atomic
rename, on S3 via one upload that completes atomically.
"""
import os
import uuid

from apache_beam.io.filesystems import FileSystems

from tfrecord.errors import UserError

TMP_DIR = ".tmp"  # beside the split folders, so a split prefix only ever holds finished shards


def is_s3(path):
    return path.startswith("s3://")


def join(root, relpath):
    return FileSystems.join(root, *relpath.split("/"))


def write_atomic(root, relpath, data):
    final = join(root, relpath)
    target = final if is_s3(root) else join(root, f"{TMP_DIR}/{uuid.uuid4().hex}")
    with FileSystems.create(target) as f:
        f.write(data)
    if target != final:
        os.makedirs(os.path.dirname(final), exist_ok=True)
        FileSystems.rename([target], [final])


def read(path):
    with FileSystems.open(path, compression_type="uncompressed") as f:
        return f.read()


def list_files(root):
    """Every file under `root`, recursively, as full paths."""
    return [m.path for r in FileSystems.match([join(root, "**")]) for m in r.metadata_list]


def delete(paths):
    if paths:
        FileSystems.delete(paths)


def check_writable(root, s3_client):
    """Fail before any work when the output cannot be written (missing bucket, read-only dir)."""
    if is_s3(root):
        bucket = root[len("s3://"):].split("/", 1)[0]
        try:
            s3_client.head_bucket(Bucket=bucket)
        except Exception as e:  # botocore's ClientError, EndpointConnectionError, ...
            raise UserError(f"output {root}: bucket {bucket!r} is not accessible ({e})") from None
        return
    path = os.path.abspath(root)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"output {root}: {path} is not a writable directory")

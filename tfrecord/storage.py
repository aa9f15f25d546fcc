"""Files under a location, local or `s3://`, through one API; every AWS client from one bounded boto3 session.

Every client has bounded connect/read timeouts and a bounded number of attempts, so an unreachable
endpoint is one `UserError` line within seconds, never minutes of retries. S3 settings follow boto3's
usual chain (credentials, AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3, ...); `configure()` adds explicit ones,
e.g. from Beam's S3 flags (`--s3_endpoint_url`, ...).

A location is a local path or `s3://bucket[/prefix]`; `is_s3` is the one place that tells them apart, and
refuses anything else that looks like a URI (`S3://b`, `s3://` without a bucket, `s3:/b`, `gs://b`) in one line.
A write is visible under its final name only when complete: locally through `localfs` (a unique temp file
beside the target, fsynced and renamed), on S3 via one PUT (or one completed multipart upload). `lock`
holds a location for one writer at a time. boto3 is imported only for s3:// work.
"""
import builtins
import contextlib
import os
import re
import threading
import urllib.parse

from tfrecord import localfs
from tfrecord.errors import UserError

CONNECT_TIMEOUT = 5  # seconds per connection attempt
READ_TIMEOUT = 60  # seconds without a byte from an established connection
MAX_ATTEMPTS = 3  # per call, first try included (botocore's "standard" retry mode)

# Beam's S3 flags (PipelineOptions S3Options) -> boto3 client arguments
BEAM_S3_FLAGS = {
    "s3_endpoint_url": "endpoint_url", "s3_region_name": "region_name", "s3_access_key_id": "aws_access_key_id",
    "s3_secret_access_key": "aws_secret_access_key", "s3_session_token": "aws_session_token",
    "s3_api_version": "api_version", "s3_verify": "verify", "s3_disable_ssl": "use_ssl",
}

_s3_settings = {}
_clients = {}
_lock = threading.Lock()


class NotFound(UserError):
    """A file or object that does not exist."""


def add_s3_arguments(parser):
    """Beam's S3 flags on a plain argparse parser (for commands that are not Beam jobs)."""
    for flag in BEAM_S3_FLAGS:
        if flag == "s3_disable_ssl":
            parser.add_argument(f"--{flag}", action="store_true", help="plain HTTP to the S3 endpoint")
        else:
            parser.add_argument(f"--{flag}", help=f"S3 client setting `{BEAM_S3_FLAGS[flag]}`, as in Beam")


def s3_settings(values):
    """Beam-style S3 options (a mapping holding `s3_*` keys, e.g. PipelineOptions.get_all_options()) ->
    settings for `configure`."""
    out = {arg: values[flag] for flag, arg in BEAM_S3_FLAGS.items() if values.get(flag) not in (None, False)}
    if "use_ssl" in out:
        out["use_ssl"] = False
    return out


def configure(settings):
    """Use these S3 client settings in this process from now on (on top of boto3's chain)."""
    global _s3_settings
    with _lock:
        _s3_settings = dict(settings)
        _clients.clear()


URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/")  # anything that looks like scheme:/ or scheme://
S3_URI = re.compile(r"s3://[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?(/.*)?", re.DOTALL)  # S3's bucket characters


def is_s3(uri):
    """Whether `uri` is `s3://bucket[/prefix]` (False for a local path). Raises UserError for anything else
    that looks like a URI, which would otherwise become a local folder named `s3:` or `S3:`."""
    text = str(uri)
    if not URI.match(text):
        return False
    if not S3_URI.fullmatch(text):
        raise UserError(f"{text}: not a valid location (a local path, or s3://bucket[/prefix] with a bucket "
                        f"name of up to 63 lower-case letters, digits, dots and hyphens)")
    return True


def root(location):
    """A folder location (local or s3://, validated as `is_s3` does) without its trailing slashes."""
    is_s3(location)
    return str(location).rstrip("/") or "/"


def local_path(path, what="path"):
    """`path` when it is a local path; a URI (valid or not) is refused in one line naming `what`."""
    if is_s3(path):
        raise UserError(f"{what} {path}: a local path is needed here, not s3://")
    return os.fspath(path)


def split_s3(uri):
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def join(prefix, *parts):
    if is_s3(prefix):
        return "/".join([prefix.rstrip("/"), *parts])
    return os.path.join(prefix, *parts)


def relative(root, uri):
    """`uri` relative to the folder `root`, with / separators."""
    rel = uri[len(join(root, "")):]
    return rel if is_s3(root) else rel.replace(os.sep, "/")


def _client_config():
    from botocore.config import Config

    return Config(connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
                  retries={"total_max_attempts": MAX_ATTEMPTS, "mode": "standard"})


def session(region=None):
    """A boto3 session whose clients (S3 here, SageMaker and logs in launch/aws.py, the SageMaker SDK's) all
    get the bounded timeouts and retries."""
    import boto3
    import botocore.session

    core = botocore.session.get_session()
    core.set_default_client_config(_client_config())
    return boto3.Session(botocore_session=core, region_name=region)


def client():
    """The one S3 client per settings and AWS_* environment in this process (boto3 clients are thread-safe)."""
    extra = dict(_s3_settings)
    region = extra.pop("region_name", None)
    environment = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    key = (os.getpid(), region, tuple(sorted(extra.items())), environment)
    with _lock:
        if key not in _clients:
            _clients[key] = session(region).client("s3", **extra)
        return _clients[key]


@contextlib.contextmanager
def aws_errors(what):
    """boto3's exceptions -> one UserError line naming `what` (NotFound for a missing key)."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError
    from botocore.parsers import ResponseParserError

    try:
        yield
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            raise NotFound(f"{what}: not found") from None
        if code == "NoSuchBucket" and is_s3(what):
            raise UserError(f"{what}: bucket {split_s3(what)[0]!r} does not exist") from None
        raise UserError(f"{what}: {e}") from None
    except (EndpointConnectionError, ConnectTimeoutError) as e:
        endpoint = urllib.parse.urlsplit(e.kwargs.get("endpoint_url", "")).netloc or "?"
        raise UserError(f"{what}: endpoint {endpoint} not reachable ({MAX_ATTEMPTS} attempts)") from None
    except (BotoCoreError, Boto3Error) as e:  # read timeouts, no credentials, a failed upload, ...
        raise UserError(f"{what}: {e}") from None
    except ResponseParserError as e:  # an answer that is not AWS's XML or JSON (a proxy's page, another service)
        raise UserError(f"{what}: unreadable answer from the endpoint ({str(e).splitlines()[0]})") from None


def list(prefix):  # noqa: A001  (storage.list, as fsspec and tf.io.gfile name it)
    """[(uri, size)] of every object under `prefix`, in key order. On S3 every key that starts with the
    prefix (SageMaker's S3Prefix: end a folder with /) but zero-byte folder markers (`ds/train/`, what the S3
    console makes); locally the file itself, or a folder's files (symbolic links to folders not followed)."""
    if is_s3(prefix):
        bucket, key = split_s3(prefix)
        with aws_errors(prefix):
            pages = client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
            return sorted((f"s3://{bucket}/{o['Key']}", o["Size"]) for page in pages for o in page.get("Contents", [])
                          if not (o["Key"].endswith("/") and o["Size"] == 0))  # a folder marker is not a file
    if os.path.isfile(prefix):
        return [(prefix, os.path.getsize(prefix))]
    found = [os.path.join(d, f) for d, _, files in os.walk(prefix) for f in files]
    return sorted((path, os.path.getsize(path)) for path in found)


def exists(uri):
    """Whether `uri` is a file (an object on S3)."""
    if not is_s3(uri):
        return os.path.isfile(uri)
    bucket, key = split_s3(uri)
    try:
        with aws_errors(uri):
            client().head_object(Bucket=bucket, Key=key)
    except NotFound:
        return False
    return True


def open(uri):  # noqa: A001
    """A binary stream with `.read(n)` and `.close()`; NotFound if there is no such file."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with aws_errors(uri):
            return client().get_object(Bucket=bucket, Key=key)["Body"]
    try:
        return builtins.open(uri, "rb")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise NotFound(f"{uri}: not found") from None


def read(uri, limit=None):
    """The bytes of `uri`; with `limit`, at most limit + 1 of them (so a caller sees that the file is larger
    than `limit` without holding more of it)."""
    size = -1 if limit is None else limit + 1
    with open(uri) as f:
        if not is_s3(uri):
            return f.read(size)
        with aws_errors(uri):
            return f.read(size)


def write_atomic(uri, data):
    """Write `data` (bytes) so that `uri` exists only when complete: one PUT, or localfs.write_atomic."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with aws_errors(uri):
            client().put_object(Bucket=bucket, Key=key, Body=data)
        return
    localfs.write_atomic(uri, data)


def write_stream(uri, stream):
    """Copy the readable binary stream `stream` (`.read(n)`) to `uri` whole or not at all, a block at a time, so
    memory does not grow with its length: on S3 one managed (multipart) upload, locally localfs.copy_atomic."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with aws_errors(uri):
            client().upload_fileobj(stream, bucket, key)
        return
    localfs.copy_atomic(stream, uri)


def put_file(path, uri):
    """Copy a local file to `uri` (s3:// or a local path), atomically."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with aws_errors(uri):
            client().upload_file(path, bucket, key)
        return
    with builtins.open(path, "rb") as src:
        localfs.copy_atomic(src, uri)


def delete(uris):
    """Remove these files or objects (missing ones are fine)."""
    keys = {}  # bucket -> keys, in the order given
    for uri in uris:
        if is_s3(uri):
            keys.setdefault(split_s3(uri)[0], []).append(split_s3(uri)[1])
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(uri)
    for bucket, names in keys.items():
        for start in range(0, len(names), 1000):  # DeleteObjects takes up to 1000 keys
            batch = names[start:start + 1000]
            with aws_errors(f"s3://{bucket}/{batch[0]}"):
                response = client().delete_objects(
                    Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            if response.get("Errors"):
                error = response["Errors"][0]
                raise UserError(f"s3://{bucket}/{error['Key']}: not deleted ({error.get('Code')}: {error.get('Message')})")


def check_writable(root):
    """Fail before any work when `root` cannot be written (missing bucket, unreachable endpoint, read-only dir)."""
    if is_s3(root):
        bucket = split_s3(root)[0]
        try:
            with aws_errors(root):
                client().head_bucket(Bucket=bucket)
        except UserError as e:
            raise UserError(f"output {root}: bucket {bucket!r} is not accessible ({str(e).split(': ', 1)[-1]})") from None
        return
    path = os.path.abspath(root)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"output {root}: {path} is not a writable directory")


def create(uri, data):
    """Write `data` (bytes) whole to `uri` only if nothing is there: locally localfs's atomic writer with a
    hard link for the rename (which never replaces), on S3 a PutObject with If-None-Match: *. Returns
    False, writing nothing, when `uri` exists (or another writer creates it first)."""
    if not is_s3(uri):
        try:
            with localfs.atomic_file(uri, replace=False) as f:
                f.write(data)
        except FileExistsError:
            return False
        return True
    from botocore.exceptions import ClientError

    bucket, key = split_s3(uri)
    with aws_errors(uri):
        try:
            client().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
    return True


@contextlib.contextmanager
def lock(root, what):
    """Hold `root` (a folder, local or s3://) for one writer during the with-block: locally an fcntl lock
    on `root`/.lock (localfs.exclusive_lock); on S3 a `.lock` object `create`d (a conditional PutObject),
    deleted at the end. A second writer is refused at once with a UserError naming `what`.
    A run killed on S3 leaves its lock object; the error line says how to remove it."""
    uri = join(root, localfs.LOCK_NAME)
    if not is_s3(root):
        with localfs.disk_errors(root):
            os.makedirs(root, exist_ok=True)
        with localfs.exclusive_lock(uri, what):
            yield
        return
    if not create(uri, f"{os.getpid()}\n".encode()):
        raise UserError(f"{what} is in use by another run (it holds {uri}; if no run is writing there, "
                        f"delete that object)")
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):  # the run's own error is the one to report, not the release's
            delete([uri])
        raise
    delete([uri])

"""Files under a location, local or `s3://`, through one API; every AWS client from one bounded boto3 session.

Every client has bounded connect/read timeouts and a bounded number of attempts, so an unreachable
endpoint is one `UserError` line within seconds, never minutes of retries. S3 settings follow boto3's
usual chain (credentials, AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3, ...); `configure()` adds explicit ones,
e.g. from Beam's S3 flags (`--s3_endpoint_url`, ...), and `settings()` hands them to other processes.

A write is visible under its final name only when complete: locally via a temp file and an atomic
rename, on S3 via one PUT (or one completed multipart upload). boto3 is imported only for s3:// work.
"""
import builtins
import contextlib
import os
import shutil
import threading
import urllib.parse
import uuid

from tfrecord.errors import UserError

TMP_DIR = ".tmp"  # a producer's temp files, beside the split folders
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


def settings():
    """The S3 settings in force, to pass to `configure` in another process (e.g. a Beam worker)."""
    return dict(_s3_settings)


def is_s3(uri):
    return str(uri).startswith("s3://")


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
    prefix (SageMaker's S3Prefix: end a folder with /); locally the file itself, or a folder's files."""
    if is_s3(prefix):
        bucket, key = split_s3(prefix)
        with aws_errors(prefix):
            pages = client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
            return sorted((f"s3://{bucket}/{o['Key']}", o["Size"]) for page in pages for o in page.get("Contents", []))
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


def read(uri):
    with open(uri) as f:
        if not is_s3(uri):
            return f.read()
        with aws_errors(uri):
            return f.read()


def write_atomic(uri, data, tmp_dir=None):
    """Write `data` so that `uri` exists only when complete; locally through a temp file in `tmp_dir`
    (default: beside `uri`) renamed into place."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with aws_errors(uri):
            client().put_object(Bucket=bucket, Key=key, Body=data)
        return
    folder = os.path.dirname(os.path.abspath(uri))
    tmp = os.path.join(tmp_dir or folder, f".{os.path.basename(uri)}.{uuid.uuid4().hex}.tmp")
    os.makedirs(os.path.dirname(tmp), exist_ok=True)
    os.makedirs(folder, exist_ok=True)
    try:
        with builtins.open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, uri)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def put_file(path, uri):
    """Copy a local file to `uri` (s3:// or a local path), atomically."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with aws_errors(uri):
            client().upload_file(path, bucket, key)
        return
    folder = os.path.dirname(os.path.abspath(uri))
    tmp = os.path.join(folder, f".{os.path.basename(uri)}.{uuid.uuid4().hex}.tmp")
    os.makedirs(folder, exist_ok=True)
    shutil.copyfile(path, tmp)
    os.replace(tmp, uri)


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

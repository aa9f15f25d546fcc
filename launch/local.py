"""`launch local`: the SageMaker training job on this machine, no Docker and no AWS.

Builds the container contract in a temporary root (config JSONs, input/data, model, output,
checkpoints, the SM_* variables; our readers and trainer find it through CAPTCHA_PIPELINE_OPT_ML),
feeds each Pipe channel through `<channel>_<epoch>` FIFOs as SageMaker's agent does (objects in key
order, or shuffled by the ShuffleConfig seed, split by host for ShardedByS3Key), runs the trainer from
the same source folder `launch train` uploads, and copies model.tar.gz / output.tar.gz / failure to
`<output-path>/<job>/output/`, exiting with the trainer's status.
"""
import argparse
import collections
import contextlib
import errno
import fcntl
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zlib

from launch import job_config, source, storage
from tfrecord import sagemaker
from tfrecord.errors import UserError, exits_on_user_error

CHUNK = 1 << 20
HOST = "algo-1"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="captcha-pipeline launch local", description=__doc__.splitlines()[0])
    job_config.add_job_arguments(p)
    p.add_argument("--root", help="container root to build and keep (default: a temporary folder, removed after)")
    p.add_argument("--checkpoint-path", help="local folder mounted as the checkpoints dir (resume across runs)")
    return p.parse_args(argv)


def objects_for_host(objects, config, epoch, host_index=0, host_count=1):
    """The objects one host receives in one epoch: key order, or shuffled (seed, epoch), then sharded by key."""
    objects = list(objects)
    seed = config.get("ShuffleConfig", {}).get("Seed")
    if seed is not None:
        random.Random(f"{seed}/{epoch}").shuffle(objects)
    if config["S3DistributionType"] == "ShardedByS3Key":
        objects = objects[host_index::host_count]
    return objects


@contextlib.contextmanager
def container_root(root):
    """Point `tfrecord.sagemaker` at `root` in this process (no SM_* variables from outside)."""
    saved = dict(os.environ)
    for name in [n for n in os.environ if n.startswith("SM_")]:
        del os.environ[name]
    os.environ[sagemaker.ROOT_ENV] = root
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class Progress:
    """Bytes streamed per channel and epoch: a live bar on a terminal, one line per epoch otherwise."""

    def __init__(self, stream=None):
        self.stream, self.lock = stream or sys.stderr, threading.Lock()
        self.live = self.stream.isatty()

    def update(self, label, done, total, final=False):
        if not (self.live or final):
            return
        fraction = done / total if total else 1.0
        bar = "#" * int(20 * fraction)
        line = f"pipe {label:<14} [{bar:<20}] {done / 1e6:8.2f} / {total / 1e6:.2f} MB"
        with self.lock:
            self.stream.write(("\r" if self.live else "") + line + ("\n" if final else ""))
            self.stream.flush()


def _open_fifo_for_writing(path, stop):
    """Wait for the trainer to open the FIFO (without blocking past `stop`); a blocking fd, or None."""
    while not stop.is_set():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
            time.sleep(0.05)
            continue
        os.set_blocking(fd, True)
        with contextlib.suppress(OSError, AttributeError):  # fewer wake-ups than the 64 KiB default
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, CHUNK)
        return fd
    return None


def _object_payloads(uri, config):
    """The bytes SageMaker puts in the pipe for one object: gunzipped if Gzip, one RecordIO record if wrapped."""
    gunzip = zlib.decompressobj(wbits=47) if config["CompressionType"] == "Gzip" else None
    with storage.open_object(uri) as f:
        chunks = iter(lambda: f.read(CHUNK), b"")
        if config["RecordWrapperType"] == "RecordIO":
            from tfrecord.pipe import recordio_encode

            data = b"".join(chunks)
            yield len(data), recordio_encode(gunzip.decompress(data) + gunzip.flush() if gunzip else data)
            return
        for chunk in chunks:
            yield len(chunk), gunzip.decompress(chunk) if gunzip else chunk
        if gunzip:
            yield 0, gunzip.flush()


def feed_pipe(channel, objects, config, progress, stop, errors):
    """Epoch after epoch: create `<channel>_<epoch>`, stream the objects into it, close it."""
    try:
        epoch = 0
        while not stop.is_set():
            path = sagemaker.fifo_path(channel, epoch)
            os.mkfifo(path)
            fd = _open_fifo_for_writing(path, stop)
            if fd is None:
                return
            batch = objects_for_host(objects, config, epoch)
            total, done = sum(size for _, size in batch), 0
            with os.fdopen(fd, "wb") as pipe:
                try:
                    for uri, _ in batch:
                        for size, payload in _object_payloads(uri, config):
                            pipe.write(payload)
                            done += size
                            progress.update(f"{channel}_{epoch}", done, total)
                except BrokenPipeError:  # the reader stopped early: this epoch's stream ends here
                    pass
            progress.update(f"{channel}_{epoch}", done, total, final=True)
            epoch += 1
    except Exception as e:  # reported by the main thread; the trainer then fails on a missing FIFO
        errors.append(f"pipe {channel}: {type(e).__name__}: {e}")
        stop.set()


def download_channel(channel, objects, prefix, config):
    """File/FastFile mode: the channel's objects under `channel_dir(channel)`, keyed relative to the prefix."""
    target = sagemaker.channel_dir(channel)
    for uri, _ in objects_for_host(objects, config, 0):
        relative = uri[len(prefix):].lstrip("/") if uri != prefix else os.path.basename(uri)
        path = os.path.join(target, *relative.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with storage.open_object(uri) as src, open(path, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)


def write_contract(channels, hps):
    """Folders and config JSONs under the root; returns the SM_* variables for the trainer."""
    for path in (sagemaker.config_dir(), sagemaker.data_dir(), sagemaker.model_dir(),
                 sagemaker.output_data_dir(), sagemaker.checkpoint_dir()):
        os.makedirs(path, exist_ok=True)
    configs = {name: config for name, (_, config) in channels.items()}
    resources = {"current_host": HOST, "hosts": [HOST], "network_interface_name": "eth0"}
    for filename, content in (("hyperparameters.json", hps), ("inputdataconfig.json", configs),
                              ("resourceconfig.json", resources)):
        with open(os.path.join(sagemaker.config_dir(), filename), "w") as f:
            json.dump(content, f, indent=2)
    env = {"SM_MODEL_DIR": sagemaker.model_dir(), "SM_OUTPUT_DATA_DIR": sagemaker.output_data_dir(),
           "SM_OUTPUT_DIR": sagemaker.output_dir(), "SM_INPUT_DIR": sagemaker.input_dir(),
           "SM_INPUT_CONFIG_DIR": sagemaker.config_dir(), "SM_CHANNELS": json.dumps(sorted(channels)),
           "SM_HPS": json.dumps(hps), "SM_HOSTS": json.dumps([HOST]), "SM_CURRENT_HOST": HOST,
           "SM_NUM_GPUS": "0", "SM_NUM_CPUS": str(os.cpu_count()), "SM_INPUT_DATA_CONFIG": json.dumps(configs)}
    env.update({f"SM_CHANNEL_{name.upper()}": sagemaker.channel_dir(name) for name in channels})
    return env


def run_trainer(code_dir, hps, env):
    """The script-mode command (`--name value` per hyperparameter); output passed through; (status, last lines)."""
    command = [sys.executable, source.ENTRY_POINT] + [a for k, v in hps.items() for a in (f"--{k}", v)]
    tail = collections.deque(maxlen=20)
    proc = subprocess.Popen(command, cwd=code_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace")
    try:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            tail.append(line.rstrip("\n"))
        return proc.wait(), list(tail)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()


def tar_dir(path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in sorted(os.listdir(path)):
            tar.add(os.path.join(path, name), arcname=name)
    return buffer.getvalue()


def upload_outputs(output_prefix, status):
    """model.tar.gz (on success), output.tar.gz and failure (on failure), as SageMaker arranges them."""
    uploads = {"output.tar.gz": tar_dir(sagemaker.output_data_dir())}
    if status == 0:
        uploads["model.tar.gz"] = tar_dir(sagemaker.model_dir())
    elif os.path.exists(sagemaker.failure_path()):
        with open(sagemaker.failure_path(), "rb") as f:
            uploads["failure"] = f.read()
    for name, data in uploads.items():
        with tempfile.NamedTemporaryFile() as tmp:
            tmp.write(data)
            tmp.flush()
            storage.put_file(tmp.name, storage.join(output_prefix, name))
    return storage.join(output_prefix, "model.tar.gz")


def run_job(args, root):
    manifest = job_config.read_manifest(args.dataset)
    if args.instance_count != 1:
        raise UserError("launch local runs one host: use --instance-count 1 (sharding is a `launch train` matter)")
    name = job_config.job_name(args)
    hps = job_config.hyperparameters(args.hp)
    channels = job_config.input_data_config(args, manifest)
    with container_root(root):
        sm_env = write_contract(channels, hps)
        if args.checkpoint_path:
            os.makedirs(args.checkpoint_path, exist_ok=True)
            os.rmdir(sagemaker.checkpoint_dir())
            os.symlink(os.path.abspath(args.checkpoint_path), sagemaker.checkpoint_dir())
        code_dir = os.path.join(root, "code")
        source.write(code_dir)
        stop, errors, feeders, progress = threading.Event(), [], [], Progress()
        for channel, (prefix, config) in channels.items():
            objects = storage.list_objects(prefix)
            if not objects:
                raise UserError(f"channel {channel}: no objects under {prefix}")
            if config["TrainingInputMode"] == "Pipe":
                feeders.append(threading.Thread(target=feed_pipe, daemon=True,
                                                args=(channel, objects, config, progress, stop, errors)))
            else:
                download_channel(channel, objects, prefix, config)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
        env.update(sm_env)
        print(f"local training job {name}: root {root}, {args.input_mode} mode", flush=True)
        for feeder in feeders:
            feeder.start()
        try:
            status, tail = run_trainer(code_dir, hps, env)
        finally:
            stop.set()
            for feeder in feeders:
                feeder.join(timeout=30)
        if status != 0 and not os.path.exists(sagemaker.failure_path()):
            with open(sagemaker.failure_path(), "w") as f:
                f.write("\n".join([f"AlgorithmError: ExecuteUserScriptError: ExitCode {status}", *errors, *tail]) + "\n")
        model = upload_outputs(storage.join(args.output_path, name, "output"), status)
        if status != 0:
            with open(sagemaker.failure_path()) as f:
                reason = f.read().strip().splitlines()
            print(f"error: training job {name} failed: {reason[0] if reason else status}", file=sys.stderr)
            return status
    print(f"training job {name} completed\nmodel: {model}", flush=True)
    return 0


@exits_on_user_error
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.root:
        if os.path.exists(args.root) and os.listdir(args.root):
            raise UserError(f"--root {args.root}: not empty")
        os.makedirs(args.root, exist_ok=True)
        return run_job(args, os.path.abspath(args.root))
    root = tempfile.mkdtemp(prefix="captcha-opt-ml-")
    try:
        return run_job(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)

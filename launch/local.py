"""`launch local`: the SageMaker training job on this machine, no Docker and no AWS, on one host or several.

Builds the container contract per host (`--instance-count N`: algo-1 ... algo-N, each with its own root
holding the config JSONs with its `current_host`, input/data, model, output, checkpoints, and its SM_*
variables; our readers and trainer find the root through CAPTCHA_PIPELINE_OPT_ML) and gives each host's
trainer its own loopback port (CAPTCHA_PIPELINE_WORKERS). Pipe channels are fed through each host's
`<channel>_<epoch>` FIFOs by the Pipe agent (launch/pipe_agent.py), File/FastFile channels downloaded
into each host's root, with ShardedByS3Key giving each host its share of the objects as SageMaker does.
The trainers run from the same source folder `launch train` uploads, their lines prefixed with the
host name when there are several. The chief's (algo-1's) model.tar.gz and output.tar.gz, or the job's
failure, go to `<output-path>/<job>/output/`.

Before any trainer starts, the job name (SageMaker's TrainingJobName rule), the hyperparameters (none may
move an output out of the container) and the output are checked, and the name is taken in the output
(`<job>/job.json`, launch/artifacts.py): a second job of that name there is refused, as SageMaker refuses
a duplicate name. A trainer that exits 0 without exporting into its model dir fails the job. When an
upload fails at the end, the outputs stay on local disk and the error line names the folder; a failed
job's exported model is kept the same way.

The first failure stops the job: a trainer that exits non-zero, a Pipe feeder's error, or SIGTERM to
this command. Every trainer still running then gets SIGTERM (as SageMaker sends at a spot interruption:
the trainer saves a checkpoint and exits) and SIGKILL after a grace period. The failure reason lists what
failed, in order, the first cause first; the exit status is the first failing trainer's (128 + N for signal N; 1 for a feeder).
On Linux, a trainer also gets SIGTERM when this command dies without cleaning up (SIGKILL, a crash).
"""
import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from launch import artifacts, job_config, source
from launch.container import download_channel, write_contract
from launch.pipe_agent import Progress, feed_pipe
from tfrecord import flags, sagemaker, storage
from tfrecord.errors import UserError, exits_on_user_error
from trainer import curves

GRACE_SECONDS = 30  # after SIGTERM, a trainer's time to checkpoint and exit before SIGKILL


def parse_args(argv):
    p = flags.ArgumentParser(prog="captcha-pipeline launch local", description=__doc__.splitlines()[0])
    job_config.add_job_arguments(p)
    p.add_argument("--root", type=flags.empty_folder, help="container root to build and keep (default: a temporary "
                                                           "folder, removed after); with several hosts it holds one root per host")
    p.add_argument("--checkpoint-path", type=flags.local_folder,
                   help="local folder mounted as every host's checkpoints dir (resume across "
                        "runs, as SageMaker restores the checkpoint S3 prefix on every host)")
    args = p.parse_args(argv)
    flags.distinct(args, "root", "checkpoint_path", "output_path", owned="root", inputs=("dataset",))
    return args


class Host:
    """One simulated instance: its container root, Pipe data dir, trainer process, last output lines, and
    its exit status and time."""

    def __init__(self, name, index, root):
        self.name, self.index, self.root = name, index, root
        self.env, self.data_dir, self.proc, self.status, self.ended = None, None, None, None, None
        self.tail = collections.deque(maxlen=20)


def free_ports(count):
    """Loopback ports nobody listens on, one per host."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def prepare(host, names, channels, objects, hps, args, workers):
    """Write one host's container root (contract, checkpoints, File-mode data) and its trainer's environment."""
    sm_env = write_contract(host.root, channels, hps, host.name, names)
    if args.checkpoint_path:
        os.makedirs(args.checkpoint_path, exist_ok=True)
        os.rmdir(sagemaker.checkpoint_dir(host.root))
        os.symlink(os.path.abspath(args.checkpoint_path), sagemaker.checkpoint_dir(host.root))
    for channel, (prefix, config) in channels.items():
        if config["TrainingInputMode"] != "Pipe":
            download_channel(host.root, channel, objects[channel], prefix, config, host.index, len(names))
    host.data_dir = sagemaker.data_dir(host.root)
    host.env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    host.env.update(sm_env)
    host.env[sagemaker.WORKERS_ENV] = workers


# Runs first in each trainer's process, then becomes the trainer (execv keeps the pid): Linux sends it
# SIGTERM when the launcher dies (prctl PR_SET_PDEATHSIG, which survives the exec), so a launcher killed with
# SIGKILL leaves no trainer behind. Set here rather than in a preexec_fn, which would run Python (and gRPC's
# fork handlers, when the launcher's process holds gRPC threads) between fork and exec.
ORPHAN_GUARD = ("import ctypes, os, signal, sys\n"
                "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG\n"
                "if os.getppid() != int(sys.argv[1]):\n"
                "    sys.exit(128 + signal.SIGTERM)  # the launcher died before the guard was set\n"
                "os.execv(sys.argv[2], sys.argv[2:])\n")


def start_trainer(host, code_dir, hps):
    """The script-mode command (`--name value` per hyperparameter) in the host's environment."""
    command = [sys.executable, source.ENTRY_POINT] + [a for k, v in hps.items() for a in (f"--{k}", v)]
    if sys.platform == "linux":
        command = [sys.executable, "-c", ORPHAN_GUARD, str(os.getpid())] + command
    host.proc = subprocess.Popen(command, cwd=code_dir, env=host.env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, errors="replace")


def relay(host, prefix, lock):
    """Pass a trainer's output through (prefixed with its host name when there are several); note when it
    exits, so failures are ordered as they happened."""
    for line in host.proc.stdout:
        with lock:
            sys.stdout.write(prefix + line)
            sys.stdout.flush()
        host.tail.append(line.rstrip("\n"))
    host.status, host.ended = host.proc.wait(), time.monotonic()


def supervise(hosts, feeder_errors, stop_requested):
    """Wait for every trainer; the first failure stops the rest (SIGTERM, SIGKILL after the grace period).
    Returns the failures in order: Hosts that exited non-zero, and feeder error strings."""
    failures, seen, deadline = [], set(), None
    while True:
        failures += [e for e in feeder_errors if e not in failures]
        for host in sorted((h for h in hosts if h.ended is not None and h.name not in seen), key=lambda h: h.ended):
            seen.add(host.name)
            if host.status:
                failures.append(host)
        running = [host for host in hosts if host.name not in seen]
        if not running:
            return failures
        if deadline is None and (failures or stop_requested.is_set()):
            for host in running:
                host.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + GRACE_SECONDS
        if deadline is not None and time.monotonic() > deadline:
            for host in running:
                host.proc.kill()
        time.sleep(0.1)


def reason(failure, several):
    """What one failure contributes to the job's failure reason."""
    if isinstance(failure, str):
        return failure
    path = sagemaker.failure_path(failure.root)
    own = open(path).read().strip() if os.path.exists(path) else ""
    status = failure.status if failure.status >= 0 else f"{failure.status} ({signal.Signals(-failure.status).name})"
    text = own or "\n".join([f"AlgorithmError: ExecuteUserScriptError: ExitCode {status}", *failure.tail])
    return f"{failure.name}: {text}" if several else text


def run_job(args, root):
    """Run the job with its container roots under `root`; returns (exit status, a folder under `root` to keep
    or None). Everything the job is told is checked, its output taken, before any trainer starts."""
    name = job_config.job_name(args)
    hps = job_config.hyperparameters(args.hp)
    manifest = job_config.read_manifest(args.dataset)
    channels = job_config.input_data_config(args, manifest)
    objects = {}
    for channel, (prefix, _) in channels.items():
        objects[channel] = storage.list(prefix)
        if not objects[channel]:
            raise UserError(f"channel {channel}: no objects under {prefix}")
    storage.check_writable(args.output_path)
    job_prefix = storage.join(args.output_path, name)
    artifacts.claim(job_prefix, {"TrainingJobName": name, "CreationTime": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                         time.gmtime()),
                                 "Dataset": args.dataset, "InstanceCount": args.instance_count,
                                 "InputDataConfig": {c: config for c, (_, config) in channels.items()},
                                 "HyperParameters": hps})
    several = args.instance_count > 1
    names = [sagemaker.host_name(i) for i in range(args.instance_count)]
    hosts = [Host(n, i, os.path.join(root, n) if several else root) for i, n in enumerate(names)]
    workers = json.dumps({n: f"127.0.0.1:{port}" for n, port in zip(names, free_ports(len(names)))})
    for host in hosts:
        prepare(host, names, channels, objects, hps, args, workers)
    code_dir = source.write(os.path.join(root, "code"))
    print(f"local training job {name}: root {root}, {args.input_mode} mode, {len(hosts)} host(s)", flush=True)

    stop, stop_requested, feeder_errors, threads = threading.Event(), threading.Event(), [], []
    previous = signal.signal(signal.SIGTERM, lambda *_: stop_requested.set())
    try:
        for host in hosts:
            start_trainer(host, code_dir, hps)
        lock, progress = threading.Lock(), Progress()
        threads += [threading.Thread(target=relay, args=(h, f"[{h.name}] " if several else "", lock), daemon=True)
                    for h in hosts]
        threads += [threading.Thread(target=feed_pipe, daemon=True, args=(channel, objects[channel], config, progress,
                                                                           stop, feeder_errors),
                                     kwargs={"host_index": h.index, "host_count": len(hosts), "data_dir": h.data_dir,
                                             "label": f"{h.name} {channel}" if several else channel})
                    for h in hosts for channel, (_, config) in channels.items() if config["TrainingInputMode"] == "Pipe"]
        for thread in threads:
            thread.start()
        failures = supervise(hosts, feeder_errors, stop_requested)
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop.set()
        for host in hosts:
            if host.proc and host.proc.poll() is None:
                host.proc.kill()
                host.proc.wait()
    for thread in threads:
        thread.join(timeout=30)
    status = next((f.status if isinstance(f, Host) else 1 for f in failures), 0)
    status = 128 - status if status < 0 else status  # killed by a signal: as a shell reports it
    chief = hosts[0].root
    if not failures and artifacts.exported_nothing(sagemaker.model_dir(chief)):
        failures.append(f"{hosts[0].name} exited 0 but exported nothing into its model dir "
                        f"{sagemaker.model_dir(chief)} (SageMaker uploads that folder as {artifacts.MODEL})")
        status = 1
    reasons = [reason(failure, several) for failure in failures]
    if reasons:
        with open(sagemaker.failure_path(chief), "w") as f:
            f.write("\n".join(reasons) + "\n")
    keep_model = bool(reasons) and not artifacts.exported_nothing(sagemaker.model_dir(chief))
    folder = os.path.join(root, "artifacts")
    names = artifacts.package(chief, folder, bool(reasons), keep_model)
    try:
        artifacts.upload(folder, names, storage.join(job_prefix, "output"))
    except artifacts.UploadFailed as e:
        ended = f"failed: {reasons[0].splitlines()[0]};" if reasons else "completed, but"
        print(f"error: training job {name} {ended} {e}", file=sys.stderr)
        return status or 2, e.folder
    if reasons:
        kept = f"; its exported model is kept in {os.path.join(folder, artifacts.MODEL)}" if keep_model else ""
        print(f"error: training job {name} failed: {reasons[0].splitlines()[0]}{kept}", file=sys.stderr)
        return status, folder if keep_model else None
    print(f"training job {name} completed\nmodel: {storage.join(job_prefix, 'output', artifacts.MODEL)}", flush=True)
    if os.path.exists(os.path.join(sagemaker.output_data_dir(chief), curves.PNG)):
        print(f"learning curve: {curves.PNG} in {storage.join(job_prefix, 'output', artifacts.OUTPUT)}", flush=True)
    return 0, None


def _remove_all_but(root, kept):
    """Remove the temporary `root`, or, when run_job kept a folder in it (outputs whose upload failed, a failed
    job's exported model), everything else in it: the only copy of a trained model is never thrown away."""
    if not kept:
        shutil.rmtree(root, ignore_errors=True)
        return
    for path in (os.path.join(root, name) for name in os.listdir(root)):
        if os.path.islink(path) or not os.path.isdir(path):  # e.g. checkpoints -> --checkpoint-path: not ours
            os.remove(path)
        elif path != kept:
            shutil.rmtree(path, ignore_errors=True)


def _terminated(signum, frame):
    raise SystemExit(128 + signum)


@exits_on_user_error
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    previous = signal.signal(signal.SIGTERM, _terminated)  # outside the trainers' run: stop, clean up
    try:
        if args.root:
            os.makedirs(args.root, exist_ok=True)
            return run_job(args, os.path.abspath(args.root))[0]
        root, kept = tempfile.mkdtemp(prefix="captcha-opt-ml-"), None
        try:
            status, kept = run_job(args, root)
            return status
        finally:
            _remove_all_but(root, kept)
    finally:
        signal.signal(signal.SIGTERM, previous)

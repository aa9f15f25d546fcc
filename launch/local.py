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
import os
import shutil
import subprocess
import sys
import tempfile
import threading

from launch import artifacts, job_config, source
from launch.container import container_root, download_channel, write_contract
from launch.pipe_agent import Progress, feed_pipe
from tfrecord import sagemaker, storage
from tfrecord.errors import UserError, exits_on_user_error


def parse_args(argv):
    p = argparse.ArgumentParser(prog="captcha-pipeline launch local", description=__doc__.splitlines()[0])
    job_config.add_job_arguments(p)
    p.add_argument("--root", help="container root to build and keep (default: a temporary folder, removed after)")
    p.add_argument("--checkpoint-path", help="local folder mounted as the checkpoints dir (resume across runs)")
    return p.parse_args(argv)


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
            objects = storage.list(prefix)
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
        model = artifacts.upload_outputs(storage.join(args.output_path, name, "output"), status)
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

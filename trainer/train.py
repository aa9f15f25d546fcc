"""Train the captcha CNN: `python -m trainer.train` / `captcha-pipeline train` (SageMaker script mode).

Channels `train`, optionally `validation` (File, FastFile or Pipe, picked by `tfrecord.channels.channel`),
and `meta` (File mode, holds dataset.json). Runs locally with explicit flags and no SM_* variables, or on
several SageMaker hosts (trainer.distribute). This module holds the command line and its checks; the
loop is trainer.loop.Training. Host 0, the chief, prints the metric lines, checkpoints and exports.
Resumes from `--checkpoint-dir` after an interruption; SIGTERM saves a checkpoint, then exits 143.
"""
import contextlib
import sys

import keras

from tfrecord import flags, sagemaker, storage
from tfrecord.errors import (ManifestError, SpecError, UserError, embedded_user_error, exits_on_user_error,
                             run_as_process)
from tfrecord.manifest import TRAIN, VALIDATION, locate_manifest
from tfrecord.spec import CaptchaSpec
from trainer import checkpoint, distribute, export
from trainer.distribute import PeerLost, fail
from trainer.loop import MONITOR, Interrupted, Training
from trainer.model import DEFAULT_HEAD, DEFAULT_SCALE, HEADS
from trainer.sigterm import INTERRUPTED, STOP_GRACE, StopRequest

SPEC_FIELDS = ("alphabet", "length", "width", "height", "mode")


def parse_args(argv):
    p = flags.ArgumentParser(prog="captcha-pipeline train", description=__doc__.splitlines()[0])
    p.add_argument("--train", default=sagemaker.channel_dir(TRAIN), help="train split dir (File mode / local)")
    p.add_argument("--validation", default=sagemaker.channel_dir(VALIDATION),
                   help="validation split dir (used when the dataset has a validation split)")
    p.add_argument("--manifest", type=flags.file_or_folder,
                   help="dataset.json or its dir (default: meta channel, else beside --train)")
    p.add_argument("--model-dir", default=sagemaker.model_dir(), type=flags.creatable_folder)
    p.add_argument("--output-data-dir", default=sagemaker.output_data_dir(), type=flags.creatable_folder,
                   help="TensorBoard logs and the learning curve (learning_curve.png and .json) go here")
    p.add_argument("--checkpoint-dir", default=sagemaker.checkpoint_dir(), type=flags.creatable_folder)
    p.add_argument("--epochs", type=flags.positive_int, default=10)
    p.add_argument("--batch-size", type=flags.positive_int, default=64, help="global batch size (all hosts and devices)")
    p.add_argument("--learning-rate", type=flags.positive_float, default=3e-3, help="peak of the warmup + cosine schedule")
    p.add_argument("--warmup-epochs", type=flags.non_negative_float, default=0.5)
    p.add_argument("--patience", type=flags.non_negative_int, default=3, help=f"early stopping on {MONITOR}")
    p.add_argument("--scale", type=flags.positive_float, default=DEFAULT_SCALE, help="input downscaling inside the model")
    p.add_argument("--head", choices=HEADS, default=DEFAULT_HEAD,
                   help="one softmax per character position, or a bidirectional GRU read by CTC (trainer/model.py)")
    p.add_argument("--shuffle-buffer", type=flags.non_negative_int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu-devices", type=flags.non_negative_int, default=0,
                   help="split this host's CPU into N logical devices (MirroredStrategy over them)")
    p.add_argument("--mixed-precision", choices=("auto", "on", "off"), default="auto",
                   help="mixed_float16 (auto: when a GPU is present)")
    p.add_argument("--cluster-timeout", type=flags.positive_float, default=900, help="seconds to wait for all hosts to join")
    for field in SPEC_FIELDS:  # the model's spec; each defaults to the dataset's
        p.add_argument(f"--{field}", type=flags.positive_int if field in ("length", "width", "height") else str)
    return p.parse_args(argv)


def model_spec(args, dataset_spec, checkpoint_dir):
    """The spec the model is built for: flags, else a checkpoint's, else the dataset's; must match the data."""
    spec = checkpoint.load_spec(checkpoint_dir) or dataset_spec
    overrides = {f: getattr(args, f) for f in SPEC_FIELDS if getattr(args, f) is not None}
    spec = CaptchaSpec.from_dict({**spec.to_dict(), **overrides})
    diff = [f"{f} {getattr(spec, f)!r} vs {getattr(dataset_spec, f)!r}" for f in SPEC_FIELDS
            if getattr(spec, f) != getattr(dataset_spec, f)]
    if diff:
        raise SpecError(f"model spec does not match the dataset's (model vs data): {', '.join(diff)}")
    return spec


def check_checkpoint(checkpoint_dir, fingerprint, batch_size, steps_per_epoch):
    """A checkpoint dir holds one training run: refuse to continue (or re-export) one made on other data,
    or at another batch size."""
    saved = checkpoint.load_progress(checkpoint_dir)
    if saved and saved.dataset != fingerprint:
        raise UserError(f"checkpoint dir {checkpoint_dir} holds training on another dataset "
                        f"(fingerprint {saved.dataset}, this one {fingerprint}): use an empty checkpoint dir")
    if saved:
        checkpoint.check_resume(saved, batch_size, steps_per_epoch, checkpoint_dir)




@exits_on_user_error
def main(argv=None):
    try:
        return run(parse_args(sys.argv[1:] if argv is None else argv))
    except Exception as e:  # the reason SageMaker shows for the failed job
        message = str(e) if isinstance(e, UserError) else embedded_user_error(e)
        if message:
            distribute.write_failure(message)
        raise


def run(args):
    storage.local_flags(args, "model_dir", "output_data_dir", "checkpoint_dir")  # written here: no folder named `s3:`
    manifest = locate_manifest(args.manifest, args.train, "--train")
    if not manifest.split(TRAIN).examples:
        raise ManifestError(f"dataset has no {TRAIN} examples")
    spec = model_spec(args, manifest.spec, args.checkpoint_dir)
    check_checkpoint(args.checkpoint_dir, checkpoint.dataset_fingerprint(manifest), args.batch_size,
                     manifest.split(TRAIN).examples // args.batch_size)
    cluster = distribute.connect(cpu_devices=args.cpu_devices, timeout=args.cluster_timeout)
    distribute.set_precision(args.mixed_precision)
    print(f"{cluster.describe()}; {keras.mixed_precision.global_policy().name}", flush=True)
    held = checkpoint.hold(args.checkpoint_dir) if cluster.chief else contextlib.nullcontext()  # one run per dir
    with held, StopRequest(STOP_GRACE) as stop_requested:
        try:
            model, steps_run, examples_run = Training(args, manifest, spec, cluster, stop_requested).run()
        except Interrupted as e:
            saved = f"checkpoint saved in {args.checkpoint_dir}" if cluster.chief else "the chief saved the checkpoint"
            return fail(f"interrupted by SIGTERM {e}; {saved}: run again with it to resume", INTERRUPTED)
        except PeerLost as e:
            return fail(str(e), 1)
        if cluster.chief:
            print(f"exported {export.export(model, spec, args.model_dir)}", flush=True)
    print(f"host {cluster.host}: {steps_run} steps, {examples_run} examples over all hosts", flush=True)
    if cluster.workers > 1:  # no host leaves before the chief has exported; then they leave in order
        distribute.leave(cluster)
    return 0


if __name__ == "__main__":  # also SageMaker's entry script (runpy)
    sys.exit(run_as_process(main, sys.argv[1:]))

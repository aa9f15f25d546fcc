"""Train the captcha CNN: `python -m trainer.train` / `captcha-pipeline train` (SageMaker script mode).

Channels `train`, optionally `validation` (File, FastFile or Pipe, picked by `tfrecord.channels.channel`),
and `meta` (File mode, holds dataset.json). Runs locally with explicit flags and no SM_* variables, or on
several SageMaker hosts (trainer.distribute). This module holds the run and its checks (the command line is
trainer.arguments, which launch/ reads without TensorFlow); the
loop is trainer.loop.Training. Host 0, the chief, prints the metric lines, checkpoints and exports.
Resumes from `--checkpoint-dir` after an interruption; SIGTERM saves a checkpoint, then exits 143.

The /opt/ml folders are the defaults only in a training container (SageMaker's SM_* variables, or a
container root set by CAPTCHA_PIPELINE_OPT_ML as `launch local` does). Elsewhere `--model-dir` is required,
nothing is resumed unless `--checkpoint-dir` is given (the run checkpoints into a temporary folder, removed
at its end, kept and named if it is interrupted), and TensorBoard logs need `--output-data-dir`
(the learning curve is then written into `--model-dir`).
"""
import contextlib
import shutil
import sys
import tempfile

import keras

from tfrecord.errors import (ManifestError, SpecError, UserError, embedded_user_error, exits_on_user_error,
                             run_as_process)
from tfrecord.manifest import TRAIN, locate_manifest
from tfrecord.spec import CaptchaSpec
from trainer import checkpoint, distribute, export
from trainer.distribute import PeerLost, fail
from trainer.arguments import SPEC_FIELDS, parse_args  # noqa: F401 (parse_args: this command's flags)
from trainer.loop import Interrupted, Training
from trainer.model import check_scale
from trainer.sigterm import INTERRUPTED, STOP_GRACE, StopRequest

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
    if args.checkpoint_dir is not None:
        return train(args)
    args.checkpoint_dir = tempfile.mkdtemp(prefix="captcha-checkpoints-")  # a fresh run: nothing to resume
    status = None
    try:
        status = train(args)
        return status
    finally:
        if status != INTERRUPTED:
            shutil.rmtree(args.checkpoint_dir, ignore_errors=True)


def train(args):
    manifest = locate_manifest(args.manifest, args.train, "--train")
    if not manifest.split(TRAIN).examples:
        raise ManifestError(f"dataset has no {TRAIN} examples")
    spec = model_spec(args, manifest.spec, args.checkpoint_dir)
    check_scale(spec, args.scale)
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

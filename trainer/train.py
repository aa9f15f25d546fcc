"""Train the captcha CNN: `python -m trainer.train` / `captcha-pipeline train` (SageMaker script mode).

Channels `train` and `validation` (File, FastFile or Pipe, picked by `tfrecord.channels.channel`) and
`meta` (File mode, holds dataset.json). Runs locally with explicit flags and no SM_* variables.
Resumes from `--checkpoint-dir` after an interruption; exports to `--model-dir` (see trainer.export).
"""
import argparse
import importlib.util
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfrecord import sagemaker  # noqa: E402
from tfrecord.channels import channel  # noqa: E402
from tfrecord.errors import ManifestError, SpecError, exits_on_user_error  # noqa: E402
from tfrecord.manifest import locate_manifest  # noqa: E402
from tfrecord.spec import CaptchaSpec  # noqa: E402
from trainer import export, metric_lines  # noqa: E402
from trainer.model import build_model, compile_model  # noqa: E402

WORKER_PORT = 2222
SPEC_FIELDS = ("alphabet", "length", "width", "height", "mode")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="captcha-pipeline train", description=__doc__.splitlines()[0])
    p.add_argument("--train", default=sagemaker.channel_dir("train"), help="train split dir (File mode / local)")
    p.add_argument("--validation", default=sagemaker.channel_dir("validation"))
    p.add_argument("--manifest", help="dataset.json or its dir (default: meta channel, else beside --train)")
    p.add_argument("--model-dir", default=sagemaker.model_dir())
    p.add_argument("--output-data-dir", default=sagemaker.output_data_dir(), help="TensorBoard logs go here")
    p.add_argument("--checkpoint-dir", default=sagemaker.checkpoint_dir())
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64, help="global batch size")
    p.add_argument("--learning-rate", type=float, default=3e-3, help="peak of the warmup + cosine schedule")
    p.add_argument("--warmup-epochs", type=float, default=0.5)
    p.add_argument("--patience", type=int, default=3, help="early stopping on val_sequence_accuracy")
    p.add_argument("--scale", type=float, default=0.5, help="input downscaling inside the model")
    p.add_argument("--shuffle-buffer", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=0, help="Keras progress bar (0: metric lines only)")
    for field in SPEC_FIELDS:  # the model's spec; each defaults to the dataset's
        p.add_argument(f"--{field}", type=int if field in ("length", "width", "height") else str)
    return p.parse_args(argv)


def model_spec(args, dataset_spec, checkpoint_dir):
    """The spec the model is built for: flags, else a checkpoint's, else the dataset's; must match the data."""
    saved = os.path.join(checkpoint_dir, "captcha_spec.json")
    if os.path.exists(saved):
        with open(saved) as f:
            spec = CaptchaSpec.from_dict(json.load(f))
    else:
        spec = dataset_spec
    overrides = {f: getattr(args, f) for f in SPEC_FIELDS if getattr(args, f) is not None}
    spec = CaptchaSpec.from_dict({**spec.to_dict(), **overrides})
    diff = [f"{f} {getattr(spec, f)!r} vs {getattr(dataset_spec, f)!r}" for f in SPEC_FIELDS
            if getattr(spec, f) != getattr(dataset_spec, f)]
    if diff:
        raise SpecError(f"model spec does not match the dataset's (model vs data): {', '.join(diff)}")
    return spec


def strategy():
    """MultiWorkerMirrored across SageMaker hosts, Mirrored across local GPUs, else the default."""
    current, hosts = sagemaker.hosts()
    if len(hosts) > 1:
        os.environ["TF_CONFIG"] = json.dumps({
            "cluster": {"worker": [f"{h}:{WORKER_PORT}" for h in hosts]},
            "task": {"type": "worker", "index": hosts.index(current)}})
        return tf.distribute.MultiWorkerMirroredStrategy(), hosts.index(current), len(hosts)
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy(), 0, 1
    return tf.distribute.get_strategy(), 0, 1


def datasets(args, spec, worker, workers):
    shard = {"num_workers": workers, "worker_index": worker} if workers > 1 else {}
    train = channel("train", spec, args.batch_size, path=args.train, shuffle_buffer=args.shuffle_buffer,
                    seed=args.seed, **shard)
    validation = channel("validation", spec, args.batch_size, path=args.validation, **shard)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return (train.prefetch(tf.data.AUTOTUNE).with_options(options),
            validation.prefetch(tf.data.AUTOTUNE).with_options(options))


class MetricLines(keras.callbacks.Callback):
    """Prints `epoch=N name=value ...` per epoch (SageMaker metric definitions parse these)."""

    def __init__(self, train_examples):
        super().__init__()
        self.train_examples = train_examples

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.train_seconds = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        self.train_seconds = self.train_seconds or time.perf_counter() - self.start

    def on_epoch_end(self, epoch, logs=None):
        seconds = self.train_seconds or time.perf_counter() - self.start
        logs = dict(logs or {}, examples_per_sec=self.train_examples / seconds)
        print(metric_lines.metric_line(epoch + 1, logs), flush=True)


def schedule(args, steps_per_epoch):
    total = max(1, args.epochs * steps_per_epoch)
    warmup = min(total - 1, int(args.warmup_epochs * steps_per_epoch))
    return keras.optimizers.schedules.CosineDecay(
        args.learning_rate * 0.1, decay_steps=total - warmup, alpha=0.01,
        warmup_target=args.learning_rate, warmup_steps=warmup)


@exits_on_user_error
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    manifest = locate_manifest(args.manifest, args.train, "--train")
    for split in ("train", "validation"):
        if not manifest.split(split).examples:
            raise ManifestError(f"dataset has no {split} examples")
    spec = model_spec(args, manifest.spec, args.checkpoint_dir)
    keras.utils.set_random_seed(args.seed)
    if tf.config.list_physical_devices("GPU"):
        keras.mixed_precision.set_global_policy("mixed_float16")
    strat, worker, workers = strategy()
    train, validation = datasets(args, spec, worker, workers)
    train_examples = manifest.split("train").examples // workers
    steps = -(-train_examples // (args.batch_size // workers or 1))
    print(f"training on {manifest.split('train').examples} examples ({spec.describe()}), "
          f"validating on {manifest.split('validation').examples}; {workers} worker(s), "
          f"{strat.num_replicas_in_sync} replica(s)", flush=True)
    with strat.scope():
        model = compile_model(build_model(spec, scale=args.scale), schedule(args, steps))
    os.makedirs(args.checkpoint_dir, exist_ok=True)
    with open(os.path.join(args.checkpoint_dir, "captcha_spec.json"), "w") as f:
        json.dump(spec.to_dict(), f)
    callbacks = [
        keras.callbacks.BackupAndRestore(args.checkpoint_dir, double_checkpoint=True, delete_checkpoint=False),
        keras.callbacks.EarlyStopping("val_sequence_accuracy", mode="max", patience=args.patience,
                                      restore_best_weights=True),
        MetricLines(train_examples),
    ]
    if importlib.util.find_spec("tensorboard"):  # in the SageMaker TF container; optional locally
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(args.output_data_dir, "tensorboard")))
    else:
        print("tensorboard is not installed: no TensorBoard logs", flush=True)
    model.fit(train, validation_data=validation, epochs=args.epochs, callbacks=callbacks, verbose=args.verbose)
    model_dir = args.model_dir if worker == 0 else os.path.join(args.output_data_dir, f"worker-{worker}")
    path = export.export(model, spec, model_dir)
    print(f"exported {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

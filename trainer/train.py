"""Train the captcha CNN: `python -m trainer.train` / `captcha-pipeline train` (SageMaker script mode).

Channels `train` and `validation` (File, FastFile or Pipe, picked by `tfrecord.channels.channel`) and
`meta` (File mode, holds dataset.json). Runs locally with explicit flags and no SM_* variables, or on
several SageMaker hosts (trainer.distribute). Every host runs the same number of steps per epoch
(train examples // global batch), drawn from one endless stream of its own data; every host validates
on all of the validation data; host 0, the chief, prints the metric lines, checkpoints and exports.
Resumes from `--checkpoint-dir` after an interruption; SIGTERM saves a checkpoint, then exits 143.
"""
import importlib.util
import json
import os
import re
import signal
import sys
import threading
import time
import warnings

import keras
import tensorflow as tf

from tfrecord import flags, sagemaker
from tfrecord.channels import channel
from tfrecord.errors import (ManifestError, SpecError, UserError, embedded_user_error, exits_on_user_error,
                             run_as_process)
from tfrecord.manifest import TRAIN, VALIDATION, locate_manifest
from tfrecord.spec import CaptchaSpec
from trainer import checkpoint, curves, distribute, export, metric_lines
from trainer.model import DEFAULT_HEAD, HEADS, build_model, compile_model

SPEC_FIELDS = ("alphabet", "length", "width", "height", "mode")
MONITOR = metric_lines.MONITOR
INTERRUPTED = 128 + signal.SIGTERM  # exit status after a SIGTERM (checkpoint saved), as a shell reports it
STOP_GRACE = 10  # seconds from SIGTERM to the next step boundary before the trainer exits regardless
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
               tf.errors.CancelledError)


def parse_args(argv):
    p = flags.ArgumentParser(prog="captcha-pipeline train", description=__doc__.splitlines()[0])
    p.add_argument("--train", default=sagemaker.channel_dir(TRAIN), help="train split dir (File mode / local)")
    p.add_argument("--validation", default=sagemaker.channel_dir(VALIDATION))
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
    p.add_argument("--scale", type=flags.positive_float, default=0.5, help="input downscaling inside the model")
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


def check_checkpoint(checkpoint_dir, fingerprint, batch_size, steps_per_epoch):
    """A checkpoint dir holds one training run: refuse to continue (or re-export) one made on other data,
    or at another batch size."""
    saved = checkpoint.load_progress(checkpoint_dir)
    if saved and saved.dataset != fingerprint:
        raise UserError(f"checkpoint dir {checkpoint_dir} holds training on another dataset "
                        f"(fingerprint {saved.dataset}, this one {fingerprint}): use an empty checkpoint dir")
    if saved:
        checkpoint.check_resume(saved, batch_size, steps_per_epoch, checkpoint_dir)


def datasets(args, spec, manifest, cluster):
    """This host's endless train stream, batched per replica (each replica takes one batch per step, so
    a host consumes its 1/n of the global batch), and all of the validation split."""
    replica_batch = args.batch_size // cluster.strategy.num_replicas_in_sync

    def train(context):  # once per host; read as it is (no tf.distribute auto-sharding or rebatching)
        return channel(TRAIN, spec, replica_batch, path=args.train, manifest=manifest, repeat=True,
                       shuffle_buffer=args.shuffle_buffer, seed=args.seed, num_workers=cluster.workers,
                       worker_index=cluster.worker)

    validation = channel(VALIDATION, spec, args.batch_size, path=args.validation, manifest=manifest,
                         deterministic=True)
    return cluster.strategy.distribute_datasets_from_function(train), validation


def schedule(args, steps_per_epoch):
    total = max(1, args.epochs * steps_per_epoch)
    warmup = min(total - 1, int(args.warmup_epochs * steps_per_epoch))
    return keras.optimizers.schedules.CosineDecay(
        args.learning_rate * 0.1, decay_steps=total - warmup, alpha=0.01,
        warmup_target=args.learning_rate, warmup_steps=warmup)


def step_function(model, strategy):
    """One training step on every replica (the compiled model's own train_step: loss, gradients all-reduced
    by the optimizer, metrics). Returns [replicas asked to stop (SIGTERM), examples trained on], summed
    over all hosts, so every host takes the same decision."""
    @tf.function
    def step(iterator, stop):
        def replica_step(data, stop):
            model.train_step(data)
            counts = tf.stack([tf.identity(stop), tf.cast(tf.shape(data[0])[0], tf.float32)])
            return tf.distribute.get_replica_context().all_reduce("sum", counts)
        return strategy.experimental_local_results(strategy.run(replica_step, args=(next(iterator), stop)))[0]
    return step


def statistics_function(model, strategy):
    """Average BatchNorm's moving statistics over all replicas (each host updates its own from its own
    batches), so that every host validates, and the chief exports, the same model."""
    stats = [w for w in model.non_trainable_weights if "float" in str(w.dtype)]

    @tf.function
    def average():
        def replica_average():
            means = tf.distribute.get_replica_context().all_reduce("mean", [tf.identity(w.value) for w in stats])
            for variable, mean in zip(stats, means):
                variable.assign(mean)
        strategy.run(replica_average)
    return average


class Interrupted(Exception):
    """SIGTERM reached at least one host; the checkpoint is saved."""


class PeerLost(Exception):
    """A collective with the other hosts failed: one of them stopped."""


def peer_lost(error, cluster):
    """One line from TensorFlow's error for a failed collective, naming the other hosts it names."""
    text = getattr(error, "message", str(error))
    named = [cluster.hosts[i] for i in sorted({int(i) for i in re.findall(r"/task:(\d+)", text)})
             if i != cluster.worker and i < cluster.workers]
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(("Detected", " ", "\t"))]
    reason = next((line for line in lines if "unhealthy" in line or "aborted" in line.lower()), lines[0] if lines else "")
    who = f"host {', '.join(named)}" if named else "another host"
    return f"lost {who}: {type(error).__name__}: {reason}"


def train(args, manifest, spec, cluster, stop_requested):
    """The training loop on this host; returns (a plain copy of the model with the best weights, steps run
    here, examples trained on by all hosts in those steps)."""
    strategy, global_batch = cluster.strategy, args.batch_size
    if global_batch % strategy.num_replicas_in_sync:
        raise UserError(f"--batch-size {global_batch} is not a multiple of the {strategy.num_replicas_in_sync} "
                        f"replicas ({cluster.workers} host(s))")
    steps = manifest.split(TRAIN).examples // global_batch
    if not steps:
        raise UserError(f"--batch-size {global_batch} is larger than the {manifest.split(TRAIN).examples} train examples")
    fingerprint = checkpoint.dataset_fingerprint(manifest)
    keras.utils.set_random_seed(args.seed)
    with strategy.scope():
        model = compile_model(build_model(spec, scale=args.scale, head=args.head), schedule(args, steps))
        model.optimizer.build(model.trainable_variables)  # before the first step: replicas cannot create it
    plain = compile_model(build_model(spec, scale=args.scale, head=args.head), schedule(args, steps))  # validates and exports
    train_data, validation = datasets(args, spec, manifest, cluster)
    progress, best = checkpoint.Progress(dataset=fingerprint, batch_size=global_batch), None
    if checkpoint.load_progress(args.checkpoint_dir):
        progress, best = checkpoint.restore(args.checkpoint_dir, model)
    step, average_statistics = step_function(model, strategy), statistics_function(model, strategy)
    total = distribute.sum_function(strategy)
    position = progress.epoch * steps + progress.step
    if total(tf.constant(position, tf.float64)) != position * strategy.num_replicas_in_sync:
        raise UserError(f"the hosts start from different checkpoints (this one: {progress.epoch} epochs and "
                        f"{progress.step} steps done): give every host the same checkpoint dir contents")
    if cluster.chief:
        print(f"training on {manifest.split(TRAIN).examples} examples ({spec.describe()}), validating on "
              f"{manifest.split('validation').examples}; {cluster.workers} host(s), {strategy.num_replicas_in_sync} "
              f"replica(s), {steps} steps of {global_batch} per epoch", flush=True)
        os.makedirs(args.checkpoint_dir, exist_ok=True)
        with open(os.path.join(args.checkpoint_dir, "captcha_spec.json"), "w") as f:
            json.dump(spec.to_dict(), f)
        if progress.epoch or progress.step:
            within = f" and step {progress.step} of epoch {progress.epoch + 1}" if progress.step else ""
            print(f"resuming after epoch {progress.epoch}{within}", flush=True)
    curve = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: curves.record(args.output_data_dir, epoch, logs))
    callbacks = keras.callbacks.CallbackList([*tensorboard(args), curve] if cluster.chief else [], model=model)

    def save():
        if cluster.chief:
            checkpoint.save(args.checkpoint_dir, progress, model, best)

    def validate():
        """All of the validation split, on this host alone (no collectives); cut short by SIGTERM."""
        plain.set_weights(model.get_weights())
        watch = keras.callbacks.LambdaCallback(
            on_test_batch_end=lambda *_, **__: setattr(plain, "stop_evaluating", stop_requested.is_set()))
        with warnings.catch_warnings():  # Keras warns at the end of any dataset of unknown length
            warnings.filterwarnings("ignore", "Your input ran out of data")
            results = plain.evaluate(validation, verbose=0, return_dict=True, callbacks=[watch])
        return {metric_lines.VALIDATION + name: value for name, value in results.items()}

    steps_run, examples_run, iterator = 0, 0, iter(train_data)
    callbacks.on_train_begin()
    try:
        while progress.epoch < args.epochs and not progress.stopped:
            epoch = progress.epoch
            callbacks.on_epoch_begin(epoch)
            start, first = time.perf_counter(), progress.step
            examples = 0
            for progress.step in range(first, steps):
                stop, trained = step(iterator, tf.constant(float(stop_requested.is_set()))).numpy()
                steps_run, examples, examples_run = steps_run + 1, examples + trained, examples_run + trained
                if stop:
                    progress.step += 1
                    save()
                    raise Interrupted(f"in epoch {epoch + 1} after step {progress.step} of {steps}")
            progress.step, seconds = steps, time.perf_counter() - start
            logs = {}
            if first < steps:  # the training figures of the steps run here, over all hosts' batches
                logs = {name: float(value) for name, value in model.get_metrics_result().items()}
                logs["examples_per_sec"] = examples / seconds
            model.reset_metrics()
            average_statistics()
            logs.update(validate())
            improved = progress.best is None or logs[MONITOR] > progress.best
            wait = 0 if improved else progress.wait + 1
            stop_early, interrupted = total(tf.constant([wait >= max(1, args.patience), stop_requested.is_set()],
                                                        tf.float32)).numpy() > 0
            if interrupted:  # this epoch's steps are saved; its validation runs again on resume
                save()
                raise Interrupted(f"in epoch {epoch + 1} after its {steps} steps, before the end of its validation")
            if improved:
                progress.best, progress.best_epoch, best = logs[MONITOR], epoch, plain.get_weights()
            progress.epoch, progress.step, progress.wait, progress.stopped = epoch + 1, 0, wait, bool(stop_early)
            save()
            if cluster.chief:
                print(metric_lines.metric_line(epoch + 1, logs), flush=True)
            callbacks.on_epoch_end(epoch, logs)
    except tf.errors.OutOfRangeError:  # an endless stream ends only when a whole pass held no records
        raise UserError(f"the train channel ran dry in epoch {progress.epoch + 1} after step {progress.step}: "
                        "a whole pass over this host's data gave no records") from None
    except PEER_ERRORS as e:
        if cluster.workers == 1:
            raise
        raise PeerLost(peer_lost(e, cluster)) from None
    callbacks.on_train_end()
    if progress.stopped and cluster.chief:
        print(f"early stopping: no better {MONITOR} for {progress.wait} epochs; best epoch {progress.best_epoch + 1}",
              flush=True)
    plain.set_weights(best or model.get_weights())
    checkpoint.set_optimizer_state(plain, checkpoint.optimizer_state(model))
    return plain, steps_run, int(examples_run)


def tensorboard(args):
    if importlib.util.find_spec("tensorboard"):  # in the SageMaker TF container; optional locally
        return [keras.callbacks.TensorBoard(os.path.join(args.output_data_dir, "tensorboard"))]
    print("tensorboard is not installed: no TensorBoard logs", flush=True)
    return []


class StopRequest:
    """SIGTERM (SageMaker stopping the job, a spot interruption) sets an event the training loop checks at
    every step. A watcher thread sees the signal even while the main thread is blocked inside TensorFlow
    (waiting for input, or for a host that is gone) and ends the process if training has not stopped
    `grace` seconds later, so a SIGTERM always ends the trainer."""

    def __init__(self, grace):
        self.grace, self.event, self.done = grace, threading.Event(), threading.Event()

    def __enter__(self):
        self.read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        self.previous = signal.signal(signal.SIGTERM, lambda *_: None)  # the watcher acts on it
        self.previous_fd = signal.set_wakeup_fd(write_fd)
        threading.Thread(target=self._watch, daemon=True).start()
        return self.event

    def _watch(self):
        while signal.SIGTERM not in (woken := os.read(self.read_fd, 64)):
            if not woken:  # __exit__ closed the write end: training is over, and no SIGTERM came
                os.close(self.read_fd)
                return
        self.event.set()
        if not self.done.wait(self.grace):
            fail(f"SIGTERM, and training did not reach a step boundary within {self.grace:g} s (blocked on input "
                 "or on another host): exiting without a new checkpoint", INTERRUPTED)
            os._exit(INTERRUPTED)

    def __exit__(self, *exc):
        self.done.set()
        os.close(signal.set_wakeup_fd(self.previous_fd))
        signal.signal(signal.SIGTERM, self.previous)


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
    manifest = locate_manifest(args.manifest, args.train, "--train")
    for split in (TRAIN, VALIDATION):
        if not manifest.split(split).examples:
            raise ManifestError(f"dataset has no {split} examples")
    spec = model_spec(args, manifest.spec, args.checkpoint_dir)
    check_checkpoint(args.checkpoint_dir, checkpoint.dataset_fingerprint(manifest), args.batch_size,
                     manifest.split(TRAIN).examples // args.batch_size)
    cluster = distribute.connect(cpu_devices=args.cpu_devices, timeout=args.cluster_timeout)
    distribute.set_precision(args.mixed_precision)
    print(f"{cluster.describe()}; {keras.mixed_precision.global_policy().name}", flush=True)
    with StopRequest(STOP_GRACE) as stop_requested:
        try:
            model, steps_run, examples_run = train(args, manifest, spec, cluster, stop_requested)
        except Interrupted as e:
            saved = f"checkpoint saved in {args.checkpoint_dir}" if cluster.chief else "the chief saved the checkpoint"
            return fail(f"interrupted by SIGTERM {e}; {saved}: run again with it to resume", INTERRUPTED)
        except PeerLost as e:
            return fail(str(e), 1)
        if cluster.chief:
            print(f"exported {export.export(model, spec, args.model_dir)}", flush=True)
        if cluster.workers > 1:  # no host leaves before the chief has exported
            distribute.sum_function(cluster.strategy)(tf.zeros([]))
    print(f"host {cluster.host}: {steps_run} steps, {examples_run} examples over all hosts", flush=True)
    return 0


def fail(message, status):
    print(f"error: {message}", file=sys.stderr, flush=True)
    distribute.write_failure(message)
    return status


if __name__ == "__main__":  # also SageMaker's entry script (runpy)
    sys.exit(run_as_process(main, sys.argv[1:]))

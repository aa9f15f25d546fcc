"""The training loop on one host: `Training`, whose methods are the loop's steps.

An epoch: `steps` training steps (train examples // global batch, the same on every host, drawn from one
endless stream of this host's data), then BatchNorm's statistics averaged over all hosts, then (when the
job has a validation split) validation on all of it on every host, then the end of the epoch: all hosts
agree whether to stop (early stopping, SIGTERM), the chief saves the checkpoint and prints the metric line.
Without a validation split there are no validation figures and no early stopping, and the last weights
are exported.
"""
import importlib.util
import os
import time
import warnings

import keras
import tensorflow as tf

from tfrecord import sagemaker
from tfrecord.channels import channel
from tfrecord.errors import UserError
from tfrecord.manifest import TRAIN, VALIDATION
from trainer import checkpoint, curves, distribute, metric_lines
from trainer.model import build_model, compile_model

MONITOR = metric_lines.MONITOR


class Interrupted(Exception):
    """SIGTERM reached at least one host; the checkpoint is saved."""


def has_validation(manifest):
    """Whether the job validates: the dataset has validation examples and, in SageMaker, the job was given
    a validation channel (SageMaker allows a train channel alone)."""
    split, channels = manifest.splits.get(VALIDATION), sagemaker.input_data_config()
    return bool(split and split.examples) and (not channels or VALIDATION in channels)


def schedule(args, steps_per_epoch):
    """Warmup to `--learning-rate` over `--warmup-epochs`, then cosine decay to 1% of it at the last step."""
    total = max(1, args.epochs * steps_per_epoch)
    warmup = min(total - 1, int(args.warmup_epochs * steps_per_epoch))
    return keras.optimizers.schedules.CosineDecay(
        args.learning_rate * 0.1, decay_steps=total - warmup, alpha=0.01,
        warmup_target=args.learning_rate, warmup_steps=warmup)


class Training:
    """Training on this host, from `args` (train.parse_args), the dataset's manifest, the model's spec,
    the Cluster and the SIGTERM event. `run()` returns (a plain copy of the model holding the weights to
    export, steps run here, examples trained on by all hosts in those steps)."""

    def __init__(self, args, manifest, spec, cluster, stop_requested):
        self.args, self.manifest, self.spec, self.cluster = args, manifest, spec, cluster
        self.stop_requested, self.strategy = stop_requested, cluster.strategy
        self.steps = self.steps_per_epoch()
        self.validating = has_validation(manifest)
        keras.utils.set_random_seed(args.seed)
        with self.strategy.scope():
            self.model = compile_model(build_model(spec, scale=args.scale, head=args.head), schedule(args, self.steps))
            self.model.optimizer.build(self.model.trainable_variables)  # before the first step: replicas cannot
        self.plain = compile_model(build_model(spec, scale=args.scale, head=args.head),  # validates, exports
                                   schedule(args, self.steps))
        self.progress = checkpoint.Progress(dataset=checkpoint.dataset_fingerprint(manifest), batch_size=args.batch_size)
        self.best = None
        if checkpoint.load_progress(args.checkpoint_dir):
            self.progress, self.best = checkpoint.restore(args.checkpoint_dir, self.model)
        self.train_step = distribute.step_function(self.model, self.strategy)
        self.average_statistics = distribute.statistics_function(self.model, self.strategy)
        self.total = distribute.sum_function(self.strategy)
        self.train_data, self.validation_data = self.datasets()
        # the chief draws every run's curve: into the output data dir, else beside the export in the model dir
        curve = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: curves.record(
            args.output_data_dir or args.model_dir, epoch, logs))
        chief_callbacks = [*(tensorboard(args) if args.output_data_dir else []), curve] if cluster.chief else []
        self.callbacks = keras.callbacks.CallbackList(chief_callbacks, model=self.model)
        self.steps_run, self.examples_run = 0, 0

    def steps_per_epoch(self):
        replicas, batch = self.strategy.num_replicas_in_sync, self.args.batch_size
        if batch % replicas:
            raise UserError(f"--batch-size {batch} is not a multiple of the {replicas} replicas "
                            f"({self.cluster.workers} host(s))")
        examples = self.manifest.split(TRAIN).examples
        if batch > examples:
            raise UserError(f"--batch-size {batch} is larger than the {examples} train examples")
        return examples // batch

    def datasets(self):
        """This host's endless train stream, batched per replica (each replica takes one batch per step, so
        a host consumes its 1/n of the global batch), and all of the validation split (or None)."""
        args, cluster = self.args, self.cluster
        replica_batch = args.batch_size // self.strategy.num_replicas_in_sync

        def train(context):  # once per host; read as it is (no tf.distribute auto-sharding or rebatching)
            return channel(TRAIN, self.spec, replica_batch, path=args.train, manifest=self.manifest, repeat=True,
                           shuffle_buffer=args.shuffle_buffer, seed=args.seed, num_workers=cluster.workers,
                           worker_index=cluster.worker)

        validation = channel(VALIDATION, self.spec, args.batch_size, path=args.validation, manifest=self.manifest,
                             deterministic=True) if self.validating else None
        return self.strategy.distribute_datasets_from_function(train), validation

    def run(self):
        self.check_same_start()
        if self.cluster.chief:
            self.announce()
        iterator = iter(self.train_data)
        self.callbacks.on_train_begin()
        try:
            while self.progress.epoch < self.args.epochs and not self.progress.stopped:
                self.epoch(iterator)
        except tf.errors.OutOfRangeError:  # an endless stream ends only when a whole pass held no records
            raise UserError(f"the train channel ran dry in epoch {self.progress.epoch + 1} after step "
                            f"{self.progress.step}: a whole pass over this host's data gave no records") from None
        except distribute.PEER_ERRORS as e:
            if self.cluster.workers == 1:
                raise
            raise distribute.peer_lost(e, self.cluster) from None
        self.callbacks.on_train_end()
        return self.result()

    def check_same_start(self):
        """Every host resumes from the same place (a collective)."""
        position = self.progress.epoch * self.steps + self.progress.step
        if self.total(tf.constant(position, tf.float64)) != position * self.strategy.num_replicas_in_sync:
            raise UserError(f"the hosts start from different checkpoints (this one: {self.progress.epoch} epochs "
                            f"and {self.progress.step} steps done): give every host the same checkpoint dir contents")

    def announce(self):
        """The chief's first lines, and the model's spec beside the checkpoint (a resume builds the same model)."""
        train, replicas = self.manifest.split(TRAIN).examples, self.strategy.num_replicas_in_sync
        validating = (f"validating on {self.manifest.split(VALIDATION).examples}" if self.validating
                      else "no validation")
        print(f"training on {train} examples ({self.spec.describe()}), {validating}; {self.cluster.workers} host(s), "
              f"{replicas} replica(s), {self.steps} steps of {self.args.batch_size} per epoch", flush=True)
        if not self.validating:
            print("no validation split: no validation figures and no early stopping; the last weights are exported",
                  flush=True)
        checkpoint.save_spec(self.args.checkpoint_dir, self.spec)
        if self.progress.epoch or self.progress.step:
            within = f" and step {self.progress.step} of epoch {self.progress.epoch + 1}" if self.progress.step else ""
            print(f"resuming after epoch {self.progress.epoch}{within}", flush=True)

    def epoch(self, iterator):
        self.callbacks.on_epoch_begin(self.progress.epoch)
        logs = self.train_epoch(iterator)
        self.average_statistics()
        logs.update(self.validate())
        self.end_epoch(logs)

    def train_epoch(self, iterator):
        """The epoch's remaining steps; returns the training figures of those run here, over all hosts' batches."""
        start, first, examples = time.perf_counter(), self.progress.step, 0
        for self.progress.step in range(first, self.steps):
            examples += self.step(iterator)
        self.progress.step, seconds = self.steps, time.perf_counter() - start
        logs = {}
        if first < self.steps:
            logs = {name: float(value) for name, value in self.model.get_metrics_result().items()}
            logs["examples_per_sec"] = examples / seconds
        self.model.reset_metrics()
        return logs

    def step(self, iterator):
        """One step on every host; returns the examples all hosts trained on. A SIGTERM on any host: save, stop."""
        stop, trained = self.train_step(iterator, tf.constant(float(self.stop_requested.is_set()))).numpy()
        self.steps_run, self.examples_run = self.steps_run + 1, self.examples_run + trained
        if stop:
            self.progress.step += 1
            self.save()
            raise Interrupted(f"in epoch {self.progress.epoch + 1} after step {self.progress.step} of {self.steps}")
        return trained

    def validate(self):
        """All of the validation split, on this host alone (no collectives); cut short by SIGTERM. {} without one."""
        if not self.validating:
            return {}
        self.plain.set_weights(self.model.get_weights())
        watch = keras.callbacks.LambdaCallback(
            on_test_batch_end=lambda *_, **__: setattr(self.plain, "stop_evaluating", self.stop_requested.is_set()))
        with warnings.catch_warnings():  # Keras warns at the end of any dataset of unknown length
            warnings.filterwarnings("ignore", "Your input ran out of data")
            results = self.plain.evaluate(self.validation_data, verbose=0, return_dict=True, callbacks=[watch])
        return {metric_lines.VALIDATION + name: value for name, value in results.items()}

    def end_epoch(self, logs):
        """All hosts agree on early stopping and on SIGTERM (a collective); the best weights are kept; saved."""
        progress, epoch = self.progress, self.progress.epoch
        improved = self.validating and (progress.best is None or logs[MONITOR] > progress.best)
        wait = progress.wait + 1 if self.validating and not improved else 0
        stop_early, interrupted = self.total(tf.constant(
            [wait >= max(1, self.args.patience), self.stop_requested.is_set()], tf.float32)).numpy() > 0
        if interrupted:  # this epoch's steps are saved; its validation runs again on resume
            self.save()
            raise Interrupted(f"in epoch {epoch + 1} after its {self.steps} steps, before the end of the epoch")
        if improved:
            progress.best, progress.best_epoch, self.best = logs[MONITOR], epoch, self.plain.get_weights()
        progress.epoch, progress.step, progress.wait, progress.stopped = epoch + 1, 0, wait, bool(stop_early)
        self.save()
        if self.cluster.chief:
            print(metric_lines.metric_line(epoch + 1, logs), flush=True)
        self.callbacks.on_epoch_end(epoch, logs)

    def save(self):
        if self.cluster.chief:
            checkpoint.save(self.args.checkpoint_dir, self.progress, self.model, self.best)

    def result(self):
        """The plain model with the best weights (the last ones without validation) and the optimizer's state."""
        if self.progress.stopped and self.cluster.chief:
            print(f"early stopping: no better {MONITOR} for {self.progress.wait} epochs; "
                  f"best epoch {self.progress.best_epoch + 1}", flush=True)
        self.plain.set_weights(self.best or self.model.get_weights())
        checkpoint.set_optimizer_state(self.plain, checkpoint.optimizer_state(self.model))
        return self.plain, self.steps_run, int(self.examples_run)


def tensorboard(args):
    if importlib.util.find_spec("tensorboard"):  # in the SageMaker TF container; optional locally
        return [keras.callbacks.TensorBoard(os.path.join(args.output_data_dir, "tensorboard"))]
    print("tensorboard is not installed: no TensorBoard logs", flush=True)
    return []

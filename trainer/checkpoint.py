"""Training state in the checkpoint dir: one file, written by the chief, read by every host when it starts.

`training_state.npz` holds the model's weights, the optimizer's variables (its step count included),
the best weights so far (early stopping) and the progress as JSON: epochs done, steps done in the
interrupted epoch, the global batch size of those steps, the early-stopping counters and the fingerprint
of the dataset it was trained on.
It is written whole or not at all (tfrecord.localfs: a unique temp name, fsync, rename), so a kill or a
full disk at any moment leaves the previous state. The spec the model is built for sits beside it as
`captcha_spec.json`. One run at a time: the chief holds the folder (`hold`) for the whole training.
"""
import contextlib
import dataclasses
import hashlib
import json
import os

import numpy as np

from tfrecord import localfs, storage
from tfrecord.errors import UserError
from tfrecord.spec import SPEC_FILE, CaptchaSpec

STATE_FILE = "training_state.npz"


@dataclasses.dataclass
class Progress:
    epoch: int = 0  # epochs completed
    step: int = 0  # steps completed in the next epoch (> 0 after an interruption mid-epoch)
    best: float = None  # best val_sequence_accuracy so far, and its epoch (0-based)
    best_epoch: int = -1
    wait: int = 0  # epochs since the best one
    stopped: bool = False  # early stopping ended the training
    dataset: str = ""  # dataset_fingerprint() of the data it trains on
    batch_size: int = 0  # global batch size of the steps counted (0: a checkpoint from before it was recorded)


def dataset_fingerprint(manifest):
    return hashlib.sha256(manifest.to_json().encode()).hexdigest()[:16]


def check_resume(progress, batch_size, steps_per_epoch, directory):
    """Refuse, in one line, to resume `progress` with another global batch size: its steps, and the learning
    rate schedule's position (counted in steps), mean other examples at another batch size. A checkpoint
    that does not record its batch size is refused when its step lies beyond an epoch of this one."""
    if not (progress.epoch or progress.step) or not steps_per_epoch:  # nothing done; or no epoch (refused later)
        return
    done = f"{progress.epoch} epochs and {progress.step} steps done"
    if progress.batch_size and progress.batch_size != batch_size:
        raise UserError(f"checkpoint dir {directory} holds training with --batch-size {progress.batch_size} "
                        f"({done}): resume with --batch-size {progress.batch_size}, or use an empty checkpoint dir")
    if not progress.batch_size and progress.step >= steps_per_epoch:
        raise UserError(f"checkpoint dir {directory} holds step {progress.step} of an epoch, and an epoch at "
                        f"--batch-size {batch_size} has {steps_per_epoch} steps: resume with the batch size it was "
                        "trained with, or use an empty checkpoint dir")


def path(directory):
    return os.path.join(directory, STATE_FILE)


def save(directory, progress, model, best_weights):
    arrays = {f"model/{i}": w for i, w in enumerate(model.get_weights())}
    arrays.update({f"optimizer/{i}": v for i, v in enumerate(optimizer_state(model))})
    arrays.update({f"best/{i}": w for i, w in enumerate(best_weights or [])})
    arrays["progress"] = np.array(json.dumps(dataclasses.asdict(progress)))
    with localfs.atomic_file(path(directory)) as f:
        np.savez(f, **arrays)


@contextlib.contextmanager
def hold(directory):
    """`directory` held by this run for the with-block (an fcntl lock on `.lock` in it); UserError at once
    if another run trains with the same checkpoint dir. Folders made for it and left empty are removed."""
    made = localfs.makedirs(storage.local_path(directory, "checkpoint dir"))
    try:
        with localfs.exclusive_lock(os.path.join(directory, localfs.LOCK_NAME), f"checkpoint dir {directory}"):
            yield
    finally:
        localfs.remove_empty(made)


def save_spec(directory, spec):
    """The spec the model is built for, beside the state (a rerun builds the same model)."""
    localfs.write_atomic(os.path.join(directory, SPEC_FILE), json.dumps(spec.to_dict()))


def load_spec(directory):
    """The CaptchaSpec saved by `save_spec`, or None."""
    saved = os.path.join(directory, SPEC_FILE)
    if not os.path.exists(saved):
        return None
    with open(saved) as f:
        return CaptchaSpec.from_dict(json.load(f))


def load_progress(directory):
    """The saved Progress, or None when the directory holds no state."""
    if not os.path.exists(path(directory)):
        return None
    with np.load(path(directory)) as state:
        return Progress(**json.loads(str(state["progress"])))


def restore(directory, model):
    """Load weights and optimizer state into `model` (built); returns (Progress, best weights or None)."""
    with np.load(path(directory)) as state:
        progress = Progress(**json.loads(str(state["progress"])))
        weights = _series(state, "model")
        if [w.shape for w in weights] != [tuple(w.shape) for w in model.weights]:
            raise UserError(f"checkpoint dir {directory} holds a model of another architecture (another --head, "
                            "--scale or spec): use an empty checkpoint dir, or the flags it was trained with")
        model.set_weights(weights)
        set_optimizer_state(model, _series(state, "optimizer"))
        return progress, _series(state, "best") or None


def optimizer_state(model):
    return [variable.numpy() for variable in model.optimizer.variables]


def set_optimizer_state(model, values):
    """Assign saved optimizer variables (its step count, moments, ...) to `model`'s optimizer, built if need be."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    for variable, value in zip(model.optimizer.variables, values, strict=True):
        variable.assign(value)


def _series(state, prefix):
    count = sum(1 for name in state.files if name.startswith(prefix + "/"))
    return [state[f"{prefix}/{i}"] for i in range(count)]

"""`captcha-pipeline train`'s command line, without TensorFlow: the trainer parses it (trainer.train) and the
launchers check a job's hyperparameters against it before anything is created (`check_hyperparameters`).
"""
import argparse
import os

from tfrecord import flags, sagemaker
from tfrecord.errors import UserError
from tfrecord.manifest import TRAIN, VALIDATION
from trainer.metric_lines import MONITOR

HEADS = ("per-position", "ctc")
DEFAULT_HEAD = "ctc"  # the more accurate head on every label space of bench/accuracy.py (docs/benchmarks.md)
DEFAULT_SCALE = 0.5  # the working size is half the render size: 120x100 captchas are seen at 60x50
MAX_CPU_DEVICES = max(2, os.cpu_count() or 1)  # logical CPU devices: one per core (2 anywhere, to try the strategy)
PATH_TYPES = (flags.regular_file, flags.existing_folder, flags.file_or_folder, flags.creatable_folder,
              flags.empty_folder, flags.writable_file, flags.local_folder, flags.local_file)  # checked on the host that runs the trainer, not here
SPEC_FIELDS = ("alphabet", "length", "width", "height", "mode")


def parse_args(argv):
    """The trainer's flags -> argparse.Namespace; UserError (one line) for a flag of the wrong kind, or for
    outputs on one path, inside each other or inside the dataset read."""
    args = _parser().parse_args(argv)
    flags.distinct(args, "model_dir", "output_data_dir", "checkpoint_dir",
                   owned=("model_dir", "output_data_dir", "checkpoint_dir"), inputs=("train", "validation", "manifest"))
    return args


def in_container():
    """Whether the /opt/ml folders are the defaults: in SageMaker, or under an explicit container root
    (CAPTCHA_PIPELINE_OPT_ML, as `launch local` sets for each trainer). Elsewhere --model-dir is required and
    no checkpoint or output data dir is used unless named: a run never resumes from a stranger's /opt/ml."""
    return sagemaker.in_sagemaker() or sagemaker.ROOT_ENV in os.environ


def _parser():
    p = flags.ArgumentParser(prog="captcha-pipeline train", description="Train the captcha CNN (SageMaker script mode).")
    p.add_argument("--train", default=sagemaker.channel_dir(TRAIN), help="train split dir (File mode / local)")
    p.add_argument("--validation", default=sagemaker.channel_dir(VALIDATION),
                   help="validation split dir (used when the dataset has a validation split)")
    p.add_argument("--manifest", type=flags.file_or_folder,
                   help="dataset.json or its dir (default: meta channel, else beside --train)")
    container = in_container()
    p.add_argument("--model-dir", default=sagemaker.model_dir() if container else None, required=not container,
                   type=flags.local_folder)
    p.add_argument("--output-data-dir", default=sagemaker.output_data_dir() if container else None,
                   type=flags.local_folder,
                   help="TensorBoard logs and the learning curve (learning_curve.png and .json) go here "
                   "(without it: the curve goes into --model-dir)")
    p.add_argument("--checkpoint-dir", default=sagemaker.checkpoint_dir() if container else None,
                   type=flags.local_folder, help="resume from and checkpoint into this folder")
    p.add_argument("--epochs", type=flags.positive_int, default=10)
    p.add_argument("--batch-size", type=flags.positive_int, default=64, help="global batch size (all hosts and devices)")
    p.add_argument("--learning-rate", type=flags.positive_float, default=3e-3, help="peak of the warmup + cosine schedule")
    p.add_argument("--warmup-epochs", type=flags.non_negative_float, default=0.5)
    p.add_argument("--patience", type=flags.non_negative_int, default=3, help=f"early stopping on {MONITOR}")
    p.add_argument("--scale", type=flags.fraction, default=DEFAULT_SCALE, help="input downscaling inside the model, in (0, 1]")
    p.add_argument("--head", choices=HEADS, default=DEFAULT_HEAD,
                   help="one softmax per character position, or a bidirectional GRU read by CTC (trainer/model.py)")
    p.add_argument("--shuffle-buffer", type=flags.non_negative_int, default=2048)
    p.add_argument("--seed", type=flags.seed, default=0)
    p.add_argument("--cpu-devices", type=flags.at_least(0, most=MAX_CPU_DEVICES, why=" (this host's CPU cores, or 2)"),
                   default=0, help="split this host's CPU into N logical devices (MirroredStrategy over them; "
                   "at most its cores, or 2)")
    p.add_argument("--mixed-precision", choices=("auto", "on", "off"), default="auto",
                   help="mixed_float16 (auto: when a GPU is present)")
    p.add_argument("--cluster-timeout", type=flags.seconds, default=900, help="seconds to wait for all hosts to join")
    for field in SPEC_FIELDS:  # the model's spec; each defaults to the dataset's
        p.add_argument(f"--{field}", type=flags.positive_int if field in ("length", "width", "height") else str)
    return p


def check_hyperparameters(hps):
    """Refuse, as the trainer would, a job's hyperparameters ({name: value} strings, passed as `--name value`)
    that the trainer does not know or whose value is of the wrong kind: UserError `--hp: --epochs: why`.
    Paths are left to the host that runs the trainer (they name places in its file system)."""
    parser = _parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS  # only what is given is checked
        action.required = False
        if action.type in PATH_TYPES:
            action.type = None
    try:
        parser.parse_args([a for name, value in hps.items() for a in (f"--{name}", value)])
    except UserError as e:
        raise UserError(f"--hp: {e}") from None

"""Shared bits of the trainer's tests: the tiny dataset's spec and generate flags, and train flags."""
from tfrecord.spec import CaptchaSpec

TINY_SPEC = CaptchaSpec(alphabet="01", length=2, width=40, height=24)
# 4 label strings, so a few epochs on 256 images learn them well above chance (0.25)
TINY = ("--chars", "01", "--length", "2", "--width", "40", "--height", "24", "--train-examples", "256",
        "--validation-examples", "64", "--test-examples", "64", "--num-shards", "2")


def train_args(root, out, *extra):
    """Flags for `trainer.train.main` on a dataset at `root`, writing under `out`."""
    return ["--train", f"{root}/train", "--validation", f"{root}/validation", "--model-dir", f"{out}/model",
            "--checkpoint-dir", f"{out}/checkpoints", "--output-data-dir", f"{out}/output",
            "--scale", "1", "--batch-size", "32", "--learning-rate", "0.01", "--patience", "20", *extra]

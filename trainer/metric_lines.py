"""The trainer's metric lines and the regexes SageMaker scrapes them with (no Keras: `launch train` imports this).

One line per epoch: `epoch=3 loss=0.1234 ... val_sequence_accuracy=0.9710 examples_per_sec=812.3`.
"""
# The metric names, in one place: the Keras metrics (trainer/metrics.py), the lines, the regexes, early stopping
# (trainer/train.py) and the evaluation report (trainer/evaluate.py) use these.
LOSS, CHAR_ACCURACY, SEQUENCE_ACCURACY = "loss", "char_accuracy", "sequence_accuracy"
EXAMPLES_PER_SEC = "examples_per_sec"
VALIDATION = "val_"  # Keras' prefix for the metrics of the validation data
MONITOR = VALIDATION + SEQUENCE_ACCURACY  # early stopping and the best checkpoint
_FIT = (LOSS, CHAR_ACCURACY, SEQUENCE_ACCURACY)
METRIC_NAMES = (*_FIT, *(VALIDATION + name for name in _FIT), EXAMPLES_PER_SEC)
_NUMBER = r"([0-9.eE+-]+|nan|inf)"
METRIC_DEFINITIONS = [{"Name": name, "Regex": rf"(?:^|\s){name}={_NUMBER}"} for name in ("epoch",) + METRIC_NAMES]


def metric_line(epoch, logs):
    """The stable `name=value` line for one epoch."""
    parts = [f"epoch={epoch}"] + [f"{k}={logs[k]:.4f}" if k != EXAMPLES_PER_SEC else f"{k}={logs[k]:.1f}"
                                  for k in METRIC_NAMES if k in logs]
    return " ".join(parts)

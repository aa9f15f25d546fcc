"""The trainer's metric lines and the regexes SageMaker scrapes them with (no Keras: `launch train` imports this).

One line per epoch: `epoch=3 loss=0.1234 ... val_sequence_accuracy=0.9710 examples_per_sec=812.3`.
"""
METRIC_NAMES = ("loss", "char_accuracy", "sequence_accuracy", "val_loss", "val_char_accuracy",
                "val_sequence_accuracy", "examples_per_sec")
_NUMBER = r"([0-9.eE+-]+|nan|inf)"
METRIC_DEFINITIONS = [{"Name": name, "Regex": rf"(?:^|\s){name}={_NUMBER}"} for name in ("epoch",) + METRIC_NAMES]


def metric_line(epoch, logs):
    """The stable `name=value` line for one epoch."""
    parts = [f"epoch={epoch}"] + [f"{k}={logs[k]:.4f}" if k != "examples_per_sec" else f"{k}={logs[k]:.1f}"
                                  for k in METRIC_NAMES if k in logs]
    return " ".join(parts)

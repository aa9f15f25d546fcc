"""Captcha accuracy metrics (backend-agnostic) and the regexes SageMaker uses to scrape them."""
import keras
from keras import ops


def _correct(y_true, y_pred):
    return ops.equal(ops.cast(y_true, "int32"), ops.cast(ops.argmax(y_pred, axis=-1), "int32"))


def char_accuracy(y_true, y_pred):
    """Per example: the fraction of character positions predicted right."""
    return ops.mean(ops.cast(_correct(y_true, y_pred), "float32"), axis=-1)


def sequence_accuracy(y_true, y_pred):
    """Per example: 1 when every character is right."""
    return ops.cast(ops.all(_correct(y_true, y_pred), axis=-1), "float32")


@keras.saving.register_keras_serializable(package="captcha")
class CharAccuracy(keras.metrics.MeanMetricWrapper):
    def __init__(self, name="char_accuracy", dtype=None):
        super().__init__(char_accuracy, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="captcha")
class SequenceAccuracy(keras.metrics.MeanMetricWrapper):
    def __init__(self, name="sequence_accuracy", dtype=None):
        super().__init__(sequence_accuracy, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


# The trainer prints one line per epoch: `epoch=3 loss=0.1234 ... examples_per_sec=812.3`.
METRIC_NAMES = ("loss", "char_accuracy", "sequence_accuracy", "val_loss", "val_char_accuracy",
                "val_sequence_accuracy", "examples_per_sec")
_NUMBER = r"([0-9.eE+-]+|nan|inf)"
METRIC_DEFINITIONS = [{"Name": name, "Regex": rf"(?:^|\s){name}={_NUMBER}"} for name in ("epoch",) + METRIC_NAMES]


def metric_line(epoch, logs):
    """The stable `name=value` line for one epoch."""
    parts = [f"epoch={epoch}"] + [f"{k}={logs[k]:.4f}" if k != "examples_per_sec" else f"{k}={logs[k]:.1f}"
                                  for k in METRIC_NAMES if k in logs]
    return " ".join(parts)

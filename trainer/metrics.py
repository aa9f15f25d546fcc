"""Captcha accuracy metrics, backend-agnostic Keras 3 (the metric lines are in trainer/metric_lines.py)."""
import keras
from keras import ops

from trainer.metric_lines import CHAR_ACCURACY, SEQUENCE_ACCURACY


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
    def __init__(self, name=CHAR_ACCURACY, dtype=None):
        super().__init__(char_accuracy, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="captcha")
class SequenceAccuracy(keras.metrics.MeanMetricWrapper):
    def __init__(self, name=SEQUENCE_ACCURACY, dtype=None):
        super().__init__(sequence_accuracy, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}

"""Captcha accuracy metrics, backend-agnostic Keras 3 (the metric lines are in trainer/metric_lines.py).

Both compare the text a head reads (`trainer.model.decode`: per-position argmax, or CTC's greedy path) with
the labels, position by position over `length` positions, labels padded past their length with the index
`pad` (None: a fixed length, no padding). Text read past `length` positions makes the sequence wrong.
"""
import keras
from keras import ops

from trainer.metric_lines import CHAR_ACCURACY, SEQUENCE_ACCURACY


def _correct(y_true, y_pred, head="per-position", pad=None):
    """Per example and label position: whether the text read has the label's index there; and per example
    whether nothing was read past the label positions."""
    y_true = ops.cast(y_true, "int32")
    if head == "per-position" and pad is None:  # a fixed length: the argmax per position
        read = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        return ops.equal(y_true, read), None
    from trainer.model import decode

    read, _ = decode(y_pred, head, pad)
    length, steps = ops.shape(y_true)[1], ops.shape(read)[1]
    if steps < length:  # a CTC map narrower than the labels: what it cannot read is missing
        read = ops.pad(read, [[0, 0], [0, length - steps]], constant_values=pad)
    nothing_more = ops.all(ops.equal(read[:, length:], pad), axis=-1)
    return ops.equal(y_true, read[:, :length]), nothing_more


def char_accuracy(y_true, y_pred, head="per-position", pad=None):
    """Per example: the fraction of character positions predicted right."""
    correct, _ = _correct(y_true, y_pred, head, pad)
    return ops.mean(ops.cast(correct, "float32"), axis=-1)


def sequence_accuracy(y_true, y_pred, head="per-position", pad=None):
    """Per example: 1 when every character is right (and, for a variable length, nothing more is read)."""
    correct, nothing_more = _correct(y_true, y_pred, head, pad)
    right = ops.all(correct, axis=-1)
    return ops.cast(right if nothing_more is None else ops.logical_and(right, nothing_more), "float32")


class _HeadMetric(keras.metrics.MeanMetricWrapper):
    def __init__(self, fn, name, dtype=None, head="per-position", pad=None):
        super().__init__(fn, name=name, dtype=dtype, head=head, pad=pad)
        self.head, self.pad = head, pad

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "head": self.head, "pad": self.pad}


@keras.saving.register_keras_serializable(package="captcha")
class CharAccuracy(_HeadMetric):
    def __init__(self, name=CHAR_ACCURACY, dtype=None, head="per-position", pad=None):
        super().__init__(char_accuracy, name, dtype, head, pad)


@keras.saving.register_keras_serializable(package="captcha")
class SequenceAccuracy(_HeadMetric):
    def __init__(self, name=SEQUENCE_ACCURACY, dtype=None, head="per-position", pad=None):
        super().__init__(sequence_accuracy, name, dtype, head, pad)

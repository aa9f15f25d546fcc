"""What the reader tests share: the labels a dataset yields, and the one error line a dataset raises."""
import pytest

from tfrecord.errors import embedded_user_error


def labels(ds):
    """Every label of every batch, in order, as tuples."""
    return [tuple(row) for _, y in ds for row in y.numpy().tolist()]


def first_error(ds):
    """The message of the error that iterating `ds` raises (a UserError's line when it carries one)."""
    with pytest.raises(Exception) as info:
        for _ in ds:
            pass
    return embedded_user_error(info.value) or str(info.value)

"""The learning curve: loss and accuracy per epoch, train and validation, as a PNG and the JSON it is drawn
from (no Keras here: `launch local` imports it to name the PNG).

`record(folder, epoch, logs)`, which the trainer calls at the end of every epoch, writes (atomically)
`<folder>/learning_curve.json` ({"epochs": [{"epoch": 1, "loss": ..., "val_loss": ..., ...}, ...]}, one entry per
epoch run so far) and `<folder>/learning_curve.png` drawn from exactly those entries (matplotlib). In a
SageMaker job the folder is the output data dir, so both travel in output.tar.gz. A resumed run keeps the
entries of the epochs before the one it resumes at; a new run into the same folder starts a new curve.
"""
import io
import json
import os

from tfrecord import storage

PNG = "learning_curve.png"
JSON = "learning_curve.json"
PANELS = (("loss", ("loss",)), ("accuracy", ("sequence_accuracy", "char_accuracy")))  # (y label, metrics drawn)


def read(folder):
    """The entries of `folder`'s learning_curve.json, [] if there is none (or it is not one)."""
    try:
        with open(os.path.join(folder, JSON)) as f:
            epochs = json.load(f)["epochs"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return epochs if isinstance(epochs, list) else []


def draw(epochs):
    """PNG bytes of the curves of `epochs` (entries as in learning_curve.json): one panel for the loss, one for
    the accuracies; train solid, validation dashed; one marker per epoch."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    x = [entry["epoch"] for entry in epochs]
    for i, (ylabel, names) in enumerate(PANELS):
        axes = figure.add_subplot(1, len(PANELS), i + 1)
        for name in names:
            for prefix, style in (("", "-"), ("val_", "--")):
                points = [(e, entry[prefix + name]) for e, entry in zip(x, epochs) if prefix + name in entry]
                if points:
                    axes.plot(*zip(*points), style, marker="o", label=prefix + name)
        axes.set_xlabel("epoch")
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend()
    figure.suptitle("learning curve")
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=80)
    return out.getvalue()


def record(folder, epoch, logs):
    """After epoch `epoch` (0-based, as Keras counts) with metrics `logs`: write learning_curve.json and .png
    into `folder` (atomically), keeping the entries of earlier epochs (a resumed run's) and dropping later ones
    (a new run's)."""
    epochs = [entry for entry in read(folder) if entry.get("epoch", 0) <= epoch]
    epochs.append({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}})
    storage.write_atomic(os.path.join(folder, JSON), json.dumps({"epochs": epochs}, indent=1).encode())
    storage.write_atomic(os.path.join(folder, PNG), draw(epochs))

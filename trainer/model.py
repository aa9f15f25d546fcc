"""The captcha models: Keras 3 layers and ops only, so they run on the TensorFlow, JAX or PyTorch backend.

uint8 pixels at the stored size -> rescaled to [0, 1] (and resized to the working size if it differs)
inside the model -> four Conv-BN-ReLU(-Pool) blocks (the trunk) -> one of two heads
(`build_model(head=...)`), both ending in float32 softmax probabilities:
  per-position  one softmax per character position: [batch, length, num_classes]; for a variable-length
                spec one more class, "end" (index `spec.pad`), which the positions past a label's end learn
                (the readers pad labels with it): [batch, length, num_classes + 1]
  ctc           the trunk keeps the width (its last pool halves the height only), each column of its map
                is one time step of a bidirectional GRU, then a softmax over the alphabet and CTC's blank
                (index `spec.pad`): [batch, steps, num_classes + 1], trained with `keras.ops.ctc_loss`
                (Graves et al. 2006; the CRNN of Shi et al. 2015) and read by greedy `keras.ops.ctc_decode`
`decode` turns either head's probabilities into alphabet indices and a confidence, in the graph.
Feeding bytes keeps host->device traffic at 1 byte per pixel.
"""
import keras
from keras import ops

from tfrecord.errors import UserError
from tfrecord.spec import CaptchaSpec
from trainer.arguments import DEFAULT_HEAD, DEFAULT_SCALE, HEADS  # noqa: F401 (the flags' defaults)
from trainer.metrics import CharAccuracy, SequenceAccuracy

# the model's name says its head: what compile_model, decode and the export read back from a built model
NAMES = {"captcha_cnn": ("per-position", False), "captcha_cnn_end": ("per-position", True),
         "captcha_crnn": ("ctc", True)}  # name -> (head, whether index num_classes is "end" or the blank)
FILTERS = (16, 32, 64, 96)  # the trunk's convolution widths
RNN_UNITS = 64  # per direction
EPSILON = 1e-7  # probabilities are clipped here before their log (CTC loss)


def working_size(spec: CaptchaSpec, scale):
    """(height, width) the convolutions see: the RENDER size times `scale`."""
    return round(spec.height * scale), round(spec.width * scale)


def check_scale(spec: CaptchaSpec, scale, pools=3):
    """UserError unless `scale` leaves the convolutions a map they can pool `pools` times (2**pools px each way)."""
    height, width = working_size(spec, scale)
    if min(height, width) < 2 ** pools:
        raise UserError(f"--scale {scale:g}: the model would see {width}x{height} px of the {spec.width}x{spec.height} "
                        f"render; it needs at least {2 ** pools} px each way")


def build_model(spec: CaptchaSpec, *, scale=DEFAULT_SCALE, filters=FILTERS, dropout=0.3, head=DEFAULT_HEAD):
    """Input: uint8 [batch, *spec.input_shape]; output: float32 probabilities (see the module doc). A Resizing
    layer exists only when the stored size is not the working size (PNG 120x100 at scale 0.5 is resized to
    60x50 in the model; raw 60x50 is not). ValueError for an unknown head."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    inputs = keras.Input(spec.input_shape, dtype="uint8", name="pixels")
    x = keras.layers.Rescaling(1 / 255, name="rescale")(inputs)
    if working_size(spec, scale) != spec.input_shape[:2]:
        # bilinear at a factor of exactly 2 averages 2x2 blocks: the producer's box filter
        x = keras.layers.Resizing(*working_size(spec, scale), name="resize")(x)
    for i, n in enumerate(filters):
        x = keras.layers.Conv2D(n, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        if i < len(filters) - 1:  # keep the last map's layout: it says where each character is
            # CTC: the last pool halves the height only, so there are enough time steps for a label's characters
            # and the blanks between repeated ones
            pool = (2, 1) if head == "ctc" and i == len(filters) - 2 else (2, 2)
            x = keras.layers.MaxPooling2D(pool, name=f"pool{i}")(x)
    if head == "ctc":
        return keras.Model(inputs, _ctc_head(x, spec, dropout), name="captcha_crnn")
    classes = spec.num_classes + spec.variable  # + "end" for a variable length
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    x = keras.layers.Dense(spec.length * classes, name="logits")(x)
    x = keras.layers.Reshape((spec.length, classes), name="per_position")(x)
    # Softmax over the classes of each position separately (not jointly across positions).
    outputs = keras.layers.Softmax(axis=-1, dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="captcha_cnn_end" if spec.variable else "captcha_cnn")


def _ctc_head(x, spec, dropout):
    """The trunk's map [batch, height, width, channels] -> per column (time step) probabilities over the
    alphabet and the blank: [batch, width, num_classes + 1]."""
    _, height, width, channels = x.shape
    x = keras.layers.Permute((2, 1, 3), name="columns")(x)  # [batch, width, height, channels]
    x = keras.layers.Reshape((width, height * channels), name="steps")(x)
    x = keras.layers.Dense(2 * RNN_UNITS, activation="relu", name="step_features")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    x = keras.layers.Bidirectional(keras.layers.GRU(RNN_UNITS, return_sequences=True), name="bigru")(x)
    x = keras.layers.Dense(spec.num_classes + 1, name="logits")(x)
    return keras.layers.Softmax(axis=-1, dtype="float32", name="probabilities")(x)


def head_of(model):
    """(head, pad): the head of a model `build_model` made, and the index past its alphabet (the "end" class
    or the CTC blank), None for a fixed-length per-position model."""
    head, extra = NAMES[model.name]
    return head, model.output.shape[-1] - 1 if extra else None


def decode(probabilities, head, pad):
    """Either head's probabilities -> (int32 indices [batch, steps], float32 confidence [batch]), backend-neutral.

    indices: alphabet indices of the text read, left-aligned, then `pad` (when `pad` is not None): the
    per-position head's characters up to its first "end"; the CTC head's greedy path (the most probable class
    per step, repeats merged, blanks removed). confidence: the product of the chosen classes' probabilities
    over all positions or steps (for CTC the greedy path's probability)."""
    if head == "ctc":
        steps = ops.shape(probabilities)[1]
        lengths = ops.full(ops.shape(probabilities)[:1], steps, dtype="int32")
        decoded, scores = ops.ctc_decode(ops.log(ops.maximum(probabilities, EPSILON)), lengths, strategy="greedy",
                                         mask_index=pad)
        indices = ops.where(decoded[0] < 0, pad, decoded[0])  # ctc_decode pads with -1
        return ops.cast(indices, "int32"), ops.exp(-ops.cast(scores[:, 0], "float32"))
    indices = ops.cast(ops.argmax(probabilities, axis=-1), "int32")
    if pad is not None:  # everything from the first "end" on is end
        ended = ops.cumsum(ops.cast(ops.equal(indices, pad), "int32"), axis=-1) > 0
        indices = ops.where(ended, pad, indices)
    return indices, ops.prod(ops.max(probabilities, axis=-1), axis=-1)


@keras.saving.register_keras_serializable(package="captcha")
class CTCLoss(keras.losses.Loss):
    """CTC loss (`keras.ops.ctc_loss`) of int labels [batch, length], padded with `pad` past each label's
    length, against probabilities [batch, steps, pad + 1] whose class `pad` is the blank."""

    def __init__(self, pad, name="ctc_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.pad = pad

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        label_lengths = ops.sum(ops.cast(ops.not_equal(y_true, self.pad), "int32"), axis=-1)
        steps = ops.full(ops.shape(y_pred)[:1], ops.shape(y_pred)[1], dtype="int32")
        return ops.ctc_loss(y_true, ops.log(ops.maximum(y_pred, EPSILON)), label_lengths, steps, mask_index=self.pad)

    def get_config(self):
        return {**super().get_config(), "pad": self.pad}


def compile_model(model, learning_rate):
    """Adam, the head's loss (per-position: sparse categorical cross-entropy per position; ctc: CTCLoss) and
    the character and sequence accuracy of the text `decode` reads."""
    head, pad = head_of(model)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=CTCLoss(pad) if head == "ctc" else keras.losses.SparseCategoricalCrossentropy(),
        metrics=[CharAccuracy(head=head, pad=pad), SequenceAccuracy(head=head, pad=pad)],
    )
    return model

"""The captcha CNN: Keras 3 layers and ops only, so it runs on the TensorFlow, JAX or PyTorch backend.

uint8 pixels at the stored size -> rescaled to [0, 1] (and resized to the working size if it differs)
inside the model -> four Conv-BN-ReLU(-Pool) blocks -> one softmax per character position:
output [batch, length, num_classes]. Feeding bytes keeps host->device traffic at 1 byte per pixel.
"""
import keras

from tfrecord.spec import CaptchaSpec
from trainer.metrics import CharAccuracy, SequenceAccuracy


def working_size(spec: CaptchaSpec, scale):
    """(height, width) the convolutions see: the RENDER size times `scale`."""
    return round(spec.height * scale), round(spec.width * scale)


def build_model(spec: CaptchaSpec, *, scale=0.5, filters=(16, 32, 64, 96), dropout=0.3):
    """Input: uint8 [batch, *spec.input_shape]. A Resizing layer exists only when the stored size is not
    the working size (PNG 120x100 at scale 0.5 is resized to 60x50 in the model; raw 60x50 is not)."""
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
            x = keras.layers.MaxPooling2D(name=f"pool{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    x = keras.layers.Dense(spec.length * spec.num_classes, name="logits")(x)
    x = keras.layers.Reshape((spec.length, spec.num_classes), name="per_position")(x)
    # Softmax over the classes of each position separately (not jointly across positions).
    outputs = keras.layers.Softmax(axis=-1, dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="captcha_cnn")


def compile_model(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[CharAccuracy(), SequenceAccuracy()],
    )
    return model

"""The captcha CNN: Keras 3 layers and ops only, so it runs on the TensorFlow, JAX or PyTorch backend.

Pixels in [0, 1] -> downscaled inside the model -> four Conv-BN-ReLU(-Pool) blocks ->
one softmax per character position: output [batch, length, num_classes].
"""
import keras

from tfrecord.spec import CaptchaSpec
from trainer.metrics import CharAccuracy, SequenceAccuracy


def build_model(spec: CaptchaSpec, *, scale=0.5, filters=(16, 32, 64, 96), dropout=0.3):
    """`scale` resizes the input inside the model, so callers always feed the spec's full size."""
    inputs = keras.Input((spec.height, spec.width, spec.channels), name="pixels")
    x = inputs
    if scale != 1:
        x = keras.layers.Resizing(round(spec.height * scale), round(spec.width * scale), name="downscale")(x)
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

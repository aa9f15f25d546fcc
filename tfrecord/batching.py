"""What the files and Pipe readers share: verified records -> Python batches -> tf.data, decoded per batch.

The readers produce blocks of verified serialized records in Python (both CRCs checked, errors name
the source and byte offset). Shuffling and batching happen here in Python, so tf.data receives one
tensor of serialized records per batch (one Python -> TF hop per batch, not per record); parsing and
decoding then run per batch in parallel in tf.data: `tf.io.decode_raw` for raw records, one PNG
decode per image (inside one map over the batch) for PNG records.
"""
import random

import tensorflow as tf

from tfrecord import schema
from tfrecord.spec import CaptchaSpec

AUTOTUNE = tf.data.AUTOTUNE


def decode_batch(serialized, spec: CaptchaSpec):
    """Serialized Examples [B] -> (uint8 images [B, H, W, C], int32 labels [B, length]).

    [H, W, C] is `spec.input_shape`; an image of another size is an error (InvalidArgument), never resized.
    """
    parsed = schema.parse_example(serialized, spec)
    encoded = parsed[schema.IMAGE]
    if spec.image_format == "raw":
        images = schema.decode_raw(encoded, spec)
    else:
        images = tf.map_fn(lambda png: tf.ensure_shape(tf.io.decode_png(png, channels=spec.channels), spec.input_shape),
                           encoded, fn_output_signature=tf.TensorSpec(spec.input_shape, tf.uint8))
    return images, tf.cast(parsed[schema.LABEL], tf.int32)


def shuffled(blocks, buffer_size, rng):
    """Blocks of records -> blocks in random order, through a buffer of `buffer_size` records (as tf.data's)."""
    buffer = []
    for block in blocks:
        buffer += block
        out = []
        while len(buffer) > buffer_size:
            i = rng.randrange(len(buffer))
            buffer[i], buffer[-1] = buffer[-1], buffer[i]
            out.append(buffer.pop())
        if out:
            yield out
    rng.shuffle(buffer)
    yield buffer


def batches(blocks, batch_size):
    """Blocks of records -> lists of exactly `batch_size` records; the last one may be shorter."""
    pending = []
    for block in blocks:
        pending += block
        full = len(pending) - len(pending) % batch_size
        for i in range(0, full, batch_size):
            yield pending[i:i + batch_size]
        pending = pending[full:]
    if pending:
        yield pending


def every_nth(blocks, n, index):
    """Keep records index, index + n, ... of the whole stream (one host's share of a FullyReplicated channel)."""
    position = 0
    for block in blocks:
        yield block[(index - position) % n::n]
        position += len(block)


class Passes:
    """A callable for `Dataset.from_generator`: each call (each iteration of the dataset) is a new stream.

    `blocks(rng, iteration)` yields blocks of records; with a seed, iteration k shuffles with (seed, k),
    so epochs differ from one another and runs repeat exactly.
    """

    def __init__(self, blocks, batch_size, *, shuffle_buffer=0, seed=None):
        self.blocks, self.batch_size, self.shuffle_buffer, self.seed = blocks, batch_size, shuffle_buffer, seed
        self.iteration = 0

    def __call__(self):
        iteration, self.iteration = self.iteration, self.iteration + 1
        rng = random.Random(None if self.seed is None else f"{self.seed}/{iteration}")
        blocks = self.blocks(rng, iteration)
        if self.shuffle_buffer:
            blocks = shuffled(blocks, self.shuffle_buffer, rng)
        yield from batches(blocks, self.batch_size)


def dataset(passes: Passes, spec: CaptchaSpec, *, deterministic=False):
    """Batches of serialized records from `passes` -> prefetched tf.data of decoded (images, labels)."""
    records = tf.data.Dataset.from_generator(passes, output_signature=tf.TensorSpec([None], tf.string))
    decoded = records.map(lambda s: decode_batch(s, spec), num_parallel_calls=AUTOTUNE,
                          deterministic=deterministic)
    return decoded.prefetch(AUTOTUNE)

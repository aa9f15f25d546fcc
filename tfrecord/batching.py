"""What the files and Pipe readers share: verified records -> Python batches -> tf.data, decoded per batch.

The readers produce blocks of verified serialized records in Python (both CRCs checked, errors name
the source and byte offset). Shuffling and batching happen here in Python, so tf.data receives one
tensor of serialized records per group of whole batches (one Python -> TF hop per group, never per
record); parsing and decoding run per group in parallel in tf.data (`tf.io.decode_raw` for raw
records, one PNG decode per image inside one map for PNG), then the group is cut into batches.
"""
import random

import tensorflow as tf

from tfrecord import schema
from tfrecord.spec import CaptchaSpec

AUTOTUNE = tf.data.AUTOTUNE
GROUP = 1024  # records per Python -> TF hop and per decode call (whole batches)
CHECKED = 32  # records at the start of each shard (files) or FIFO (Pipe) checked against the spec in Python


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


def checked(blocks, spec: CaptchaSpec, source, count=CHECKED):
    """Blocks of records from `source` (a shard, a FIFO), passed on once their first `count` records agree
    with the spec (schema.check_example: the label spelled in the spec's alphabet, the stored size), so a
    dataset.json whose alphabet or size is not the data's is one line naming the source and record."""
    seen = 0
    for block in blocks:
        for i, record in enumerate(block[:max(0, count - seen)]):
            schema.check_example(record, spec, f"{source} record {seen + i}")
        seen += len(block)
        yield block


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

    `blocks(rng)` yields blocks of records; with a seed, iteration k shuffles with (seed, k), so epochs
    differ from one another and runs repeat exactly.
    """

    def __init__(self, blocks, group, *, shuffle_buffer=0, seed=None):
        self.blocks, self.group, self.shuffle_buffer, self.seed = blocks, group, shuffle_buffer, seed
        self.iteration = 0

    def __call__(self):
        iteration, self.iteration = self.iteration, self.iteration + 1
        rng = random.Random(None if self.seed is None else f"{self.seed}/{iteration}")
        blocks = self.blocks(rng)
        if self.shuffle_buffer:
            blocks = shuffled(blocks, self.shuffle_buffer, rng)
        yield from batches(blocks, self.group)


def dataset(blocks, spec: CaptchaSpec, batch_size, *, shuffle_buffer=0, seed=None, deterministic=False):
    """`blocks(rng)` -> prefetched tf.data of decoded (images, labels) batches of `batch_size`.

    Records cross into tf.data GROUP of them at a time (whole batches), are decoded per group in
    parallel, then cut into batches: the per-call cost of a Python -> TF hop is paid once per group.
    """
    group = batch_size * max(1, GROUP // batch_size)
    passes = Passes(blocks, group, shuffle_buffer=shuffle_buffer, seed=seed)
    records = tf.data.Dataset.from_generator(passes, output_signature=tf.TensorSpec([None], tf.string))
    decoded = records.map(lambda s: decode_batch(s, spec), num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return (decoded.rebatch(batch_size) if group > batch_size else decoded).prefetch(AUTOTUNE)

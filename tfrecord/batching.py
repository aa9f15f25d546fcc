"""What the files and Pipe readers share: verified records -> Python batches -> tf.data, decoded per batch.

The readers produce blocks of verified serialized records in Python (both CRCs checked, errors name
the source and byte offset). Shuffling and batching happen here in Python, so tf.data receives one
tensor of serialized records per group of whole batches (one Python -> TF hop per group, never per
record); parsing and decoding run per group in parallel in tf.data (`tf.io.decode_raw` for raw
records, one PNG decode per image inside one map for PNG), then the group is cut into batches.
"""
import dataclasses
import random
from collections.abc import Callable, Iterable, Iterator

import tensorflow as tf

from tfrecord import schema
from tfrecord.spec import CaptchaSpec

AUTOTUNE = tf.data.AUTOTUNE
GROUP = 1024  # records per Python -> TF hop and per decode call (whole batches)
CHECKED = 32  # records at the start of each shard (files) or FIFO (Pipe) checked against the spec in Python


def decode_batch(serialized, spec: CaptchaSpec, lengths=False):
    """Serialized Examples [B] -> (uint8 images [B, H, W, C], int32 labels [B, length]), and with `lengths`
    int32 label lengths [B] as a third element.

    [H, W, C] is `spec.input_shape`; an image of another size is an error (InvalidArgument), never resized.
    A label shorter than `spec.length` (a variable-length spec) is padded with `spec.pad` (schema.padded_labels).
    """
    parsed = schema.parse_example(serialized, spec)
    encoded = parsed[schema.IMAGE]
    if spec.image_format == "raw":
        images = schema.decode_raw(encoded, spec)
    else:
        images = tf.map_fn(lambda png: tf.ensure_shape(tf.io.decode_png(png, channels=spec.channels), spec.input_shape),
                           encoded, fn_output_signature=tf.TensorSpec(spec.input_shape, tf.uint8))
    labels, label_lengths = schema.padded_labels(parsed[schema.LABEL], spec)
    return (images, labels, label_lengths) if lengths else (images, labels)


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """How a reader streams a channel's records, the same for the files and the Pipe reader.

    Attributes:
      num_workers, worker_index: with num_workers > 1, this host keeps its 1/num_workers of the data from
        worker_index (0-based): every num_workers-th shard (files) or record (Pipe); several hosts on a
        FullyReplicated channel.
      shuffle_buffer: records held for shuffling (as tf.data's `shuffle`); 0 keeps the stored order.
        The files reader then also shuffles the shard order per pass and reads CYCLE shards round-robin.
      seed: shuffles repeat exactly for a seed (pass k uses (seed, k)); None draws fresh randomness.
      repeat: False: one pass per iteration of the dataset (each Keras epoch; Pipe: one FIFO); True: one
        endless stream, pass after pass (Pipe: FIFO after FIFO).
      deterministic: decoded batches keep their order (tf.data's `deterministic` for the parallel decode).
      lengths: each element also holds the int32 label lengths [B]: (images, labels, lengths) (decode_batch).
    """
    num_workers: int = 1
    worker_index: int = 0
    shuffle_buffer: int = 0
    seed: int | None = None
    repeat: bool = False
    deterministic: bool = False
    lengths: bool = False


def checked(blocks: Iterable[list[bytes]], spec: CaptchaSpec, source: str,
            count: int = CHECKED) -> Iterator[list[bytes]]:
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


def dataset(blocks: Callable[[random.Random], Iterable[list[bytes]]], spec: CaptchaSpec, batch_size: int,
            options: ReadOptions) -> tf.data.Dataset:
    """`blocks(rng)` -> prefetched tf.data of decoded (images, labels) batches of `batch_size`.

    Args:
      blocks: called once per iteration of the dataset with that pass's random.Random; yields lists of
        verified serialized tf.train.Example records (bytes).
      spec: the images are `spec.input_shape` (stored height, width, channels), the labels `spec.length`.
      batch_size: examples per batch; the last batch of a pass may be shorter.
      options: shuffle_buffer, seed, deterministic and lengths are used here (the rest by the reader).
    Returns:
      batches of (uint8 images [B, H, W, C], int32 labels [B, length]), labels padded with `spec.pad` past
      their own length; with options.lengths also int32 lengths [B].

    Records cross into tf.data GROUP of them at a time (whole batches), are decoded per group in
    parallel, then cut into batches: the per-call cost of a Python -> TF hop is paid once per group.
    """
    group = batch_size * max(1, GROUP // batch_size)
    passes = Passes(blocks, group, shuffle_buffer=options.shuffle_buffer, seed=options.seed)
    records = tf.data.Dataset.from_generator(passes, output_signature=tf.TensorSpec([None], tf.string))
    decoded = records.map(lambda s: decode_batch(s, spec, options.lengths), num_parallel_calls=AUTOTUNE,
                          deterministic=options.deterministic)
    return (decoded.rebatch(batch_size) if group > batch_size else decoded).prefetch(AUTOTUNE)

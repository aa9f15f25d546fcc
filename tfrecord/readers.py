"""tf.data readers for the Example schema: decoding, and sharded TFRecord files (local, File, FastFile)."""
import os

import tensorflow as tf

from tfrecord import schema
from tfrecord.errors import UserError
from tfrecord.manifest import MANIFEST_NAME
from tfrecord.spec import CaptchaSpec

AUTOTUNE = tf.data.AUTOTUNE


def decode_example(serialized, spec: CaptchaSpec, *, channels=None, dtype="float32"):
    """One serialized Example -> (image [H, W, C] uint8 or float in [0, 1], label [length] int32)."""
    parsed = schema.parse_example(serialized, spec)
    image = tf.io.decode_image(parsed[schema.IMAGE], channels=channels or spec.channels, expand_animations=False)
    image = tf.ensure_shape(image, [spec.height, spec.width, channels or spec.channels])
    if tf.as_dtype(dtype).is_floating:
        image = tf.cast(image, dtype) / 255.0
    return image, tf.cast(parsed[schema.LABEL], tf.int32)


def decode_batch(serialized, spec: CaptchaSpec, *, channels=None, dtype="float32"):
    """A batch of serialized Examples -> (images [B, H, W, C], labels [B, length] int32)."""
    return tf.map_fn(lambda s: decode_example(s, spec, channels=channels, dtype=dtype), serialized,
                     fn_output_signature=(tf.as_dtype(dtype) if tf.as_dtype(dtype).is_floating else tf.uint8, tf.int32))


def shard_files(source):
    """A split directory (recursively, *.tfrecord), one shard path, or a list of shard paths -> sorted list."""
    if isinstance(source, (list, tuple)):
        return list(source)
    source = os.fspath(source)
    if not os.path.isdir(source):
        if not os.path.exists(source):
            raise UserError(f"{source}: no such shard or split directory")
        return [source]
    if os.path.exists(os.path.join(source, MANIFEST_NAME)):
        raise UserError(f"{source} is a dataset root: pass one split directory, e.g. {os.path.join(source, 'train')}")
    files = sorted(os.path.join(d, f) for d, _, names in os.walk(source) for f in names if f.endswith(".tfrecord"))
    if not files:
        raise UserError(f"{source}: no .tfrecord shards")
    return files


def batched(records, spec, batch_size, *, shuffle_buffer=0, repeat=False, deterministic=False, channels=None,
            dtype="float32", seed=None, drop_remainder=False):
    """Serialized records -> shuffled, decoded, batched, prefetched (images, labels). Shared by every reader."""
    if shuffle_buffer:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        records = records.repeat()
    ds = records.map(lambda s: decode_example(s, spec, channels=channels, dtype=dtype),
                     num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(AUTOTUNE)


def files_dataset(source, spec: CaptchaSpec, batch_size, *, num_workers=1, worker_index=0, deterministic=False,
                  shuffle_buffer=0, seed=None, **kwargs):
    """Shards -> dataset of (images, labels): parallel interleave across shards, AUTOTUNE decode.

    deterministic=True gives the same order every time (evaluation); num_workers > 1 keeps every
    num_workers-th shard starting at worker_index (multi-host File / FullyReplicated).
    """
    files = shard_files(source)
    if num_workers > 1:
        files = files[worker_index::num_workers]
        if not files:
            raise UserError(f"{source}: fewer shards than workers; worker {worker_index} of {num_workers} gets none")
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_buffer:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    records = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 16),
                            num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return batched(records, spec, batch_size, shuffle_buffer=shuffle_buffer, deterministic=deterministic,
                   seed=seed, **kwargs)

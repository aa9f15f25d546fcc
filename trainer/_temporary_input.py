"""TEMPORARY stand-in for tfrecord.channels until the readers land."""
import os

import tensorflow as tf


def channel(name, spec, batch_size, *, path=None, shuffle_buffer=0, seed=None, num_workers=1, worker_index=0, **_):
    from tfrecord.schema import IMAGE, LABEL, parse_example
    files = sorted(tf.io.gfile.glob(os.path.join(path, "*.tfrecord")))
    if not files:
        from tfrecord.errors import UserError
        raise UserError(f"{name}: no *.tfrecord shards in {path} (Pipe mode needs tfrecord.channels)")
    ds = tf.data.TFRecordDataset(files[worker_index::num_workers])
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed)
    def dec(s):
        f = parse_example(s, spec)
        img = tf.map_fn(lambda b: tf.cast(tf.io.decode_png(b, spec.channels), tf.float32) / 255, f[IMAGE], fn_output_signature=tf.float32)
        img.set_shape([None, spec.height, spec.width, spec.channels])
        return img, tf.cast(f[LABEL], tf.int32)
    return ds.batch(batch_size).map(dec, num_parallel_calls=tf.data.AUTOTUNE)

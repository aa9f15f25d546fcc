"""channel(): the one call the trainer makes for a dataset, whatever SageMaker input mode the channel uses."""
import os

from tfrecord import sagemaker
from tfrecord.files import files_dataset
from tfrecord.pipe import pipe_dataset


def channel(name, spec, batch_size, *, path=None, manifest=None, num_workers=1, worker_index=0, shuffle_buffer=0,
            seed=None, repeat=False, deterministic=False):
    """tf.data of (uint8 images [B, H, W, C], int32 labels [B, length]) for channel `name`; [H, W, C] = spec.input_shape.

    Where: in SageMaker (inputdataconfig.json names the channel) Pipe mode reads the `<name>_<k>` FIFOs
    and File/FastFile the shards under SM_CHANNEL_<NAME>; outside SageMaker, the split folder `path`.
    repeat=False: one pass per iteration (Pipe: one FIFO per iteration). repeat=True: one endless stream
    (files: pass after pass, reshuffled per pass; Pipe: FIFO after FIFO, each read to its end, the open
    one closed when the iterator is closed or destroyed).
    `manifest` (a tfrecord.manifest.Manifest): read exactly its shards of the split (the channel's name,
    or outside SageMaker the name of `path`'s folder when it is a split) and check record counts per
    shard, and per FIFO on a FullyReplicated Pipe channel; None reads whatever *.tfrecord `path` holds.
    Several hosts on a FullyReplicated channel each keep their 1/num_workers of it (files: by shard,
    Pipe: by record); with ShardedByS3Key SageMaker has already split the objects between hosts.
    """
    config = sagemaker.input_data_config().get(name)
    sharded = bool(config) and config.get("S3DistributionType") == "ShardedByS3Key"
    if sharded:
        num_workers, worker_index = 1, 0
    options = dict(num_workers=num_workers, worker_index=worker_index, shuffle_buffer=shuffle_buffer, seed=seed,
                   repeat=repeat, deterministic=deterministic)
    if config and config.get("TrainingInputMode") == "Pipe":
        records = manifest.split(name).examples if manifest is not None and not sharded else None
        return pipe_dataset(name, spec, batch_size, records=records, **options)
    if config or not path:
        source, split = sagemaker.channel_dir(name), name
    else:
        folder = os.path.basename(os.path.normpath(os.fspath(path)))
        source, split = path, folder if manifest is not None and folder in manifest.splits else name
    return files_dataset(source, spec, batch_size, manifest=manifest, split=split, subset=sharded, **options)

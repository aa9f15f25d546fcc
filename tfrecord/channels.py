"""channel(): the one call the trainer makes for a dataset, whatever SageMaker input mode the channel uses."""
import os

from tfrecord import sagemaker
from tfrecord.files import files_dataset
from tfrecord.manifest import Manifest
from tfrecord.pipe import pipe_dataset
from tfrecord.spec import CaptchaSpec


def channel(name: str, spec: CaptchaSpec, batch_size: int, *, path: str | os.PathLike | None = None,
            manifest: Manifest | None = None, num_workers: int = 1, worker_index: int = 0, shuffle_buffer: int = 0,
            seed: int | None = None, repeat: bool = False, deterministic: bool = False,
            lengths: bool = False) -> "tf.data.Dataset":
    """tf.data of (uint8 images [B, H, W, C], int32 labels [B, length]) for channel `name`; [H, W, C] =
    spec.input_shape. Labels shorter than `spec.length` (a variable-length spec) are padded with `spec.pad`;
    with `lengths`, each element also holds the int32 label lengths [B]: (images, labels, lengths).

    Where: in SageMaker (inputdataconfig.json names the channel) Pipe mode reads the `<name>_<k>` FIFOs
    (tfrecord/pipe.py) and File/FastFile the shards under SM_CHANNEL_<NAME> (tfrecord/files.py); outside
    SageMaker, the split folder `path`.

    Args:
      name: the channel, which is also the split's name (train, validation, test).
      spec: what the images and labels are (the model's spec, equal to the dataset's); the first records of
        each shard or FIFO are checked against it.
      batch_size: examples per batch (per replica where the caller splits a global batch).
      path: the split folder outside SageMaker; ignored where the channel is configured.
      manifest: read exactly its shards of the split (the channel's name, or outside SageMaker the name of
        `path`'s folder when it is a split) and check record counts per shard, and per FIFO on a
        FullyReplicated Pipe channel; None reads whatever *.tfrecord `path` holds.
      num_workers, worker_index: several hosts on a FullyReplicated channel each keep their 1/num_workers of
        it (files: by shard, Pipe: by record); with ShardedByS3Key SageMaker has already split the objects.
      shuffle_buffer, seed, repeat, deterministic: see batching.ReadOptions. repeat=False: one pass per
        iteration (Pipe: one FIFO per iteration); repeat=True: one endless stream (files: pass after pass,
        reshuffled per pass; Pipe: FIFO after FIFO, each read to its end, the open one closed when the
        iterator is closed or destroyed).
    Raises:
      UserError, as files_dataset and pipe_dataset do.
    """
    config = sagemaker.input_data_config().get(name)
    sharded = bool(config) and config.get("S3DistributionType") == "ShardedByS3Key"
    if sharded:
        num_workers, worker_index = 1, 0
    options = dict(num_workers=num_workers, worker_index=worker_index, shuffle_buffer=shuffle_buffer, seed=seed,
                   repeat=repeat, deterministic=deterministic, lengths=lengths)
    if config and config.get("TrainingInputMode") == "Pipe":
        records = manifest.split(name).examples if manifest is not None and not sharded else None
        return pipe_dataset(name, spec, batch_size, records=records, **options)
    if config or not path:
        source, split = sagemaker.channel_dir(name), name
    else:
        folder = os.path.basename(os.path.normpath(os.fspath(path)))
        source, split = path, folder if manifest is not None and folder in manifest.splits else name
    return files_dataset(source, spec, batch_size, manifest=manifest, split=split, subset=sharded, **options)

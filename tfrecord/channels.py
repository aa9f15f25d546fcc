"""channel(): one call for the trainer, whatever SageMaker input mode the channel uses."""
from tfrecord import sagemaker
from tfrecord.pipe import pipe_dataset
from tfrecord.readers import files_dataset


def channel(name, spec, batch_size, *, path=None, num_workers=1, worker_index=0, **kwargs):
    """Dataset of (images, labels) for channel `name`.

    In SageMaker (inputdataconfig.json names the channel): Pipe mode reads the epoch FIFOs; File and
    FastFile read the shards under SM_CHANNEL_<NAME>. Outside SageMaker: the shards at `path`.
    Several hosts on a FullyReplicated channel each keep their own 1/num_workers of it; with
    ShardedByS3Key SageMaker has already split the shards between hosts.
    """
    config = sagemaker.input_data_config().get(name)
    if config and config.get("S3DistributionType") == "ShardedByS3Key":
        num_workers, worker_index = 1, 0
    shard = {"num_workers": num_workers, "worker_index": worker_index}
    if config and config.get("TrainingInputMode") == "Pipe":
        return pipe_dataset(name, spec, batch_size, **shard, **kwargs)
    source = sagemaker.channel_dir(name) if config else path or sagemaker.channel_dir(name)
    return files_dataset(source, spec, batch_size, **shard, **kwargs)

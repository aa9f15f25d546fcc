"""The SageMaker training-container contract under a local root: config JSONs, channel folders, SM_* variables.

Every function takes the host's container root as an argument; the trainer, in its own process, finds it
through its environment (the SM_* variables and CAPTCHA_PIPELINE_OPT_ML, tfrecord/sagemaker.py).
"""
import json
import os

from launch.pipe_agent import objects_for_host
from tfrecord import localfs, sagemaker, storage


def download_channel(root, channel, objects, prefix, config, host_index=0, host_count=1):
    """File/FastFile mode: this host's share of the channel's objects under `channel_dir(channel, root)`,
    keyed relative to the prefix. A key whose relative part would leave the channel folder (`..`) is refused
    (folder markers such as `ds/train/` are not objects: storage.list leaves them out)."""
    target = sagemaker.channel_dir(channel, root)
    paths = {}  # every key checked before any is downloaded
    for uri, _ in objects_for_host(objects, config, 0, host_index, host_count):
        relative = uri[len(prefix):].lstrip("/") if uri != prefix else os.path.basename(uri)
        paths[uri] = localfs.inside(target, relative, f"channel {channel}: object {uri}")
    for uri, path in paths.items():
        with storage.open(uri) as src:
            localfs.copy_atomic(src, path)


def write_contract(root, channels, hps, host, hosts):
    """Folders and config JSONs under the container `root` for `host` of `hosts`; returns the environment
    variables for its trainer (SageMaker's SM_* and CAPTCHA_PIPELINE_OPT_ML)."""
    for path in (sagemaker.config_dir(root), sagemaker.data_dir(root), sagemaker.model_dir(root),
                 sagemaker.output_data_dir(root), sagemaker.checkpoint_dir(root)):
        os.makedirs(path, exist_ok=True)
    configs = {name: config for name, (_, config) in channels.items()}
    resources = {"current_host": host, "hosts": list(hosts), "network_interface_name": "eth0"}
    for filename, content in (("hyperparameters.json", hps), ("inputdataconfig.json", configs),
                              ("resourceconfig.json", resources)):
        localfs.write_atomic(os.path.join(sagemaker.config_dir(root), filename), json.dumps(content, indent=2))
    env = {"SM_MODEL_DIR": sagemaker.model_dir(root), "SM_OUTPUT_DATA_DIR": sagemaker.output_data_dir(root),
           "SM_OUTPUT_DIR": sagemaker.output_dir(root), "SM_INPUT_DIR": sagemaker.input_dir(root),
           "SM_INPUT_CONFIG_DIR": sagemaker.config_dir(root), "SM_CHANNELS": json.dumps(sorted(channels)),
           "SM_HPS": json.dumps(hps), "SM_HOSTS": json.dumps(list(hosts)), "SM_CURRENT_HOST": host,
           "SM_NUM_GPUS": "0", "SM_NUM_CPUS": str(os.cpu_count()), "SM_INPUT_DATA_CONFIG": json.dumps(configs),
           sagemaker.ROOT_ENV: root}
    env.update({f"SM_CHANNEL_{name.upper()}": sagemaker.channel_dir(name, root) for name in channels})
    return env

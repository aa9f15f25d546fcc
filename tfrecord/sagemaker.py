"""The SageMaker training-container contract: where things live under /opt/ml and how to read them.

The standard `SM_*` variables win where SageMaker defines one; everything else is relative to the
container root, `/opt/ml` unless CAPTCHA_PIPELINE_OPT_ML points elsewhere (as `launch local` sets it for
each trainer). The launcher, laying out a root for each host, passes that root to these functions.
"""
import json
import os
import posixpath


ROOT_ENV = "CAPTCHA_PIPELINE_OPT_ML"
OPT_ML = "/opt/ml"
CHECKPOINTS = "checkpoints"
CHECKPOINT_DIR = posixpath.join(OPT_ML, CHECKPOINTS)  # in the container; SageMaker syncs it (CheckpointConfig)
INPUT_MODES = ("File", "FastFile", "Pipe")
WORKERS_ENV = "CAPTCHA_PIPELINE_WORKERS"  # launch local -> its trainers: {host: "address:port"} (trainer.distribute)


def host_name(index):
    """SageMaker's name for instance `index` (0-based) of a job: algo-1, algo-2, ...; algo-1 is the chief."""
    return f"algo-{index + 1}"


def container_root():
    """The container root of this process: CAPTCHA_PIPELINE_OPT_ML, else /opt/ml."""
    return os.environ.get(ROOT_ENV, OPT_ML)


# Each path below is SageMaker's variable where it defines one, else under container_root(); with an
# explicit `root` (a container root that `launch local` lays out for one host), the path under that root,
# whatever this process's environment says.

def _variable(name, root):
    return None if root else os.environ.get(name)


def input_dir(root=None):
    return _variable("SM_INPUT_DIR", root) or os.path.join(root or container_root(), "input")


def config_dir(root=None):
    return _variable("SM_INPUT_CONFIG_DIR", root) or os.path.join(input_dir(root), "config")


def data_dir(root=None):
    return os.path.join(input_dir(root), "data")


def model_dir(root=None):
    return _variable("SM_MODEL_DIR", root) or os.path.join(root or container_root(), "model")


def output_dir(root=None):
    return _variable("SM_OUTPUT_DIR", root) or os.path.join(root or container_root(), "output")


def output_data_dir(root=None):
    return _variable("SM_OUTPUT_DATA_DIR", root) or os.path.join(output_dir(root), "data")


def checkpoint_dir(root=None):
    return os.path.join(root or container_root(), CHECKPOINTS)


def failure_path(root=None):
    return os.path.join(output_dir(root), "failure")


def channel_dir(name, root=None):
    """File/FastFile mode: the directory holding the channel's objects."""
    return _variable(f"SM_CHANNEL_{name.upper()}", root) or os.path.join(data_dir(root), name)


def fifo_path(name, epoch, directory=None):
    """Pipe mode: the FIFO SageMaker opens for `name` in `epoch` (0-based), in `directory` (default data_dir())."""
    return os.path.join(directory or data_dir(), f"{name}_{epoch}")


def fifo_poll_interval(waited):
    """Seconds between checks while one end of a Pipe FIFO waits `waited` s for the other (the FIFO to
    appear, its reader to open it): 1 ms at first, as a stream takes the next FIFO within milliseconds
    of ending the last; 20 ms after a second, when the reader is busy elsewhere (e.g. validating)."""
    return 0.001 if waited < 1 else 0.02


def _config(filename, env=None):
    if env and env in os.environ:
        return json.loads(os.environ[env])
    path = os.path.join(config_dir(), filename)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def input_data_config():
    """{channel: {"TrainingInputMode": ..., "S3DistributionType": ..., ...}}; {} outside SageMaker."""
    return _config("inputdataconfig.json", "SM_INPUT_DATA_CONFIG") or {}


def hosts():
    """(current_host, all hosts sorted); a single local host outside SageMaker."""
    if "SM_HOSTS" in os.environ:
        return os.environ.get("SM_CURRENT_HOST", host_name(0)), sorted(json.loads(os.environ["SM_HOSTS"]))
    config = _config("resourceconfig.json") or {"current_host": host_name(0), "hosts": [host_name(0)]}
    return config["current_host"], sorted(config["hosts"])


def in_sagemaker():
    return bool(input_data_config()) or "SM_MODEL_DIR" in os.environ

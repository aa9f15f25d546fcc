"""launch local lays out each host's container root through explicit paths, never through this process's
environment: SM_* variables of the launcher's own shell neither move the paths nor change."""
import json
import os

from launch.container import write_contract
from tfrecord import sagemaker


def test_the_contract_is_written_under_the_root_given_whatever_the_environment_says(tmp_path, monkeypatch):
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "elsewhere/model"))
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(tmp_path / "elsewhere/train"))
    monkeypatch.setenv(sagemaker.ROOT_ENV, str(tmp_path / "elsewhere"))
    before = dict(os.environ)
    root = str(tmp_path / "algo-2")
    channels = {"train": ("s3://b/ds/train/", {"TrainingInputMode": "File"})}
    env = write_contract(root, channels, {"epochs": "1"}, "algo-2", ["algo-1", "algo-2"])
    assert dict(os.environ) == before
    assert not (tmp_path / "elsewhere").exists()
    assert env[sagemaker.ROOT_ENV] == root
    assert env["SM_MODEL_DIR"] == os.path.join(root, "model")
    assert env["SM_CHANNEL_TRAIN"] == os.path.join(root, "input", "data", "train")
    for folder in ("input/config", "input/data", "model", "output/data", "checkpoints"):
        assert (tmp_path / "algo-2" / folder).is_dir(), folder
    resources = json.loads((tmp_path / "algo-2/input/config/resourceconfig.json").read_text())
    assert resources["current_host"] == "algo-2" and resources["hosts"] == ["algo-1", "algo-2"]
    # the trainer's side reads the same paths from the environment it is given
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert sagemaker.model_dir() == os.path.join(root, "model") and sagemaker.checkpoint_dir() == os.path.join(
        root, "checkpoints")
    assert sagemaker.channel_dir("train") == sagemaker.channel_dir("train", root)

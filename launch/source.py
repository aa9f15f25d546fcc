"""The training job's source folder, the same for `launch train` (uploaded by ModelTrainer) and `launch local`.

It holds `trainer/` and `tfrecord/` (the training side needs TensorFlow only), the entry script the
container runs as `python sagemaker_entry.py --name value ...`, and a requirements.txt with the
packages the TensorFlow image may lack (pinned to the versions installed here).
"""
import importlib.metadata
import os
import shutil

PACKAGES = ("trainer", "tfrecord")
ENTRY_POINT = "sagemaker_entry.py"
REQUIREMENTS = "requirements.txt"
CONTAINER_PACKAGES = ("google-crc32c", "pydantic", "matplotlib")  # beyond TensorFlow: CRCs, dataset.json's schema, the learning curve
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(folder):
    """Fill `folder` with the packages' .py files, the entry script and requirements.txt; returns `folder`."""
    for package in PACKAGES:
        os.makedirs(os.path.join(folder, package), exist_ok=True)
        for name in sorted(os.listdir(os.path.join(ROOT, package))):
            if name.endswith(".py"):
                shutil.copyfile(os.path.join(ROOT, package, name), os.path.join(folder, package, name))
    shutil.copyfile(os.path.join(ROOT, "launch", ENTRY_POINT), os.path.join(folder, ENTRY_POINT))
    with open(os.path.join(folder, REQUIREMENTS), "w") as f:
        f.writelines(f"{name}=={importlib.metadata.version(name)}\n" for name in CONTAINER_PACKAGES)
    return folder

"""Dependency boundaries: the commands whose extras bring no TensorFlow run without it."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WITHOUT_TENSORFLOW = """
import sys
sys.modules["tensorflow"] = sys.modules["keras"] = None  # any import of them now fails
sys.modules["apache_beam"] = None  # nor is inspect a Beam job
from launch import inspect_dataset
del sys.modules["apache_beam"]
from beam_jobs import generate
import launch.local, launch.sagemaker_job
out = sys.argv[1]
generate.run(["--output", out, "--chars", "ab", "--length", "2", "--width", "40", "--height", "24",
              "--train-examples", "6", "--validation-examples", "2", "--test-examples", "2", "--num-shards", "1"])
sys.exit(inspect_dataset.main([out, "--contact-sheet", out + "-sheet.png"]))
"""


def test_producer_inspect_and_launch_need_no_tensorflow(tmp_path):
    """generate and inspect run, launch train and launch local import, with TensorFlow and Keras blocked
    (and Beam too while inspect is imported)."""
    proc = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, str(tmp_path / "data")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ok: 10 examples match dataset.json" in proc.stdout
    assert (tmp_path / "data-sheet.png").exists()

TRAINING_SIDE_ONLY = """
import importlib, pkgutil, sys
# what the SageMaker TensorFlow container lacks, and the packages that do not ship into it
for name in ("apache_beam", "boto3", "botocore", "PIL", "flask", "waitress", "sagemaker", "moto", "launch", "beam_jobs"):
    sys.modules[name] = None
import tfrecord, trainer
for package in (tfrecord, trainer):
    for module in pkgutil.iter_modules(package.__path__):
        if f"{package.__name__}.{module.name}" != "trainer.serve":  # the serve extra: flask and waitress
            importlib.import_module(f"{package.__name__}.{module.name}")
            print(f"{package.__name__}.{module.name}")
"""


def test_the_training_side_imports_with_tensorflow_only(tmp_path):
    """Every module of tfrecord/ and trainer/ (what ships into the training container) imports with Beam,
    boto3, Pillow, the SageMaker SDK, launch/ and beam_jobs/ blocked: they are imported only where a
    function needs them."""
    proc = subprocess.run([sys.executable, "-c", TRAINING_SIDE_ONLY], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = set(proc.stdout.split())
    assert {"tfrecord.storage", "tfrecord.pipe", "trainer.train", "trainer.evaluate", "trainer.predict"} <= imported

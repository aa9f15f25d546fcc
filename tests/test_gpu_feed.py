"""bench/gpu_feed.py, tiny, on the TensorFlow backend: the pure-Python reader feeds the trainer's model and
the table reports every figure for each batch size and precision."""
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAW = ("-d", "--length", "4", "--image-format", "raw", "--store-size", "60x50", "--train-examples", "300",
       "--validation-examples", "0", "--test-examples", "0", "--num-shards", "2")


def test_the_reader_alone_reads_exact_batches(make_dataset):
    sys.path.insert(0, os.path.join(REPO, "bench"))
    import gpu_feed
    from tfrecord.manifest import read_manifest

    root = make_dataset(*RAW)
    spec = read_manifest(str(root)).spec
    batches = gpu_feed.read_batches(str(root), spec, 128)
    shapes = [tuple(next(batches)[0].shape) for _ in range(3)]  # 384 images: the second pass has begun
    assert shapes == [(128, 50, 60, 1)] * 3
    images, labels = next(batches)
    assert images.dtype.name == "uint8" and labels.shape == (128, 4) and labels.dtype.name == "int32"


def test_gpu_feed_runs_tiny_on_the_tensorflow_backend(make_dataset):
    root = make_dataset(*RAW)
    run = subprocess.run([sys.executable, "bench/gpu_feed.py", "--data", str(root), "--batch-sizes", "32", "64",
                          "--precision", "float32", "mixed_float16", "--steps", "2"], cwd=REPO, capture_output=True,
                         text=True, timeout=600, env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "backend tensorflow" in run.stdout
    rows = re.findall(r"^\|\s+(\d+) \| (\w+)\s+\|(.*)\|$", run.stdout, re.MULTILINE)
    assert [(int(b), p) for b, p, _ in rows] == [(32, "float32"), (32, "mixed_float16"), (64, "float32"),
                                                 (64, "mixed_float16")], run.stdout
    for _, _, figures in rows:
        values = [float(v.replace(",", "")) for v in figures.split("|")]
        assert len(values) == 5 and all(v > 0 for v in values), figures

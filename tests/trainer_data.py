"""A tiny captcha dataset written straight from the renderer (no Beam), for the trainer's tests."""
import hashlib
import os

from beam_jobs.render import Renderer, example_seed
from tfrecord.framing import frame
from tfrecord.manifest import MANIFEST_NAME, Manifest, ShardInfo, SplitInfo, shard_path
from tfrecord.schema import encode_example
from tfrecord.spec import CaptchaSpec


def write_dataset(root, spec=None,
                  counts=(("train", 256), ("validation", 64), ("test", 64)), seed=0, shards=2):
    """Labels cycle through every string of the alphabet; returns the dataset root."""
    spec = spec or TINY_SPEC
    renderer = Renderer(spec)
    splits = {}
    for split, n in counts:
        os.makedirs(os.path.join(root, split), exist_ok=True)
        infos = []
        for s in range(shards):
            records = []
            for i in range(s, n, shards):
                text = "".join(spec.alphabet[(i // spec.num_classes ** k) % spec.num_classes] for k in range(spec.length))
                records.append(frame(encode_example(renderer.render(text, example_seed(seed, split, i)), text, spec)))
            data = b"".join(records)
            rel = shard_path(split, s, shards)
            with open(os.path.join(root, rel), "wb") as f:
                f.write(data)
            infos.append(ShardInfo(rel, len(records), len(data), hashlib.sha256(data).hexdigest()))
        splits[split] = SplitInfo(n, infos)
    with open(os.path.join(root, MANIFEST_NAME), "w") as f:
        f.write(Manifest(spec, seed, "uniform", splits).to_json())
    return root


TINY_SPEC = CaptchaSpec(alphabet="01", length=2, width=40, height=24)


def train_args(root, out, *extra):
    """Flags for `trainer.train.main` on a dataset at `root`, writing under `out`."""
    return ["--train", f"{root}/train", "--validation", f"{root}/validation", "--model-dir", f"{out}/model",
            "--checkpoint-dir", f"{out}/checkpoints", "--output-data-dir", f"{out}/output",
            "--scale", "1", "--batch-size", "32", "--learning-rate", "0.01", "--patience", "20", *extra]

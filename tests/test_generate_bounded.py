"""generate's memory is bounded by the work in flight, not the dataset: no rendered byte goes through
Beam's shuffle (the GroupByKey that gathers a shard's chunks) or waits there for the Render stage to end."""
import hashlib
import os
import pickle

import pytest

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected as a test class
from apache_beam.testing.util import assert_that, equal_to

from beam_jobs.generate import JoinedParts, RenderShards, parse_args
from beam_jobs.plan import CHUNK, build_plan
from beam_jobs.render import Renderer
from tfrecord import storage

# 2 train shards of 150 examples (two chunks each) and 2 test shards of 10
ARGV = ["--output", "unused", "--chars", "abc", "--length", "2", "--width", "40", "--height", "24",
        "--num-shards", "2", "--train-examples", "300", "--validation-examples", "0", "--test-examples", "20",
        "--holdout-labels"]
METADATA_BYTES = 512  # a chunk's or a shard's entry: keys, a part's name, counts; one image is more


def test_no_image_bytes_pass_through_the_shuffle(tmp_path):
    """Each element Render emits and GroupByShard holds is a few hundred bytes, whatever the chunk holds:
    ((split, shard), (first, part name, count)) with the records in the part, not in the element."""
    args, options = parse_args(ARGV)
    plan = build_plan(args)
    one_record = len(plan.record(Renderer(plan.spec), "train", 0))
    assert one_record > METADATA_BYTES and plan.shard_examples("train", 0) > CHUNK  # so the bound means something
    pipeline = BeamTestPipeline()
    shards = pipeline | RenderShards(plan, str(tmp_path), options)
    rendered = shards.producer.inputs[0].producer.inputs[0]  # Join <- GroupByShard <- Render
    grouped = shards.producer.inputs[0]
    assert rendered.producer.full_label.endswith("/Render") and grouped.producer.full_label.endswith("/GroupByShard")
    too_big = lambda label: lambda e: (label, len(pickle.dumps(e))) if len(pickle.dumps(e)) > METADATA_BYTES else None  # noqa: E731
    for label, pcoll in (("Render", rendered), ("GroupByShard", grouped)):
        assert_that(pcoll | f"Size{label}" >> beam.Map(too_big(label)) | f"Big{label}" >> beam.Filter(bool),
                    equal_to([]), label=f"Small{label}")
    assert_that(rendered | beam.Map(lambda e: type(e[1][1]).__name__), equal_to(["str"] * 6), label="PartNames")
    pipeline.run().wait_until_finish()


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_shard_is_streamed_whole_from_its_parts(where, tmp_path, request):
    """The parts, read a block at a time, make the shard byte for byte, with its size and sha256; on S3 past
    the multipart threshold (8 MiB), where every part of the upload but the last must be full."""
    root = str(tmp_path)
    if where == "s3":
        s3 = request.getfixturevalue("s3")
        storage.configure({"endpoint_url": s3.url})
        root = f"s3://{s3.bucket}/out"
    pieces = [os.urandom(5 << 20), b"x", os.urandom(4 << 20), b""]
    parts = [storage.join(root, f"train/.part{i}.{i:032x}.tmp") for i in range(len(pieces))]
    for uri, piece in zip(parts, pieces):
        storage.write_atomic(uri, piece)
    joined = JoinedParts(parts)
    shard = storage.join(root, "train/train-00000-of-00001.tfrecord")
    storage.write_stream(shard, joined)
    whole = b"".join(pieces)
    assert storage.read(shard) == whole
    assert (joined.size, joined.sha256.hexdigest()) == (len(whole), hashlib.sha256(whole).hexdigest())

"""The Beam job's transforms in memory, with TestPipeline and assert_that (as Beam's user_score_test does)."""
import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected as a test class
from apache_beam.testing.util import assert_that, equal_to

from beam_jobs.generate import RenderShards, WriteShard, join_chunks, parse_args
from beam_jobs.plan import CHUNK, build_plan
from beam_jobs.render import Renderer
from tfrecord.manifest import shard_path

# 300 train examples in 2 shards of 150: two chunks each (CHUNK = 128); test in 2 shards of 10
ARGV = ["--output", "unused", "--chars", "abc", "--length", "2", "--width", "40", "--height", "24",
        "--num-shards", "2", "--train-examples", "300", "--validation-examples", "0", "--test-examples", "20",
        "--holdout-labels"]


def expected_shards(plan):
    """Each shard as the plan says it must be: examples shard, shard + n, ... of its split, in order."""
    renderer = Renderer(plan.spec)
    return [(split, shard, b"".join(plan.record(renderer, split, i) for i in indices), len(indices))
            for split, shard in plan.shard_keys()
            for indices in [range(shard, plan.examples[split], plan.shards[split])]]


def test_render_shards_renders_each_shard_in_order(tmp_path):
    plan = build_plan(parse_args(ARGV)[0])
    assert plan.shard_examples("train", 0) > CHUNK
    options = parse_args(ARGV)[1]
    pipeline = BeamTestPipeline()
    shards = pipeline | RenderShards(plan, str(tmp_path), options)
    infos = shards | beam.ParDo(WriteShard(plan, str(tmp_path), options))
    assert_that(shards | beam.MapTuple(lambda split, shard, parts, records: (split, shard)), equal_to(list(plan.shard_keys())),
                label="OneElementPerShard")
    assert_that(infos | beam.MapTuple(lambda split, info: (split, info.path, info.records)),
                equal_to([(split, shard_path(split, shard, plan.shards[split]), records)
                          for split, shard, _, records in expected_shards(plan)]), label="ShardInfos")
    result = pipeline.run()
    result.wait_until_finish()
    for split, shard, data, _ in expected_shards(plan):
        assert (tmp_path / shard_path(split, shard, plan.shards[split])).read_bytes() == data
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        shard_path(s, n, plan.shards[s]).rsplit("/", 1)[1] for s, n in plan.shard_keys())  # the parts are gone
    counters = {c.key.metric.name: c.committed for c in result.metrics().query(MetricsFilter().with_namespace("captcha"))["counters"]}
    assert counters == {"train_examples": 300, "test_examples": 20}


def test_join_chunks_puts_a_shards_chunks_in_order():
    chunks = [(256, "c", 5), (0, "a", 128), (128, "b", 128)]
    assert join_chunks(("train", 3), chunks) == ("train", 3, ["a", "b", "c"], 261)

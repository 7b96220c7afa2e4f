"""Tests of :mod:`beam.transforms` through ``TestPipeline`` + ``assert_that``."""

from __future__ import annotations

import dataclasses
import json

import apache_beam
import tensorflow as tf
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to, is_not_empty

from beam import transforms
from beam.publish import success_counts
from beam.runner import PrismFreeDirectRunner
from maivar_tf.data import schema
from maivar_tf.data.annotations import VideoRecord
from maivar_tf.data.errors import MediaError
from tests.beam.jobdata import CLIPS, CLIPS_DIR, K, small_cfg, video_record


def _elem(path: str, label_index: int, label: str, split: str = "train") -> dict:
    return transforms.record_to_element(video_record(path, label_index, label, split))


def test_process_video_dofn_routes_good_and_bad_records(tmp_path):
    good = CLIPS[0].name
    elements = [
        _elem(good, 0, "a"),
        _elem(str(tmp_path / "nothing_here.mp4"), 0, "a"),
        _elem(CLIPS[1].name, -1, "not_a_class", split="test"),
    ]
    cfg = small_cfg()

    def check_examples(pairs):
        assert len(pairs) == 1
        example_id, serialized = pairs[0]
        assert example_id == good
        ex = schema.parse_sequence_example(serialized, cfg.representations)
        assert ex[schema.EXAMPLE_ID].numpy().decode() == good
        assert ex[schema.IMAGE_ENCODED].shape == (K,)
        png = tf.io.decode_png(ex[schema.audio_image_key("chromagram")][0]).numpy()
        assert png.shape == (64, 64, 3) and png.std() > 0

    def check_failures(letters):
        by_reason = {d["reason"]: d for d in letters}
        assert set(by_reason) == {"missing", "unknown_label"}
        assert by_reason["missing"]["input"] == str(tmp_path / "nothing_here.mp4")
        assert by_reason["unknown_label"]["label"] == "not_a_class"
        assert by_reason["unknown_label"]["split"] == "test"
        assert by_reason["unknown_label"]["input"] == str(CLIPS_DIR / CLIPS[1].name)
        for d in letters:
            assert set(d) >= {"input", "split", "label", "reason", "message"}
            assert d["message"]

    p = BeamTestPipeline(runner=PrismFreeDirectRunner())
    results = (p | apache_beam.Create(elements)
               | apache_beam.ParDo(transforms.ProcessVideoDoFn(cfg)).with_outputs(
                   transforms.FAILED_TAG, "train", "test"))
    assert_that(results["train"], check_examples, label="train examples")
    assert_that(results["test"], equal_to([]), label="no test examples")
    assert_that(results[transforms.FAILED_TAG], check_failures, label="dead letters")
    assert_that(results[transforms.FAILED_TAG] | apache_beam.Map(transforms.dead_letter_to_json),
                is_not_empty(), label="dead letters serialise")
    result = p.run()
    result.wait_until_finish()
    assert success_counts(result) == {("train", 0): 1}
    counters = {c.key.metric.name: c.committed for c in result.metrics().query(
        MetricsFilter().with_namespace(transforms.METRICS_NAMESPACE))["counters"]}
    assert counters == {"videos_ok": 1, "failed_missing": 1, "failed_unknown_label": 1}


def test_dofn_sends_unexpected_exceptions_to_dead_letters(monkeypatch):
    def boom(record, cfg, mode="center"):
        raise ZeroDivisionError("kaboom")

    monkeypatch.setattr(transforms, "clip_example_from_record", boom)
    with BeamTestPipeline(runner=PrismFreeDirectRunner()) as p:
        results = (p | apache_beam.Create([_elem(CLIPS[0].name, 0, "a")])
                   | apache_beam.ParDo(transforms.ProcessVideoDoFn(small_cfg())).with_outputs(
                       transforms.FAILED_TAG, "train"))
        assert_that(results[transforms.FAILED_TAG] | apache_beam.Map(
            lambda d: (d["reason"], "ZeroDivisionError: kaboom" in d["message"])),
            equal_to([("decode_error", True)]))


def test_dead_letters_keep_media_reasons_and_name_other_errors():
    cfg = small_cfg()
    rec = video_record("clip.mp4", 2, "dog", split="test")
    media = transforms.dead_letter(rec, cfg, MediaError("no_audio", "clip.mp4: no audio"))
    assert media == {"input": str(CLIPS_DIR / "clip.mp4"), "split": "test", "label": "dog",
                     "reason": "no_audio", "message": "clip.mp4: no audio",
                     "example_id": rec.example_id}
    other = transforms.dead_letter(rec, cfg, KeyError("x"))
    assert other["reason"] == "decode_error"
    assert other["message"] == "clip.mp4: KeyError: 'x'"
    line = transforms.dead_letter_to_json(other)
    assert json.loads(line) == other and list(json.loads(line)) == sorted(other)


def test_record_elements_round_trip():
    rec = VideoRecord(path="a/b.mp4", label_index=3, label_string="b", split="test",
                      start_s=1.5, end_s=4.0, example_id="a/b.mp4#t=1.5,4")
    assert VideoRecord(**transforms.record_to_element(rec)) == rec
    assert dataclasses.asdict(rec) == transforms.record_to_element(rec)


def test_shard_of_is_a_stable_hash_of_the_id():
    ids = [f"class/video_{i:03d}.mp4" for i in range(200)]
    got = [transforms.shard_of(e, 4) for e in ids]
    # sha256-based, so the same in every process (Python's hash() is salted per process)
    assert got[:6] == [3, 1, 2, 2, 3, 2]
    assert set(got) == {0, 1, 2, 3} and min(got.count(i) for i in range(4)) > 30
    assert transforms.shard_count(2, 10_000) == 2
    assert transforms.shard_count(0, 1) == 1 and transforms.shard_count(0, 513) == 3


def test_shards_are_sorted_by_id_and_every_shard_is_written(tmp_path):
    """Input order never shows in a shard: 5 records in two orders give identical files."""
    pairs = [(f"v{i}.mp4", f"example {i}".encode()) for i in range(5)]
    outs = []
    for n, order in enumerate((pairs, pairs[::-1])):
        out = tmp_path / str(n)
        out.mkdir()
        p = BeamTestPipeline(runner=PrismFreeDirectRunner())
        _ = p | apache_beam.Create(order, reshuffle=False) | "w" >> transforms.WriteShards(
            str(out / "train"), 3)
        p.run().wait_until_finish()
        outs.append({f.name: f.read_bytes() for f in sorted(out.iterdir())})
    assert outs[0] == outs[1]
    assert sorted(outs[0]) == [f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
    for name in outs[0]:
        records = [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / "0" / name))]
        ids = [f"v{r.decode().split()[1]}.mp4" for r in records]
        assert ids == sorted(ids)
        assert all(transforms.shard_of(e, 3) == int(name[6:11]) for e in ids)
    assert sum(len(list(tf.data.TFRecordDataset(str(tmp_path / "0" / n)))) for n in outs[0]) == 5

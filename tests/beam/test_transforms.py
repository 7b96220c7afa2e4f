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

    def check_examples(serialized):
        assert len(serialized) == 1
        ex = schema.parse_sequence_example(serialized[0], cfg.representations)
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

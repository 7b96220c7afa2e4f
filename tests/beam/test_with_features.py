"""``--with_features``: the Beam job's RunInference stage writes what ``maivar extract`` writes.

One run on the real clips plus every bad input, with tiny backbones from the config
(``bn_inception_tiny`` at crop 112, ``resnet18`` at 64x64 audio-images, random weights, per-segment
audio-images on). Two clips are made to fail inside the stage: one whose inference raises
(``inference_failed``) and one whose features are NaN (``non_finite_features``), through the
handler's :meth:`~beam.features.BackboneModelHandler.infer`. ``maivar extract`` then runs on the
job's TFRecords with the same config and the same saved weights, and both feature folders are
compared shard by shard.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from beam import build_tfrecords
from beam.features import BackboneModelHandler, InferenceFailure
from maivar_tf.artifacts import DatasetInfo, FeatureInfo
from maivar_tf.features import (
    extract_features,
    read_audio_segment_shards,
    read_audio_shards,
    read_video_shards,
)
from tests.beam.jobdata import BAD_REASONS, REPS, K, base_argv, dead_letters, parse_dir

TINY = ["--set", "model.video_backbone=bn_inception_tiny", "--set", "data.crop_size=112",
        "--set", "data.frame_short_side=128", "--set", "model.audio_backbone=resnet18",
        "--set", "data.audio.image_size=64", "--set", "data.segment_audio=true",
        "--set", "extract.batch_size=3"]


@pytest.fixture(scope="module")
def featured(job_inputs, tmp_path_factory):
    """``(rc, out, features, extracted, good, raised, nan)``: the job with features, and
    ``maivar extract`` on its TFRecords into another folder with the same weights."""
    root, csv_path, good = job_inputs
    base = tmp_path_factory.mktemp("with_features")
    out, features, extracted = base / "tfrecords", base / "features", base / "extracted"
    raised, nan = sorted(good)[0], sorted(good)[1]
    original = BackboneModelHandler.infer

    def infer(self, model, keys, arrays):
        if raised in keys:
            raise RuntimeError("test: this clip's inference raises")
        feats = original(self, model, keys, arrays)
        return [np.full_like(f, np.nan) if k == nan else f for k, f in zip(keys, feats, strict=True)]

    argv = base_argv(csv_path, out, "--with_features", f"--features_dir={features}", *TINY)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BackboneModelHandler, "infer", infer)
        rc = build_tfrecords.main(argv)
    args, _ = build_tfrecords.build_parser().parse_known_args(argv)
    exp = build_tfrecords.load_job_config(args)
    shutil.copytree(features / "backbones", extracted / "backbones")
    extract_features(exp, progress=False, data_dir=out, features_dir=extracted)
    return rc, out, features, extracted, good, raised, nan


def test_inference_failures_are_dead_letters_and_leave_the_tfrecords(featured):
    rc, out, _, _, good, raised, nan = featured
    assert rc == 0
    letters = {d["example_id"]: d for d in dead_letters(out)}
    assert letters[raised]["reason"] == "inference_failed"
    assert "test: this clip's inference raises" in letters[raised]["message"]
    assert letters[nan]["reason"] == "non_finite_features"
    assert "video-" in letters[nan]["message"]
    assert sorted(d["reason"] for d in letters.values()) == sorted(
        [*BAD_REASONS.values(), "inference_failed", "non_finite_features"])
    kept = set(good) - {raised, nan}
    assert set(parse_dir(out)) == kept
    info = DatasetInfo.read(out)
    assert sum(c["total"] for c in info.counts.values()) == len(kept)
    assert info.failed["by_reason"]["inference_failed"] == 1
    assert info.failed["by_reason"]["non_finite_features"] == 1


def _shard_names(folder):
    return sorted(p.name for p in folder.glob("*.tfrecord"))


def test_features_match_maivar_extract_shard_by_shard(featured):
    _, _, features, extracted, good, raised, nan = featured
    names = _shard_names(features)
    assert names == _shard_names(extracted)
    info = FeatureInfo.read(features)
    # 2 splits x 2 TFRecord shards x (video + 2 reps x (clip + per segment))
    assert len(names) == 2 * 2 * (1 + 2 * len(REPS))
    rows = 0
    for name in names:
        a, b = features / name, extracted / name
        if name.startswith("video-"):
            got, want = (read_video_shards([p], K, info.video_dim) for p in (a, b))
            for key in ("segment_labels", "has_spans", "audio_missing"):
                np.testing.assert_array_equal(got[key], want[key])
            np.testing.assert_allclose(got["segment_times"], want["segment_times"])
            key = "video"
            rows += len(got["ids"])
        elif "_SEGMENTS-" in name:
            got, want = (read_audio_segment_shards([p], K, info.audio_dim) for p in (a, b))
            key = "audio_segments"
        else:
            got, want = (read_audio_shards([p], info.audio_dim) for p in (a, b))
            key = "audio"
        assert list(got["ids"]) == list(want["ids"]) == sorted(got["ids"]), name
        np.testing.assert_array_equal(got["labels"], want["labels"])
        assert not len(got[key]) or np.abs(got[key]).max() > 0, name  # not zeros
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-4, err_msg=name)
    assert rows == len(good) - 2


def test_feature_info_is_the_one_maivar_extract_writes(featured):
    _, _, features, extracted, *_ = featured
    got, want = FeatureInfo.read(features), FeatureInfo.read(extracted)
    assert got.fingerprint == want.fingerprint
    assert got.splits == want.splits
    assert (got.video_backbone, got.audio_backbone) == (want.video_backbone, want.audio_backbone)
    assert got.video_backbone.architecture == "bn_inception_tiny"
    assert got.audio_names == want.audio_names == ("resnet18",)
    g, w = got.audio("resnet18"), want.audio("resnet18")
    assert (g.fingerprint, g.representations, g.segment_representations) == (
        w.fingerprint, w.representations, w.segment_representations)
    for rep in REPS:
        np.testing.assert_allclose(g.silent[rep], w.silent[rep], rtol=1e-4, atol=1e-5)
    assert (got.video_dim, got.audio_dim, got.keys) == (want.video_dim, want.audio_dim,
                                                        want.keys)
    assert json.loads(json.dumps(got.config))["model"]["audio_backbone"] == "resnet18"
    assert not list(features.parent.glob(".features.staging*"))  # staging removed


class _SumModel:
    """A stand-in backbone: each 1x1 image's feature is its channel sum."""

    image_shape = (1, 1, 3)

    def __call__(self, images, max_images=None):
        import tensorflow as tf

        return tf.constant(np.asarray(images, np.float32).reshape(len(images), 3).sum(1)[:, None])


def test_a_failing_video_costs_only_itself_in_its_batch(monkeypatch):
    original = BackboneModelHandler.infer

    def infer(self, model, keys, arrays):
        if "bad" in keys:
            raise ValueError("poisoned")
        return original(self, model, keys, arrays)

    monkeypatch.setattr(BackboneModelHandler, "infer", infer)
    handler = BackboneModelHandler(source=None, max_batch_size=4)
    batch = [("a", np.ones((2, 1, 1, 3))), ("bad", np.ones((2, 1, 1, 3))),
             ("c", np.full((3, 2, 1, 1, 3), 2.0))]
    out = dict(handler.run_inference(batch, _SumModel()))
    np.testing.assert_array_equal(out["a"], [[3.0], [3.0]])
    np.testing.assert_array_equal(out["c"], np.full((3, 2, 1), 6.0))
    assert out["bad"] == InferenceFailure("ValueError: poisoned")
    assert handler.batch_elements_kwargs() == {"min_batch_size": 1, "max_batch_size": 4}

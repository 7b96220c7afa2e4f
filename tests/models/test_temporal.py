"""Temporal binding fusion, modality dropout and the localiser (issue 11): the models, the
Algorithm 1 stages that train them, and the metrics that evaluate them.

The feature sets are small stand-ins carrying the FeatureSet fields these modules read
(``audio_segments``, ``segment_labels``, ``silent_audio``...), so the tests do not depend on
the feature extraction.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pytest

from maivar_tf import distribute, evaluation, runs, training
from maivar_tf.artifacts import RunInfo
from maivar_tf.config import ExperimentConfig, ModelConfig, StageConfig, TrainConfig
from maivar_tf.config.data import DataConfig
from maivar_tf.localisation import localisation_labels, localisation_metrics, silent_features
from maivar_tf.models import fusion, heads, temporal
from maivar_tf.models.modality import ModalityDropout
from tests.shared_helpers import StopAt

K, DV, DA, C = 4, 8, 6, 3
SILENT = np.linspace(-1.0, 1.0, DA).astype(np.float32)


@dataclass(frozen=True)
class Features:
    """The FeatureSet fields of issue 11's interface."""

    ids: np.ndarray
    video: np.ndarray
    audio: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    representation: str = "chromagram"
    audio_backbone: str = "inception_resnet_v2"
    audio_segments: Any = None
    segment_labels: Any = None
    segment_times: Any = None
    audio_missing: Any = None
    silent_audio: Any = None

    def subset(self, index):
        index = np.asarray(index)
        rows = {f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), np.ndarray) and f.name != "silent_audio"}
        return dataclasses.replace(self, **rows)


def toy(n_per_class: int = 6, seed: int = 0) -> Features:
    """Class c: the video carries pattern c on its event segments, the audio segments too."""
    rng = np.random.default_rng(seed)
    patterns = np.random.default_rng(99).choice([-1.0, 1.0], (C, DV + DA)).astype(np.float32)
    labels = np.repeat(np.arange(C), n_per_class).astype(np.int64)
    n = len(labels)
    start = rng.integers(0, 2, n)
    event = (np.arange(K)[None] >= start[:, None]) & (np.arange(K)[None] < start[:, None] + 2)
    video = rng.normal(0, 0.5, (n, K, DV)).astype(np.float32)
    seg = rng.normal(0, 0.5, (n, K, DA)).astype(np.float32)
    video += event[..., None] * patterns[labels][:, None, :DV]
    seg += event[..., None] * patterns[labels][:, None, DV:]
    return Features(
        ids=np.array([f"c{seed}-{i:03d}" for i in range(n)]), video=video,
        audio=seg.mean(axis=1), labels=labels, class_names=("a", "b", "c"),
        audio_segments=seg, segment_labels=np.where(event, labels[:, None], -1),
        segment_times=np.tile(np.arange(K, dtype=np.float32), (n, 1)),
        audio_missing=np.zeros(n, bool), silent_audio=SILENT)


def _model_cfg(**kw) -> ModelConfig:
    base = dict(hidden_units=8, dropout=0.1, l1=1e-6, video_pooling="mean",
                audio_rows_init="zeros", fusion="temporal_binding")
    return ModelConfig(**{**base, **kw})


def _vmlp(cfg: ModelConfig, seed: int = 0) -> keras.Model:
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    return heads.build_video_mlp(C, K, cfg, rng.normal(size=DV), rng.uniform(0.5, 2, DV),
                                 feature_dim=DV)


def _tb(vmlp, cfg, **kw):
    rng = np.random.default_rng(1)
    return fusion.build_fusion("temporal_binding", vmlp, None, cfg, rng.normal(size=DA),
                               rng.uniform(0.5, 2, DA), audio_dim=DA, **kw)


def _call(model, video, seg):
    return np.asarray(model({"video_features": video, "audio_segment_features": seg},
                            training=False))


# ----------------------------------------------------------------------------- models


def test_temporal_binding_starts_as_the_vmlp_per_segment_with_logit_consensus():
    cfg = _model_cfg(binding_window=3)
    vmlp, rng = _vmlp(cfg), np.random.default_rng(2)
    model = _tb(vmlp, cfg)
    video = rng.normal(size=(5, K, DV)).astype(np.float32)
    seg, other = (rng.normal(size=(5, K, DA)).astype(np.float32) for _ in range(2))
    out = _call(model, video, seg)
    assert out.shape == (5, C) and out.dtype == np.float32
    # zero audio rows: the audio does not matter at step 0
    np.testing.assert_array_equal(out, _call(model, video, other))
    # the VMLP on each segment alone (K copies of it), logits averaged over the segments
    per_segment = np.stack([np.asarray(vmlp(np.repeat(video[:, k:k + 1], K, axis=1)))
                            for k in range(K)], axis=1)
    np.testing.assert_allclose(out, per_segment.mean(axis=1), atol=1e-5)
    same = np.repeat(video[:, :1], K, axis=1)  # equal segments: exactly the VMLP
    np.testing.assert_allclose(_call(model, same, seg), np.asarray(vmlp(same)), atol=1e-5)
    assert not np.allclose(out, np.asarray(vmlp(video)), atol=1e-3)  # ReLU vs mean
    hidden = model.get_layer("fusion_hidden")
    np.testing.assert_array_equal(hidden.kernel.numpy()[:DV], vmlp.get_layer("hidden").kernel)
    np.testing.assert_array_equal(hidden.kernel.numpy()[DV:], np.zeros((DA, 8)))
    glorot = _tb(vmlp, dataclasses.replace(cfg, audio_rows_init="glorot_uniform"))
    assert not np.allclose(_call(glorot, video, seg), _call(glorot, video, other))


def test_binding_window_means_the_neighbouring_segments_truncated_at_the_ends():
    expected = np.array([[1 / 2, 1 / 2, 0, 0], [1 / 3, 1 / 3, 1 / 3, 0],
                         [0, 1 / 3, 1 / 3, 1 / 3], [0, 0, 1 / 2, 1 / 2]], np.float32)
    np.testing.assert_allclose(temporal.binding_matrix(4, 3), expected, rtol=1e-6)
    np.testing.assert_array_equal(temporal.binding_matrix(3, 1), np.eye(3))
    np.testing.assert_allclose(temporal.binding_matrix(2, 5), np.full((2, 2), 0.5))
    x = np.arange(2 * 4 * 2, dtype=np.float32).reshape(2, 4, 2)
    np.testing.assert_allclose(np.asarray(temporal.TemporalBinding(3)(x)),
                               np.einsum("kj,bjd->bkd", expected, x), rtol=1e-6)
    with pytest.raises(ValueError, match="odd number"):
        temporal.TemporalBinding(2)


def test_flatten_pooling_and_bad_modality_dropout_are_refused():
    flat = _model_cfg(video_pooling="flatten")
    with pytest.raises(ValueError, match="no per-segment rows to transfer"):
        _tb(_vmlp(flat), flat)
    cfg = _model_cfg()
    with pytest.raises(ValueError, match="re-run `maivar extract`"):
        _tb(_vmlp(cfg), cfg, modality_dropout=0.5, silent_audio=None)
    with pytest.raises(ValueError, match="late fusion is not fitted"):
        fusion.build_fusion("late", _vmlp(cfg), _vmlp(cfg), cfg, audio_dim=DV,
                            modality_dropout=0.2, silent_audio=np.zeros(DV))


def test_modality_dropout_silences_whole_clips_in_training_only_and_saves(tmp_path):
    layer = ModalityDropout(0.5, DA, SILENT, seed=3)
    x = np.random.default_rng(0).normal(size=(2000, K, DA)).astype(np.float32)
    y = np.asarray(layer(x, training=True))
    silent = np.all(y == SILENT, axis=(1, 2))
    assert 0.45 < silent.mean() < 0.55  # whole clips (all K rows), about half of them
    np.testing.assert_array_equal(y[~silent], x[~silent])
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    cfg = _model_cfg()
    model = _tb(_vmlp(cfg), cfg, modality_dropout=0.3, silent_audio=SILENT)
    model.save(tmp_path / "m.keras")
    loaded = runs.load_head(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.get_layer("modality_dropout").silent.numpy(), SILENT)
    clip = fusion.build_fusion("vmlp_init", _vmlp(cfg), None, cfg, audio_dim=DA,
                               modality_dropout=0.3, silent_audio=SILENT)
    a = np.asarray(clip.get_layer("modality_dropout")(x[:, 0], training=True))
    assert 0 < np.all(a == SILENT, axis=1).mean() < 1


# ----------------------------------------------------------------------------- training


def _experiment(tmp_path, epochs=2, dropout=0.0, localisation=True) -> ExperimentConfig:
    stage = StageConfig(epochs=epochs, learning_rate=1e-2, batch_size=8)
    return ExperimentConfig(
        name="tb", data=DataConfig(segment_audio=True),
        model=_model_cfg(localisation=localisation),
        train=TrainConfig(strategy="default", audio=stage, video=stage, seed=1,
                          fusion=dataclasses.replace(stage, modality_dropout=dropout),
                          localisation=stage, output_dir=str(tmp_path)))


def test_localiser_stage_trains_on_segment_labels_saves_reloads_and_evaluates(tmp_path):
    train, test = toy(6, seed=0), toy(3, seed=1)
    run = training.run_algorithm1(_experiment(tmp_path, dropout=0.25), train, test,
                                  run_dir=tmp_path, verbose=0)
    info = RunInfo.read(tmp_path)
    assert info.stages["localiser"]["epochs"] == 2 and (tmp_path / "localiser.keras").exists()
    assert set(info.metrics["localiser"]) == {"train", "val"}
    assert info.metrics["localiser"]["val"]["num_segments"] == 9 * K
    assert run.histories["localiser"]["epoch"] == [0.0, 1.0]
    loaded = runs.load_run(tmp_path)
    assert loaded.localiser is not None and runs.STAGES == ("audio_mlp", "vmlp", "fusion")
    inputs = {"video_features": test.video, "audio_segment_features": test.audio_segments}
    logits = np.asarray(loaded.localiser(inputs))
    assert logits.shape == (9, K, C + 1)
    np.testing.assert_allclose(logits, np.asarray(run.localiser(inputs)), atol=1e-5)
    # the localiser's fused features are the frozen fusion model's
    assert len(loaded.localiser.trainable_weights) == 4
    report = evaluation.evaluate_models(evaluation.run_heads(loaded), test, tmp_path / "eval",
                                        tsne=False, localiser=loaded.localiser)
    assert report["audio"] == "original"
    assert report["localisation"] == localisation_metrics(test.segment_labels, logits)
    silent = evaluation.evaluate_models(evaluation.run_heads(loaded), test, tmp_path / "quiet",
                                        tsne=False, audio="silent")
    assert silent["audio"] == "silent"
    assert json.loads((tmp_path / "quiet" / "report.json").read_text())["audio"] == "silent"
    # silent audio changes the audio MLP's output to one constant prediction
    assert len(set(np.argmax(np.asarray(loaded.audio_mlp(
        np.repeat(SILENT[None], 3, 0))), axis=1))) == 1


def test_localiser_is_skipped_without_segment_labels_and_features_are_checked(tmp_path, caplog):
    cfg, train = _experiment(tmp_path), dataclasses.replace(toy(2), segment_labels=None)
    model = _tb(_vmlp(cfg.model), cfg.model)
    with caplog.at_level("WARNING"):
        assert training.localiser_stage(cfg, model, train, None,
                                        distribute.get_strategy("default"), tmp_path,
                                        verbose=0) == (None, None)
    assert "no segment labels" in caplog.text and not (tmp_path / "localiser").exists()
    with pytest.raises(ValueError, match=r"train: .*load_features\(..., segments=True\)"):
        training.run_algorithm1(cfg, dataclasses.replace(train, audio_segments=None), verbose=0)
    with pytest.raises(ValueError, match="re-run `maivar extract`"):
        training.run_algorithm1(_experiment(tmp_path / "c", dropout=0.5),
                                dataclasses.replace(toy(2), silent_audio=None), verbose=0)


def test_a_fusion_stage_with_modality_dropout_resumes_exactly(tmp_path):
    features, cfg = toy(4), _model_cfg()
    plan = training.StagePlan("fusion", 2, 1e-2, 4, 7)
    xy = (training.stage_inputs("fusion", features, "temporal_binding"), features.labels)
    vmlp = _vmlp(cfg)

    def stage(run_dir, *extra):
        return training.train_stage(
            plan, lambda: _tb(vmlp, cfg, modality_dropout=0.5, silent_audio=SILENT, seed=7),
            xy, None, distribute.get_strategy("default"), run_dir, verbose=0,
            extra_callbacks=lambda _: extra)

    reference = stage(tmp_path / "uninterrupted")[0].get_weights()
    with pytest.raises(KeyboardInterrupt):
        stage(tmp_path / "resumed", StopAt(1))
    resumed, info = stage(tmp_path / "resumed")
    assert info["resumed_after_epoch"] == 1
    for a, b in zip(resumed.get_weights(), reference, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_distributed_dataset_gathers_segment_label_rows():
    labels = np.arange(5 * K, dtype=np.int64).reshape(5, K)
    x = np.arange(5, dtype=np.float32)[:, None]
    strategy = distribute.get_strategy("default")
    ds, steps = distribute.make_distributed_dataset(strategy, x, labels, 4, training=True)
    xb, yb = next(iter(ds))
    np.testing.assert_array_equal(np.asarray(yb), labels[np.asarray(xb)[:, 0].astype(int)])
    ds, steps = distribute.make_distributed_dataset(strategy, x, labels, 4, training=False)
    batches = [b for _, b in zip(range(steps), ds, strict=False)]
    assert steps == 2 and np.asarray(batches[1][1]).shape == (4, K)
    np.testing.assert_array_equal(np.asarray(batches[1][1])[0], labels[4])
    # the padding's zero weights have the labels' shape (a loss per segment)
    np.testing.assert_array_equal(np.asarray(batches[1][2]), [[1] * K] + [[0] * K] * 3)


# ----------------------------------------------------------------------------- metrics


def test_localisation_metrics_against_hand_computed_values():
    # 2 clips x 3 segments, C = 2 (class 2 = background). Labels: [0, -1, -1], [1, 1, -1].
    labels = np.array([[0, -1, -1], [1, 1, -1]])
    pred = np.array([[0, 2, 1], [1, 0, 2]])  # right, right, event-not-bg; right, wrong class, right
    logits = np.eye(3)[pred]
    m = localisation_metrics(labels, logits)
    assert m["segment_accuracy"] == pytest.approx(4 / 6)   # (C+1)-way
    assert m["event_accuracy"] == pytest.approx(5 / 6)     # only [0, 2] is wrong
    assert m["baseline_all_event"] == pytest.approx(3 / 6)
    assert m["baseline_all_background"] == pytest.approx(3 / 6)
    assert (m["num_clips"], m["num_segments"], m["num_event_segments"],
            m["num_background_segments"]) == (2, 6, 3, 3)
    np.testing.assert_array_equal(localisation_labels(labels, 2), [[0, 2, 2], [1, 1, 2]])
    with pytest.raises(ValueError, match="outside -1..1"):
        localisation_labels(np.array([[2]]), 2)


def test_silent_features_replace_every_audio_input():
    quiet = silent_features(toy(2))
    assert np.all(quiet.audio == SILENT) and np.all(quiet.audio_segments == SILENT)
    assert quiet.audio_missing.all() and quiet.video.shape == (6, K, DV)
    with pytest.raises(ValueError, match="re-run `maivar extract`"):
        silent_features(dataclasses.replace(toy(2), silent_audio=None))

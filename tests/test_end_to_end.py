"""End-to-end runs (maivar_tf/end_to_end.py) on the tiny experiment of tests/e2e_data.py.

The backbones are the real BNInception layers from the tiny block table (32-px crops) and
MobileNetV3-Small, with the random weights ``maivar extract`` saved beside the features. One
fine-tuned run is trained per module and its folder, partial BatchNorm, export and evaluation
checked; a killed-and-resumed run is compared with an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from maivar_tf.artifacts import RunInfo
from maivar_tf.data.decode import decode_examples
from maivar_tf.end_to_end import run_end_to_end
from maivar_tf.end_to_end_eval import evaluation_features_dir, finetuned_kinds
from maivar_tf.features import load_features
from maivar_tf.run_backbones import backbone_weights_path, trained_backbone_path
from tests.cluster_helpers import h5_arrays
from tests.e2e_data import CROP, e2e_config, write_e2e_data
from tests.shared_helpers import StopAt


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """TFRecords and features of the tiny experiment (written once; do not modify)."""
    root = tmp_path_factory.mktemp("e2e")
    write_e2e_data(root)
    return root


class Keep(keras.callbacks.Callback):
    """Keeps each stage's trained model (the in-memory model at the end of its fit)."""

    models: dict = {}

    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage

    def on_train_end(self, logs=None):
        Keep.models[self.stage] = self.model


@pytest.fixture(scope="module")
def video_run(root, tmp_path_factory):
    """A run fine-tuning the video backbone (2 epochs per stage) and its in-memory models."""
    cfg = e2e_config(root, finetune="video")
    run_dir = tmp_path_factory.mktemp("video_run")
    Keep.models = {}
    run = run_end_to_end(cfg, run_dir, verbose=0, extra_callbacks=lambda s: [Keep(s)])
    return cfg, run, dict(Keep.models)


def _batch_norm_stats(path: Path) -> dict[str, np.ndarray]:
    """The moving means of a BNInception weights file, by layer path (Keras numbers the
    BatchNorm layers in build order: ``batch_normalization`` is the first, conv1's)."""
    return {k: v for k, v in h5_arrays(path).items()
            if "/batch_normalization" in k and k.endswith("vars/2")}


def test_finetuned_video_run_folder_stages_and_partial_batch_norm(video_run, root):
    cfg, run, _ = video_run
    d = run.run_dir
    for stage in ("audio_mlp", "vmlp", "fusion"):
        assert (d / f"{stage}.keras").is_file()
    assert backbone_weights_path(d, "vmlp", "video").is_file()
    assert trained_backbone_path(d, "video") == backbone_weights_path(d, "fusion", "video")
    assert trained_backbone_path(d, "audio") is None  # audio frozen: the features folder's
    info = RunInfo.read(d)
    assert info.stages["audio_mlp"]["end_to_end"] is False  # frozen audio: cached features
    assert info.stages["vmlp"]["trained_backbones"] == ["video"]
    assert info.stages["fusion"]["trained_backbones"] == ["video"]
    assert info.stages["vmlp"]["steps_per_epoch"] == 2  # 5 clips, global batch 4
    assert finetuned_kinds(d) == ("video",)
    # partial BatchNorm: only the first BatchNorm's statistics moved during fine-tuning
    start = _batch_norm_stats(Path(cfg.data.features_dir) / "backbones"
                              / "video-bn_inception_tiny.weights.h5")
    end = _batch_norm_stats(trained_backbone_path(d, "video"))
    assert len(start) == len(end) > 3
    moved = sorted(k for k in start if not np.array_equal(start[k], end[k]))
    assert moved == ["layers/batch_normalization/vars/2"], moved
    # and the convolutions did train
    convs = {k: v for k, v in h5_arrays(trained_backbone_path(d, "video")).items()
             if "/conv2d" in k}
    first = h5_arrays(Path(cfg.data.features_dir) / "backbones"
                       / "video-bn_inception_tiny.weights.h5")
    assert convs and any(not np.array_equal(v, first[k]) for k, v in convs.items())


def _test_inputs(cfg):
    """The test clips' centre-cropped frames and audio-images, sorted by id."""
    files = sorted(Path(cfg.data.output_dir).glob("test-*.tfrecord"))
    raw = [r.numpy() for f in files for r in tf.data.TFRecordDataset(str(f))]
    ex = sorted(decode_examples(raw, representations=["chromagram"], crop_size=CROP,
                                num_segments=2, image_size=299), key=lambda e: e["example_id"])
    return (np.stack([e["frames"] for e in ex]),
            np.stack([e["audio_images"]["chromagram"] for e in ex]),
            [e["example_id"].decode() for e in ex])


def test_export_of_finetuned_run_predicts_as_the_in_memory_model(video_run, tmp_path):
    from maivar_tf.serving import SIGNATURE_MEDIA, as_numpy_outputs, export_run

    cfg, run, models = video_run
    frames, images, ids = _test_inputs(cfg)
    test = load_features(cfg.data.features_dir, "test", "chromagram",
                         audio_backbone=cfg.model.audio_backbone)
    assert [str(i) for i in test.ids] == ids
    logits = np.asarray(models["fusion"]({"frames": frames, "audio_features": test.audio},
                                         training=False), np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    path = export_run(cfg, run.run_dir, tmp_path / "export", "e2e")
    served = tf.saved_model.load(str(path)).signatures[SIGNATURE_MEDIA]
    out = as_numpy_outputs(served(frames=tf.constant(frames), audio_image=tf.constant(images)))
    np.testing.assert_allclose(out["probabilities"], probs, atol=1e-5)


def test_evaluation_reextracts_through_the_finetuned_backbone(video_run):
    from maivar_tf.models.backbones import BackboneFeatures, build_backbone, video_features

    cfg, run, _ = video_run
    out = evaluation_features_dir(cfg, run.run_dir)
    assert out == run.run_dir / "features"
    feats = load_features(out, "test", "chromagram", audio_backbone=cfg.model.audio_backbone)
    frames, _, _ = _test_inputs(cfg)
    model = build_backbone("video", str(trained_backbone_path(run.run_dir, "video")), CROP,
                           architecture="bn_inception_tiny")
    expected = video_features(BackboneFeatures(model, (CROP, CROP, 3)), frames, CROP)
    np.testing.assert_allclose(feats.video, expected, atol=1e-5)
    initial = load_features(cfg.data.features_dir, "test", "chromagram",
                            audio_backbone=cfg.model.audio_backbone)
    assert np.abs(feats.video - initial.video).max() > 1e-4  # not the starting features
    np.testing.assert_allclose(feats.audio, initial.audio, atol=1e-6)  # audio was frozen
    stamp = (out / "feature_info.json").stat().st_mtime_ns
    assert evaluation_features_dir(cfg, run.run_dir) == out  # fresh: not extracted again
    assert (out / "feature_info.json").stat().st_mtime_ns == stamp
    # a run that fine-tuned nothing is evaluated on the features folder itself
    assert evaluation_features_dir(cfg, run.run_dir / "audio_mlp") == \
        Path(cfg.data.features_dir)


def _run_weights(run_dir: Path) -> dict[str, list[np.ndarray]]:
    out = {s: keras.saving.load_model(run_dir / f"{s}.keras", compile=False).get_weights()
           for s in ("audio_mlp", "vmlp", "fusion")}
    for kind in ("video", "audio"):
        path = trained_backbone_path(run_dir, kind)
        out[kind] = list(h5_arrays(path).values()) if path else []
    return out


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_weights(root, tmp_path):
    cfg = e2e_config(root, finetune="video", epochs=2)
    whole = run_end_to_end(cfg, tmp_path / "whole", verbose=0)
    resumed_dir = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        run_end_to_end(cfg, resumed_dir, verbose=0,
                       extra_callbacks=lambda s: [StopAt(1)] if s == "vmlp" else [])
    assert (resumed_dir / "audio_mlp.keras").is_file()
    assert not (resumed_dir / "vmlp.keras").exists()
    resumed = run_end_to_end(cfg, resumed_dir, verbose=0)
    assert resumed.info.stages["vmlp"]["resumed_after_epoch"] == 1
    a, b = _run_weights(whole.run_dir), _run_weights(resumed.run_dir)
    assert len(a["video"]) > 0  # the fine-tuned backbone is compared too
    for key in a:
        assert len(a[key]) == len(b[key])
        for x, y in zip(a[key], b[key], strict=True):
            np.testing.assert_array_equal(x, y, err_msg=key)


def test_rerun_skips_finished_stages(video_run, tmp_path):
    cfg, run, _ = video_run
    copy = shutil.copytree(run.run_dir, tmp_path / "copy")
    again = run_end_to_end(cfg, copy, verbose=0)
    assert [again.info.stages[s].get("skipped", False) for s in ("audio_mlp", "vmlp", "fusion")]\
        == [False, False, False]  # the record of the run that trained them is kept
    for x, y in zip(again.fusion.get_weights(), run.fusion.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)
    both = e2e_config(Path(cfg.data.features_dir).parent, finetune="both")
    with pytest.raises(ValueError, match="train.finetune='video', not end to end with 'both'"):
        run_end_to_end(both, copy, verbose=0)


@pytest.mark.slow
def test_mixed_bfloat16_and_xla_run_and_record_their_settings(root, tmp_path):
    from maivar_tf.distribute import mixed_policy

    if mixed_policy(cpu_bfloat16=True) != "mixed_bfloat16":
        pytest.skip("no native bfloat16 on this CPU")
    cfg = e2e_config(root, finetune="video", epochs=1, mixed_precision=True)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, jit_compile=True))
    run = run_end_to_end(cfg, tmp_path / "run", verbose=0)
    assert run.info.mixed_precision == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards
    loss = run.info.metrics["vmlp"]["train"]["loss"]
    assert np.isfinite(loss) and "val" not in run.info.metrics["vmlp"]
    assert trained_backbone_path(run.run_dir, "video") is not None


def test_missing_features_folder_is_one_clear_error(root, tmp_path):
    cfg = e2e_config(root)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data,
                                                            features_dir=str(tmp_path / "none")))
    with pytest.raises(FileNotFoundError, match="run `maivar extract` first"):
        run_end_to_end(cfg, tmp_path / "run", verbose=0)

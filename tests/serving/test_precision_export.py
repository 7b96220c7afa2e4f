"""Serving bfloat16 features: predict and export rebuild the backbones in that precision.

A tiny run on disk whose features folder records ``extract.precision: bfloat16`` and real
backbone specs (the tiny BNInception at crop 112 and ResNet18 at 64, random weights saved beside
the features, as ``maivar extract`` leaves them). :func:`maivar_tf.runs.load_servable_run` must
rebuild both backbones under ``mixed_bfloat16`` with no backbones handed in; the export keeps
float32 inputs and outputs and serves what the in-memory bfloat16 model computes; on hardware
without native bfloat16 (the detection functions patched) predict (of the run or of the export)
and export refuse it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from maivar_tf.artifacts import AudioFeatures, FeatureInfo, RunInfo  # noqa: E402
from maivar_tf.config import load_config  # noqa: E402
from maivar_tf.models import precision  # noqa: E402
from maivar_tf.models.precision import PrecisionError  # noqa: E402
from maivar_tf.runs import RunError, load_servable_run  # noqa: E402
from maivar_tf.serving import (  # noqa: E402
    SIGNATURE_MEDIA,
    as_numpy_outputs,
    export_run,
    export_servable,
    read_export_info,
)
from maivar_tf.serving.predictors import SavedModelPredictor  # noqa: E402
from tests.serving.helpers import CLASSES, REPRESENTATION, K, keras_probabilities  # noqa: E402

CROP, AUDIO_SIZE = 112, 64


def _config(root: Path, extract_precision: str):
    return load_config(None, [
        "name=bf16", f"data.num_segments={K}", f"data.representations=[{REPRESENTATION}]",
        f"data.crop_size={CROP}", f"data.audio.image_size={AUDIO_SIZE}",
        f"data.output_dir={root / 'tfrecords'}", f"data.features_dir={root / 'features'}",
        f"train.output_dir={root / 'run'}", f"model.representation={REPRESENTATION}",
        "model.video_backbone=bn_inception_tiny", "model.audio_backbone=resnet18",
        "model.video_pooling=flatten", "model.hidden_units=8", "model.dropout=0.0",
        "model.l1=0.0", "model.audio_rows_init=glorot_uniform",
        f"extract.precision={extract_precision}"])


def _write_run(root: Path, clip_paths) -> SimpleNamespace:
    """Heads over the two real backbones (standardised with their features of two real
    clips), run_info.json and a bfloat16 feature_info.json; the clips' media for the tests."""
    import keras

    from maivar_tf.models.backbones import BackboneFeatures, init_backbone
    from maivar_tf.models.heads import (
        build_audio_mlp,
        build_fusion_mlp,
        build_video_mlp,
        feature_statistics,
    )
    from maivar_tf.predict import prepare_clips

    cfg = _config(root, "bfloat16")
    features_dir, run_dir = Path(cfg.data.features_dir), Path(cfg.train.output_dir)
    video, vspec = init_backbone("video", "none", CROP, features_dir, seed=1,
                                 architecture="bn_inception_tiny", precision="bfloat16")
    audio, aspec = init_backbone("audio", "none", AUDIO_SIZE, features_dir, seed=2,
                                 architecture="resnet18", precision="bfloat16")
    prepared, failures = prepare_clips([str(p) for p in clip_paths[:2]], cfg, REPRESENTATION)
    assert not failures, failures
    frames, images = np.stack([p.frames for p in prepared]), np.stack([p.audio_image
                                                                      for p in prepared])
    video_feats = BackboneFeatures(video, (CROP, CROP, 3))(frames.reshape((-1, CROP, CROP, 3)))
    audio_feats = BackboneFeatures(audio, (AUDIO_SIZE, AUDIO_SIZE, 3))(images)
    dims = video_feats.shape[-1], audio_feats.shape[-1]
    (v_mean, v_var), (a_mean, a_var) = (feature_statistics(f.numpy()) for f in (video_feats, audio_feats))
    keras.utils.set_random_seed(3)
    heads = {"vmlp": build_video_mlp(len(CLASSES), K, cfg.model, v_mean, v_var,
                                     feature_dim=dims[0]),
             "audio_mlp": build_audio_mlp(len(CLASSES), cfg.model, a_mean, a_var,
                                          feature_dim=dims[1])}
    heads["fusion"] = build_fusion_mlp(heads["vmlp"], cfg.model, a_mean, a_var,
                                       audio_dim=dims[1], seed=4)
    run_dir.mkdir(parents=True)
    for name, model in heads.items():
        model.save(run_dir / f"{name}.keras")
    RunInfo(class_names=CLASSES, representation=REPRESENTATION, num_segments=K,
            video_feature_dim=dims[0], audio_feature_dim=dims[1], config=cfg.to_dict(),
            features_dir=str(features_dir)).write(run_dir)
    FeatureInfo(fingerprint="bf16", num_segments=K, video_dim=dims[0], audio_dim=dims[1],
                crop_size=CROP, ten_crop=False, video_backbone=vspec, audio_backbone=aspec,
                class_names=CLASSES, config=cfg.to_dict(), tfrecords_schema_version=2,
                audio_backbones={"resnet18": AudioFeatures(aspec, dims[1])}).write(features_dir)
    return SimpleNamespace(cfg=cfg, run_dir=run_dir, features_dir=features_dir,
                           frames=frames, images=images)


@pytest.fixture(scope="module")
def bf16(tmp_path_factory, clip_paths) -> SimpleNamespace:
    return _write_run(tmp_path_factory.mktemp("bf16_run"), clip_paths)


def _float32_folder(bf16, tmp_path) -> Path:
    """A copy of the features record that says float32 (the same saved weights)."""
    info = FeatureInfo.read(bf16.features_dir)
    config = json.loads(json.dumps(info.config))
    config["extract"]["precision"] = "float32"
    out = tmp_path / "features32"
    dataclasses.replace(info, config=config).write(out)
    (out / "backbones").symlink_to(bf16.features_dir / "backbones")
    return out


def test_a_bfloat16_run_is_rebuilt_in_bfloat16_and_agrees_with_float32(bf16, tmp_path):
    run = load_servable_run(bf16.cfg, bf16.run_dir)
    assert run.provenance["precision"] == "bfloat16"
    for fn in (run.video, run.audio):
        assert fn.model.dtype_policy.name == "mixed_bfloat16"
        assert {w.dtype for w in fn.model.weights} == {"float32"}  # weights stay float32
    run32 = load_servable_run(bf16.cfg, bf16.run_dir, features_dir=_float32_folder(bf16, tmp_path))
    assert run32.provenance["precision"] == "float32"
    assert run32.video.model.dtype_policy.name == "float32"
    crops = bf16.frames.reshape((-1, CROP, CROP, 3))
    for kind, images in (("video", crops), ("audio", bf16.images)):
        f16, f32 = (np.asarray(getattr(r, kind)(images)) for r in (run, run32))
        assert f16.dtype == np.float32 and f16.shape == f32.shape
        assert not np.array_equal(f16, f32)  # the bfloat16 backbone did compute in bfloat16
        cosine = (f16 * f32).sum(-1) / np.linalg.norm(f16, axis=-1) / np.linalg.norm(f32, axis=-1)
        assert cosine.min() >= 0.99, (kind, cosine)


def _specs(fn) -> list[tf.TensorSpec]:
    inputs = list(fn.structured_input_signature[1].values())
    return inputs + list(tf.nest.flatten(fn.structured_outputs))


@pytest.mark.slow  # ~7-9 s on 2 shared cores: the SavedModel export of both backbones
def test_a_bfloat16_export_keeps_float32_signatures_and_serves_the_bfloat16_model(
        bf16, tmp_path, monkeypatch):
    run = load_servable_run(bf16.cfg, bf16.run_dir)
    path = export_servable(run, tmp_path / "export", "bf16")
    assert read_export_info(path).provenance["precision"] == "bfloat16"
    loaded = tf.saved_model.load(str(path))
    for name, fn in loaded.signatures.items():
        dtypes = {s.dtype for s in _specs(fn)}
        assert tf.bfloat16 not in dtypes and dtypes <= {tf.float32, tf.uint8, tf.string,
                                                        tf.bool, tf.int32}, (name, dtypes)
        floats = [s.name for s in _specs(fn) if s.dtype == tf.float32]
        assert floats, name  # each signature has float32 inputs or outputs
    out = as_numpy_outputs(loaded.signatures[SIGNATURE_MEDIA](
        frames=tf.constant(bf16.frames), audio_image=tf.constant(bf16.images)))
    assert out["probabilities"].dtype == np.float32
    video = np.asarray(run.video(bf16.frames.reshape((-1, CROP, CROP, 3))))
    expected = keras_probabilities(run.fusion, video.reshape(len(bf16.frames), K, -1),
                                   np.asarray(run.audio(bf16.images)), temperature=1.0)
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-4)
    # `maivar predict --saved-model` runs it only where bfloat16 is native
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f"}))
    monkeypatch.setattr(precision, "gpu_capabilities", lambda: [])
    with pytest.raises(PrecisionError, match="this machine has a CPU without avx512_bf16"):
        SavedModelPredictor(path)


@pytest.mark.parametrize("flags, gpus, lacking", [
    ({"avx512f", "avx512_vnni"}, [], "CPU without avx512_bf16 or amx_bf16"),
    ({"avx512_bf16"}, [(7, 5)], "GPU of compute capability 7.5"),
])
def test_bfloat16_features_are_refused_without_native_bfloat16(bf16, tmp_path, monkeypatch,
                                                               capsys, flags, gpus, lacking):
    from maivar_tf.predict import predict_command

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(precision, "gpu_capabilities", lambda: list(gpus))
    expected = rf"features in {bf16.features_dir} were extracted in bfloat16: .*{lacking}"
    with pytest.raises(RunError, match=expected):
        load_servable_run(bf16.cfg, bf16.run_dir)
    with pytest.raises(RunError, match=expected):
        export_run(bf16.cfg, bf16.run_dir, tmp_path / "export")
    assert not (tmp_path / "export").exists()
    config = tmp_path / "bf16.json"
    config.write_text(json.dumps(bf16.cfg.to_dict()))
    code = predict_command(["clip.mp4"], cfg_path=str(config), run_dir=str(bf16.run_dir))
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("maivar: cannot load the model: the features in")
    assert lacking in err and "Use extract.precision=float32" in err

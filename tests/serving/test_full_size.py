"""The full-size backbones, once: ``maivar extract`` with them, then ``maivar export`` of a run.

BNInception and InceptionResNetV2 with random (``none``) weights extract the features of two
tiny-data test videos and are saved beside them
(:func:`maivar_tf.models.backbones.init_backbone`); ``maivar export``
(:func:`maivar_tf.serving.export_run`) must rebuild exactly those from ``feature_info.json``,
so the served ``serve_media`` signature, fed the same decoded frames and audio-image, gives the
fusion head's answer on the stored features. Building the two full-size backbones is the cost
of this test, so extraction and export share it (one full-size test per model).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import yaml  # noqa: E402

from maivar_tf import cli, runs  # noqa: E402
from maivar_tf.artifacts import FeatureInfo, RunInfo  # noqa: E402
from maivar_tf.data.decode import decode_examples  # noqa: E402
from maivar_tf.features import extract_features, load_features  # noqa: E402
from maivar_tf.features.extract import input_shards  # noqa: E402
from maivar_tf.serving import (  # noqa: E402
    SIGNATURE_FEATURES,
    SIGNATURE_MEDIA,
    SIGNATURE_WAVEFORM,
    as_numpy_outputs,
    read_export_info,
    resolve_saved_model_dir,
)
from tests.cluster_helpers import h5_arrays  # noqa: E402
from tests.features.tiny_data import make_config, write_tfrecords  # noqa: E402
from tests.serving.helpers import (  # noqa: E402
    MODEL_NAME,
    REPRESENTATION,
    K,
    check_outputs,
    keras_probabilities,
    tiny_config,
)


def _extract_test_videos(root: Path):
    """Full-size random backbones over the two tiny-data test videos; (cfg, features dir)."""
    cfg = make_config(root)
    write_tfrecords(cfg)
    for p in Path(cfg.data.output_dir).glob("train-*.tfrecord"):  # keep only the 2 test videos
        p.unlink()
    out = extract_features(cfg, splits=("test",), representations=[REPRESENTATION],
                           progress=False)
    return cfg, out


def _write_run(root: Path, features_dir: Path, info: FeatureInfo):
    """Untrained full-width heads over those features, as a run folder."""
    import keras

    from maivar_tf.models.heads import build_audio_mlp, build_fusion_mlp, build_video_mlp

    cfg = tiny_config(root)
    classes = info.class_names
    keras.utils.set_random_seed(3)
    vmlp = build_video_mlp(len(classes), K, cfg.model)
    heads = {"vmlp": vmlp, "audio_mlp": build_audio_mlp(len(classes), cfg.model),
             "fusion": build_fusion_mlp(vmlp, cfg.model, seed=4)}
    run_dir = root / "run"
    run_dir.mkdir()
    for name, model in heads.items():
        model.save(run_dir / f"{name}.keras")
    RunInfo(class_names=classes, representation=REPRESENTATION, num_segments=K,
            video_feature_dim=1024, audio_feature_dim=1536, config=cfg.to_dict(),
            features_dir=str(features_dir)).write(run_dir)
    return cfg, run_dir, heads["fusion"]


@pytest.mark.slow
def test_full_size_backbones_extract_then_export_serve_the_same_features(tmp_path, monkeypatch):
    from maivar_tf.models.backbones import init_backbone
    from maivar_tf.serving import export as export_module

    ext_cfg, out = _extract_test_videos(tmp_path)
    fs = load_features(out, "test", REPRESENTATION)
    assert fs.video.shape == (2, K, 1024) and fs.audio.shape == (2, 1536)
    assert np.isfinite(fs.video).all() and np.isfinite(fs.audio).all()
    assert not np.allclose(fs.video[0], fs.video[1])
    info = FeatureInfo.read(out)
    assert (info.video_backbone.architecture, info.video_backbone.weights) == ("bn_inception",
                                                                               "none")
    assert (info.audio_backbone.architecture, info.audio_backbone.weights) == (
        "inception_resnet_v2", "none")
    assert info.video_backbone.saved_weights == "backbones/video.weights.h5"
    assert info.audio_backbone.saved_weights == "backbones/audio.weights.h5"
    # Same seed -> the same random weights in a fresh folder (what a repeated extraction
    # draws; BNInception only: the seeding code is the same for both and IRV2 costs seconds).
    fresh = tmp_path / "fresh"
    init_backbone("video", "none", 224, fresh, seed=ext_cfg.train.seed)
    first, second = (h5_arrays(d / "backbones" / "video.weights.h5") for d in (out, fresh))
    assert first.keys() == second.keys() and first
    for name, value in first.items():
        np.testing.assert_array_equal(value, second[name], err_msg=name)

    cfg, run_dir, fusion = _write_run(tmp_path, out, info)
    served = []

    def load_servable_run(*args, **kwargs):  # what export_run exports, kept for a look
        served.append(runs.load_servable_run(*args, **kwargs))
        return served[-1]

    monkeypatch.setattr(export_module, "load_servable_run", load_servable_run)
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert cli.main(["export", "--config", str(cfg_path), "--run-dir", str(run_dir),
                     "--export-dir", str(tmp_path / "export")]) == 0  # export_run underneath
    path = resolve_saved_model_dir(tmp_path / "export" / MODEL_NAME)
    assert path == tmp_path / "export" / MODEL_NAME / "1"
    assert served[0].cfg == cfg
    export_info = read_export_info(path)
    assert export_info.provenance["video_backbone"].endswith("backbones/video.weights.h5")
    assert export_info.provenance["audio_backbone"].endswith("backbones/audio.weights.h5")
    assert export_info.provenance["features_dir"] == str(out)
    loaded = tf.saved_model.load(str(path))
    specs = {name: {k: (s.dtype.name, s.shape.as_list()) for k, s in
                    loaded.signatures[name].structured_input_signature[1].items()}
             for name in (SIGNATURE_FEATURES, SIGNATURE_MEDIA, SIGNATURE_WAVEFORM)}
    assert specs == {
        SIGNATURE_FEATURES: {"video_features": ("float32", [None, K, 1024]),
                             "audio_features": ("float32", [None, 1536])},
        SIGNATURE_MEDIA: {"frames": ("uint8", [None, K, None, None, 3]),
                          "audio_image": ("uint8", [None, 299, 299, 3])},
        SIGNATURE_WAVEFORM: {"frames": ("uint8", [None, K, None, None, 3]),
                             "waveform": ("float32", [None, None]),
                             "sample_rate": ("int32", [None])}}
    # The served backbones are the ones the features came from: the decoded test videos
    # (whole 256x300 frames; the signature crops) through serve_media give the fusion head's
    # answer on the stored features.
    raw = [r.numpy() for r in tf.data.TFRecordDataset(
        [str(p) for p in input_shards(ext_cfg.data.output_dir, "test")])]
    decoded = decode_examples(raw, representations=(REPRESENTATION,), crop_size=224,
                              crop="none")
    rows = [fs.ids.tolist().index(d["example_id"].decode()) for d in decoded]
    frames = np.stack([d["frames"] for d in decoded])
    images = np.stack([d["audio_images"][REPRESENTATION] for d in decoded])
    assert frames.shape == (2, K, 256, 300, 3) and images.shape == (2, 299, 299, 3)
    out_media = as_numpy_outputs(loaded.signatures[SIGNATURE_MEDIA](
        frames=tf.constant(frames), audio_image=tf.constant(images)))
    # a run recorded without a temperature serves the plain softmax
    assert export_info.temperature == 1.0
    check_outputs(out_media, keras_probabilities(fusion, fs.video[rows], fs.audio[rows],
                                                 temperature=1.0),
                  atol=1e-4, classes=info.class_names)

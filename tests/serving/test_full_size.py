"""One export with the full-size backbones, from the run folder and features folder on disk.

BNInception and InceptionResNetV2 with random (``none``) weights are built and saved beside
the features as ``maivar extract`` leaves them
(:func:`maivar_tf.models.backbones.init_backbone`); ``maivar export``
(:func:`maivar_tf.serving.export_run`) must rebuild exactly those from ``feature_info.json``.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import yaml  # noqa: E402

from maivar_tf import cli, runs  # noqa: E402
from maivar_tf.artifacts import FeatureInfo, RunInfo  # noqa: E402
from maivar_tf.serving import (  # noqa: E402
    SIGNATURE_FEATURES,
    SIGNATURE_MEDIA,
    SIGNATURE_WAVEFORM,
    as_numpy_outputs,
    read_export_info,
    resolve_saved_model_dir,
)
from tests.serving.helpers import (  # noqa: E402
    CLASSES,
    MODEL_NAME,
    REPRESENTATION,
    K,
    check_outputs,
    keras_probabilities,
    tiny_config,
)


def write_full_size_run(root):
    """A run with the default feature widths whose features folder holds saved backbones."""
    import keras

    from maivar_tf.models.backbones import init_backbone
    from maivar_tf.models.heads import build_audio_mlp, build_fusion_mlp, build_video_mlp

    cfg = tiny_config(root)
    features_dir, run_dir = root / "features", root / "run"
    video_bb, video_spec = init_backbone("video", "none", 224, features_dir, seed=0)
    audio_bb, audio_spec = init_backbone("audio", "none", 299, features_dir, seed=1)
    FeatureInfo(fingerprint="full", num_segments=K, video_dim=1024, audio_dim=1536,
                crop_size=224, ten_crop=False, video_backbone=video_spec,
                audio_backbone=audio_spec, class_names=CLASSES, config=cfg.to_dict(),
                tfrecords_schema_version=1).write(features_dir)
    keras.utils.set_random_seed(3)
    vmlp = build_video_mlp(len(CLASSES), K, cfg.model)
    heads = {"vmlp": vmlp, "audio_mlp": build_audio_mlp(len(CLASSES), cfg.model),
             "fusion": build_fusion_mlp(vmlp, cfg.model, seed=4)}
    run_dir.mkdir()
    for name, model in heads.items():
        model.save(run_dir / f"{name}.keras")
    RunInfo(class_names=CLASSES, representation=REPRESENTATION, num_segments=K,
            video_feature_dim=1024, audio_feature_dim=1536, config=cfg.to_dict(),
            features_dir=str(features_dir)).write(run_dir)
    return cfg, run_dir, features_dir, video_bb, audio_bb, heads["fusion"]


@pytest.mark.slow
def test_full_size_export_serves_the_backbones_the_features_came_from(tmp_path, monkeypatch):
    from maivar_tf.serving import export as export_module

    cfg, run_dir, features_dir, video_bb, audio_bb, fusion = write_full_size_run(tmp_path)
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
    for saved, used in ((video_bb, served[0].video.model), (audio_bb, served[0].audio.model)):
        a, b = saved.get_weights(), used.get_weights()
        assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    info = read_export_info(path)
    assert info.provenance["video_backbone"].endswith("backbones/video.weights.h5")
    assert info.provenance["audio_backbone"].endswith("backbones/audio.weights.h5")
    assert info.provenance["features_dir"] == str(features_dir)
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
    # the served backbones are the saved ones: media through them and the fusion head
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (1, K, 256, 300, 3), dtype=np.uint8)
    image = rng.integers(0, 256, (1, 299, 299, 3), dtype=np.uint8)
    out = as_numpy_outputs(loaded.signatures[SIGNATURE_MEDIA](
        frames=tf.constant(frames), audio_image=tf.constant(image)))
    crop = frames[0, :, 16:240, 38:262].astype(np.float32)
    video = np.asarray(video_bb(crop, training=False)).reshape(1, K, 1024)
    audio = np.asarray(audio_bb(image.astype(np.float32), training=False))
    # a run recorded without a temperature serves the plain softmax
    assert info.temperature == 1.0
    check_outputs(out, keras_probabilities(fusion, video, audio, temperature=1.0), atol=1e-4)

"""A tiny trained run on disk and the reference computations the serving tests compare against.

The run has the real head architecture (VMLP, fusion MLP) over the stand-in backbones of
``tests/tiny_models.py``: K=2 segments, 6 classes, hidden width 8. Its heads standardise their
inputs with the statistics of what the backbones make of three real clips (so every real clip
gets a spread-out softmax), and the fusion MLP's audio rows start Glorot-uniform (so the audio
path changes the outputs). Nothing is trained: the serving code does not care how the weights
were found. Its run info records a fusion temperature of :data:`TEMPERATURE`, so every
signature check also checks that the served probabilities are ``softmax(logits / T)``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

K = 2
CLASSES = ("Bounce_Chime", "Bounce_Drum", "Slide_Chime", "Slide_Drum", "Spin_Chime",
           "Spin_Drum")
REPRESENTATION = "chromagram"
MODEL_NAME = "tiny"
#: The tiny run's fusion temperature (as if fitted on a validation split).
TEMPERATURE = 1.7


def tiny_config(root: Path, *, ten_crop: bool = False, short_side: int = 256):
    """The experiment of the tiny run (folders under ``root``)."""
    from maivar_tf.config import load_config

    return load_config(None, [
        f"name={MODEL_NAME}", f"data.num_segments={K}", f"data.representations=[{REPRESENTATION}]",
        f"data.frame_short_side={short_side}", f"data.output_dir={root / 'tfrecords'}",
        f"data.features_dir={root / 'features'}", f"train.output_dir={root / 'run'}",
        f"model.representation={REPRESENTATION}", "model.video_pooling=flatten",
        "model.hidden_units=8", "model.dropout=0.0", "model.l1=0.0",
        "model.audio_rows_init=glorot_uniform", f"extract.ten_crop={ten_crop}"])


def reference_statistics(video_fn, audio_fn, cfg, clip_paths) -> dict[str, np.ndarray]:
    """Mean and variance of the tiny backbones' features of three real clips."""
    from maivar_tf.models.heads import feature_statistics
    from maivar_tf.predict import prepare_clips

    prepared, failures = prepare_clips([str(p) for p in clip_paths[:3]], cfg, REPRESENTATION)
    assert not failures, failures
    video = np.asarray(video_fn(np.concatenate([p.frames for p in prepared])))
    audio = np.asarray(audio_fn(np.stack([p.audio_image for p in prepared])))
    v_mean, v_var = feature_statistics(video)
    a_mean, a_var = feature_statistics(audio)
    return {"v_mean": v_mean, "v_var": v_var, "a_mean": a_mean, "a_var": a_var}


def save_heads(cfg, heads: dict, num_segments: int, **run_info) -> tuple[Path, Path]:
    """Saves ``{stage: model}`` and a ``run_info.json`` of the tiny backbones' widths into
    ``train.output_dir``; returns ``(run_dir, features_dir)`` (the latter not written)."""
    from maivar_tf.artifacts import RunInfo
    from tests.tiny_models import TINY_AUDIO_DIM, TINY_VIDEO_DIM

    run_dir, features_dir = Path(cfg.train.output_dir), Path(cfg.data.features_dir)
    run_dir.mkdir(parents=True)
    for name, model in heads.items():
        model.save(run_dir / f"{name}.keras")
    RunInfo(class_names=CLASSES, representation=REPRESENTATION, num_segments=num_segments,
            video_feature_dim=TINY_VIDEO_DIM, audio_feature_dim=TINY_AUDIO_DIM,
            config=cfg.to_dict(), features_dir=str(features_dir), **run_info).write(run_dir)
    return run_dir, features_dir


def write_tiny_run(root: Path, clip_paths, *, ten_crop: bool = False) -> SimpleNamespace:
    """Writes the tiny run (heads, ``run_info.json``, ``feature_info.json``) under ``root``.

    Returns:
        ``cfg``, ``run_dir``, ``features_dir``, the Keras backbones ``video_bb``/``audio_bb``
        and the :class:`~maivar_tf.runs.ServableRun` ``run`` loaded back from disk.
    """
    import keras

    from maivar_tf.artifacts import FeatureInfo
    from maivar_tf.models.backbones import BackboneFeatures, injected_spec
    from maivar_tf.models.heads import build_audio_mlp, build_fusion_mlp, build_video_mlp
    from maivar_tf.runs import load_servable_run
    from tests.tiny_models import (
        TINY_AUDIO_DIM,
        TINY_VIDEO_DIM,
        tiny_audio_backbone,
        tiny_video_backbone,
    )

    cfg = tiny_config(root, ten_crop=ten_crop)
    video_bb, audio_bb = tiny_video_backbone(), tiny_audio_backbone()
    stats = reference_statistics(BackboneFeatures(video_bb, (224, 224, 3)),
                                 BackboneFeatures(audio_bb, (299, 299, 3)), cfg, clip_paths)
    keras.utils.set_random_seed(3)
    n = len(CLASSES)
    heads = {"vmlp": build_video_mlp(n, K, cfg.model, stats["v_mean"], stats["v_var"],
                                     feature_dim=TINY_VIDEO_DIM),
             "audio_mlp": build_audio_mlp(n, cfg.model, stats["a_mean"], stats["a_var"],
                                          feature_dim=TINY_AUDIO_DIM)}
    heads["fusion"] = build_fusion_mlp(heads["vmlp"], cfg.model, stats["a_mean"],
                                       stats["a_var"], audio_dim=TINY_AUDIO_DIM, seed=4)
    run_dir, features_dir = save_heads(cfg, heads, K, calibration={"temperature": TEMPERATURE,
                                                                   "fitted": True})
    FeatureInfo(fingerprint="tiny", num_segments=K, video_dim=TINY_VIDEO_DIM,
                audio_dim=TINY_AUDIO_DIM, crop_size=224, ten_crop=ten_crop,
                video_backbone=injected_spec(video_bb, 224),
                audio_backbone=injected_spec(audio_bb, 299), class_names=CLASSES,
                config=cfg.to_dict(), tfrecords_schema_version=1).write(features_dir)
    run = load_servable_run(cfg, run_dir, backbones=(video_bb, audio_bb))
    return SimpleNamespace(cfg=cfg, run_dir=run_dir, features_dir=features_dir,
                           video_bb=video_bb, audio_bb=audio_bb, run=run)


# ----------------------------------------------------------------------------- references


def keras_probabilities(fusion, video: np.ndarray, audio: np.ndarray,
                        temperature: float = TEMPERATURE) -> np.ndarray:
    """The fusion head called as a plain Keras model, then ``softmax(logits / temperature)``
    (NumPy, float64; default: the tiny run's temperature)."""
    logits = np.asarray(fusion({"video_features": video, "audio_features": audio},
                               training=False), np.float64) / temperature
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def keras_media_probabilities(run, crops: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Backbones and head called as plain Keras models on centre crops ``[B, K, c, c, 3]``."""
    b, k = crops.shape[:2]
    flat = crops.reshape((b * k,) + crops.shape[2:]).astype(np.float32)
    video = np.asarray(run.video.model(flat, training=False)).reshape(b, k, -1)
    audio = np.asarray(run.audio.model(images.astype(np.float32), training=False))
    return keras_probabilities(run.fusion, video, audio, run.temperature)


def check_outputs(out: dict, probs: np.ndarray, atol: float = 1e-5,
                  classes: tuple[str, ...] = CLASSES) -> None:
    """A signature's outputs agree with reference probabilities (top-k names and scores too)."""
    from maivar_tf.serving import OUTPUT_KEYS

    assert set(out) == set(OUTPUT_KEYS)
    np.testing.assert_allclose(out["probabilities"], probs, atol=atol, rtol=1e-4)
    np.testing.assert_allclose(out["probabilities"].sum(-1), 1.0, atol=1e-5)
    top = np.argsort(-probs, axis=-1, kind="stable")[:, :5]
    np.testing.assert_allclose(out["top_scores"], np.take_along_axis(probs, top, -1),
                               atol=atol, rtol=1e-4)
    for row_classes, row_scores, row_top, row_p in zip(out["top_classes"], out["top_scores"],
                                                      top, probs, strict=True):
        assert list(row_scores) == sorted(row_scores, reverse=True)
        # class names follow the scores (ties within tolerance may swap places)
        for name, score in zip(row_classes, row_scores, strict=True):
            assert abs(row_p[classes.index(name)] - score) < 1e-4
        assert row_classes[0] == classes[row_top[0]] or \
            abs(row_p[row_top[0]] - row_p[classes.index(row_classes[0])]) < 1e-4

"""A tiny temporal-binding run with a localiser on disk, for the serving and predict tests.

The real heads (:func:`maivar_tf.models.temporal.build_temporal_binding` from a mean-pooling
VMLP, :func:`~maivar_tf.models.temporal.build_localiser`) over the stand-in backbones of
``tests/tiny_models.py``: K=4 segments, the classes of :mod:`tests.serving.helpers`, hidden
width 8, ``data.segment_audio`` and ``data.on_missing_audio: silence``. Nothing is trained.
The localiser's background bias is set so that the first real clip's segments are split
between event and background (so ``--segments`` has spans to find and gaps between them).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from tests.serving.helpers import CLASSES, REPRESENTATION, save_heads

TB_K = 4
TB_MODEL_NAME = "tiny_tb"


def temporal_config(root: Path):
    """The experiment of the tiny temporal-binding run (folders under ``root``)."""
    from maivar_tf.config import load_config

    return load_config(None, [
        f"name={TB_MODEL_NAME}", f"data.num_segments={TB_K}",
        f"data.representations=[{REPRESENTATION}]", "data.segment_audio=true",
        "data.on_missing_audio=silence", f"data.output_dir={root / 'tfrecords'}",
        f"data.features_dir={root / 'features'}", f"train.output_dir={root / 'run'}",
        f"model.representation={REPRESENTATION}", "model.video_pooling=mean",
        "model.hidden_units=8", "model.dropout=0.0", "model.l1=0.0",
        "model.audio_rows_init=glorot_uniform", "model.fusion=temporal_binding",
        "model.localisation=true"])


def segment_media(cfg, paths):
    """The prepared clips (frames, per-segment audio-images) of ``paths`` under ``cfg``."""
    from maivar_tf.predict import prepare_clips

    prepared, failures = prepare_clips([str(p) for p in paths], cfg, REPRESENTATION,
                                       segment_audio=True)
    assert not failures, failures
    return prepared


def keras_segment_outputs(run, frames: np.ndarray, images: np.ndarray) -> dict:
    """Backbones, fusion and localiser called as plain Keras models on centre crops
    ``[B, K, c, c, 3]`` and per-segment audio-images ``[B, K, S, S, 3]``."""
    b, k = frames.shape[:2]
    v = np.asarray(run.video.model(frames.reshape((b * k,) + frames.shape[2:]).astype(
        np.float32), training=False)).reshape(b, k, -1)
    a = np.asarray(run.audio.model(images.reshape((b * k,) + images.shape[2:]).astype(
        np.float32), training=False)).reshape(b, k, -1)
    inputs = {"video_features": v, "audio_segment_features": a}
    logits = np.asarray(run.fusion(inputs, training=False), np.float64) / run.temperature
    seg = np.asarray(run.localiser(inputs, training=False), np.float64)

    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    return {"video": v, "audio": a, "probabilities": softmax(logits),
            "segment_scores": softmax(seg)}


def write_temporal_run(root: Path, clip_paths, video_bb, audio_bb,
                       calibration=None) -> SimpleNamespace:
    """Writes the tiny temporal-binding run under ``root``; returns ``cfg``, ``run_dir``,
    ``run`` (the :class:`~maivar_tf.runs.ServableRun` loaded back) and ``silent`` (the silent
    audio features recorded in its ``feature_info.json``).

    ``calibration``: a prepared clip (per-segment audio-images) whose segments the localiser's
    background bias splits into events and background; default the first clip's frames with
    its clip-level audio-image for every segment.
    """
    import keras

    from maivar_tf.artifacts import DEFAULT_AUDIO_BACKBONE, AudioFeatures, FeatureInfo
    from maivar_tf.features.silent import silent_features
    from maivar_tf.models.backbones import BackboneFeatures, injected_spec
    from maivar_tf.models.heads import build_audio_mlp, build_video_mlp, feature_statistics
    from maivar_tf.models.temporal import build_localiser, build_temporal_binding
    from maivar_tf.runs import load_servable_run
    from tests.tiny_models import TINY_AUDIO_DIM, TINY_VIDEO_DIM

    cfg = temporal_config(root)
    video_fn = BackboneFeatures(video_bb, (224, 224, 3))
    audio_fn = BackboneFeatures(audio_bb, (299, 299, 3))
    from maivar_tf.predict import prepare_clips

    prepared, failures = prepare_clips([str(p) for p in clip_paths[:2]], cfg, REPRESENTATION)
    assert not failures, failures
    v = np.asarray(video_fn(np.concatenate([p.frames for p in prepared])))
    a = np.asarray(audio_fn(np.stack([p.audio_image for p in prepared])))
    (v_mean, v_var), (a_mean, a_var) = feature_statistics(v), feature_statistics(a)
    keras.utils.set_random_seed(5)
    n = len(CLASSES)
    vmlp = build_video_mlp(n, TB_K, cfg.model, v_mean, v_var, feature_dim=TINY_VIDEO_DIM)
    heads = {"vmlp": vmlp,
             "audio_mlp": build_audio_mlp(n, cfg.model, a_mean, a_var,
                                          feature_dim=TINY_AUDIO_DIM),
             "fusion": build_temporal_binding(vmlp, cfg.model, a_mean, a_var,
                                              audio_dim=TINY_AUDIO_DIM, seed=6)}
    localiser = build_localiser(heads["fusion"], n, cfg.model, units=8)
    # background bias: the median margin of the first clip's segments, so about half are events
    if calibration is None:
        seg_audio = np.repeat(a[:1], TB_K, axis=0)
    else:
        v = np.asarray(video_fn(calibration.frames))
        seg_audio = np.asarray(audio_fn(calibration.audio_image))
    x = {"video_features": v[:TB_K][None], "audio_segment_features": seg_audio[None]}
    logits = np.asarray(localiser(x, training=False))[0]
    dense = localiser.get_layer("segment_logits")
    kernel, bias = (np.asarray(w) for w in dense.get_weights())
    margin = logits[:, :n].max(-1) - logits[:, n]
    bias[n] += float(np.sort(margin)[TB_K // 2 - 1] + np.sort(margin)[TB_K // 2]) / 2
    dense.set_weights([kernel, bias])
    heads["localiser"] = localiser
    run_dir, features_dir = save_heads(cfg, heads, TB_K)
    silent = silent_features(audio_fn, (REPRESENTATION,), cfg.data.audio)
    audio_spec = injected_spec(audio_bb, 299)
    FeatureInfo(fingerprint="tiny-tb", num_segments=TB_K, video_dim=TINY_VIDEO_DIM,
                audio_dim=TINY_AUDIO_DIM, crop_size=224, ten_crop=False,
                video_backbone=injected_spec(video_bb, 224), audio_backbone=audio_spec,
                class_names=CLASSES, config=cfg.to_dict(), tfrecords_schema_version=2,
                audio_backbones={DEFAULT_AUDIO_BACKBONE: AudioFeatures(
                    audio_spec, TINY_AUDIO_DIM, silent={
                        REPRESENTATION: tuple(silent[REPRESENTATION].tolist())})}
                ).write(features_dir)
    run = load_servable_run(cfg, run_dir, backbones=(video_bb, audio_bb))
    return SimpleNamespace(cfg=cfg, run_dir=run_dir, run=run, silent=silent[REPRESENTATION])

"""Predict time per clip with audio-guided segment selection (``audio_topk``, k) against all K.

Listen to Look (Gao et al., CVPR 2020): a cheap audio preview of the K segments decides which
k frames the expensive visual network sees. This runs the code ``maivar predict --run-dir``
runs (a :class:`~maivar_tf.serving.predictors.RunPredictor`) on the real clips of
``../shared/testdata/clips`` with the REAL-size networks of ``configs/synthetic_untrimmed.yaml``
(random weights: the cost does not depend on them): BNInception at 128 px per selected frame,
ResNet18 at 128 px per selected segment's audio-image (the temporal-binding fusion's audio
backbone), MobileNetV3-Small at 128 px on all K audio-images (the preview), a saliency scorer
and the temporal-binding head (K = 16). Two runs: full K (no selection) and ``audio_topk``
k = 4.

Decoding and rendering the clip (the K frames and K audio-images) are the same for both and
are done once, outside the timing; what is timed per clip is the predictor call (preview +
selection, backbones, head), and, separately, the ``serve_media`` graph in one call (what an
export runs). The first call of each is a warm-up (tracing) and is not counted; figures are
medians over clips x repetitions. The preview share is the predictor's ``preview`` stage
(MobileNetV3-Small on K audio-images + the scorer + top k) over its total.

Usage:
    python benchmarks/bench_selection.py [--budget 4] [--repeats 5] [--clips DIR] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from clip_bench import DEFAULT_CLIPS, REPO_ROOT, add_threads_flag, set_threads, video_files  # noqa: E402

CONFIG = REPO_ROOT / "configs" / "synthetic_untrimmed.yaml"
NUM_CLASSES = 8


def build_runs(cfg, budget: int):
    """``(full K run, audio_topk run)``: the same random-weight networks in both."""
    import keras

    from maivar_tf.models.backbones import BackboneFeatures, build_backbone
    from maivar_tf.models.heads import build_video_mlp
    from maivar_tf.models.saliency import build_saliency_scorer
    from maivar_tf.models.temporal import build_temporal_binding
    from maivar_tf.runs import ServableRun, selection_config

    keras.utils.set_random_seed(0)
    k, crop, size = cfg.data.num_segments, cfg.data.crop_size, cfg.data.audio.image_size
    video = BackboneFeatures(build_backbone("video", "none", crop), (crop, crop, 3))
    audio = BackboneFeatures(build_backbone("audio", "none", size,
                                            architecture=cfg.model.audio_backbone),
                             (size, size, 3))
    preview = BackboneFeatures(build_backbone("audio", "none", size,
                                              architecture=cfg.model.preview_backbone),
                               (size, size, 3))
    model_cfg = dataclasses.replace(cfg.model, video_pooling="mean")
    vmlp = build_video_mlp(NUM_CLASSES, k, model_cfg, feature_dim=video.dim)
    fusion = build_temporal_binding(vmlp, model_cfg, audio_dim=audio.dim)
    scorer = build_saliency_scorer(NUM_CLASSES, k, preview.dim, "clip", dropout=0.0)
    classes = tuple(f"class_{i:02d}" for i in range(NUM_CLASSES))
    full = ServableRun(fusion=fusion, video=video, audio=audio, class_names=classes, cfg=cfg,
                       num_segments=k, representation=cfg.model.representation)
    topk = dataclasses.replace(full, cfg=selection_config(cfg, "audio_topk", budget),
                               selection="audio_topk", budget=budget, preview=preview,
                               saliency=scorer)
    return full, topk


def time_predictor(predictor, clips, repeats: int) -> tuple[list[float], list[dict]]:
    """Per call (clip x repetition): the wall ms of the predictor call, and its stage ms."""
    predictor(clips[0].frames[None], clips[0].audio_image[None])  # warm-up: tracing
    totals, stages = [], []
    for _ in range(repeats):
        for clip in clips:
            t0 = time.perf_counter()
            _, ms = predictor(clip.frames[None], clip.audio_image[None])
            totals.append(1000 * (time.perf_counter() - t0))
            stages.append(ms)
    return totals, stages


def time_graph(module, clips, repeats: int) -> list[float]:
    """Per call: the wall ms of one ``serve_media`` call (the exported graph)."""
    import tensorflow as tf

    def call(clip):
        out = module.serve_media(tf.constant(clip.frames[None]), tf.constant(clip.audio_image[None]))
        out["probabilities"].numpy()

    call(clips[0])  # warm-up: tracing
    times = []
    for _ in range(repeats):
        for clip in clips:
            t0 = time.perf_counter()
            call(clip)
            times.append(1000 * (time.perf_counter() - t0))
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clips", default=str(DEFAULT_CLIPS))
    add_threads_flag(parser)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    from maivar_tf.config import load_config
    from maivar_tf.predict import prepare_clips
    from maivar_tf.serving import serving_module
    from maivar_tf.serving.predictors import RunPredictor

    cfg = load_config(CONFIG, [])
    paths = [str(p) for p in video_files(args.clips)]
    if not paths:
        print(f"no clips in {args.clips}", file=sys.stderr)
        return 1
    clips, failures = prepare_clips(paths, cfg, cfg.model.representation, segment_audio=True)
    for f in failures:
        print(f.line(), file=sys.stderr)
    k_all = cfg.data.num_segments
    print(f"audio_topk k={args.budget} vs all K={k_all}: BNInception {cfg.data.crop_size}px, "
          f"{cfg.model.audio_backbone} {cfg.data.audio.image_size}px, preview "
          f"{cfg.model.preview_backbone} {cfg.data.audio.image_size}px; {len(clips)} clips x "
          f"{args.repeats} repetitions, warm-up excluded, medians; cores={os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    full, topk = build_runs(cfg, args.budget)
    rows = {}
    for name, run in (("full K", full), (f"audio_topk k={args.budget}", topk)):
        totals, stages = time_predictor(RunPredictor(run), clips, args.repeats)
        graph = time_graph(serving_module(run), clips, args.repeats)
        rows[name] = (totals, stages, graph)
    print(f"{'':<16} {'predict ms/clip':>16} {'serve_media ms/clip':>20}")
    for name, (totals, _, graph) in rows.items():
        print(f"{name:<16} {statistics.median(totals):16.1f} {statistics.median(graph):20.1f}")
    (full_t, _, full_g), (top_t, top_s, top_g) = rows.values()
    print(f"ratio audio_topk / full: predict {statistics.median(top_t) / statistics.median(full_t):.3f}, "
          f"serve_media {statistics.median(top_g) / statistics.median(full_g):.3f}")
    share = [s["preview"] / sum(s.values()) for s in top_s]
    parts = {key: statistics.median(s[key] for s in top_s) for key in top_s[0]}
    print("audio_topk stages (median ms): " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items())
          + f"; preview share {100 * statistics.median(share):.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())

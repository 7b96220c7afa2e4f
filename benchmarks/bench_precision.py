"""Feature agreement of bfloat16 backbones with float32 ones on the real test clips.

Each clip of ``--clips`` (default ``../shared/testdata/clips``) is decoded exactly as the Beam
job and ``maivar predict`` decode it (:func:`maivar_tf.predict.prepare_clips`: K frames, centre
crop, the configured audio-images), then goes through the full-size video backbone
(BNInception at ``data.crop_size``) and audio backbone (``model.audio_backbone``,
InceptionResNetV2 at 299 by default), each built twice from the same random weights (drawn in
float32 from ``--seed``): once in float32 and once in ``extract.precision=bfloat16`` (Keras'
``mixed_bfloat16``). Prints, per backbone, the cosine similarity of every feature vector (one per
frame, one per audio-image) bfloat16 vs float32: min and mean, the same after removing the
float32 features' mean vector (random networks give every input a large shared component,
which alone makes plain cosines close to 1), and the relative L2 error.

Random-weight networks are not trained ones: their activations have other scales and their
features can be closer to (or farther from) the float32 ones than a trained network's; the
output says so. The figure that matters for the project is the demo's accuracies with bfloat16
features, measured with the pipeline itself (the demo's backbones are random too)::

    maivar extract --config configs/synthetic.yaml --set extract.precision=bfloat16 \\
        --set data.features_dir=data/features_bf16
    maivar train --config configs/synthetic.yaml --set extract.precision=bfloat16 \\
        --set data.features_dir=data/features_bf16 --set train.output_dir=runs/synthetic_bf16
    maivar evaluate --config configs/synthetic.yaml --set data.features_dir=data/features_bf16 \\
        --set train.output_dir=runs/synthetic_bf16

(the float32 run being the usual ``maivar demo``; a bfloat16 folder has its own fingerprint, so
it must be another ``data.features_dir``; its random weights are drawn in float32 from the same
seed, so both folders come from the same backbones). ``--print-commands`` prints these.

Usage::

    python benchmarks/bench_precision.py                      # ~1-2 min on 2 cores
    python benchmarks/bench_precision.py --json precision.json --set data.num_segments=3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from clip_bench import add_threads_flag, set_threads, video_files  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIPS = ROOT.parent / "shared" / "testdata" / "clips"
COMMANDS = __doc__.split("::\n\n")[1].split("\n\n(")[0]
NOTE = ("note: random-weight backbones (seeded), not trained ones: their activation scales "
        "differ from a trained network's, so these cosines may exaggerate or understate the "
        "bfloat16 error of trained weights")


def clip_images(cfg, paths) -> tuple[dict, list]:
    """``{"video": uint8 [N, c, c, 3], "audio": uint8 [M, S, S, 3]}`` of the clips (every
    representation's audio-image) and the failures."""
    import numpy as np

    from maivar_tf.predict import prepare_clips

    frames, images, failed = [], [], []
    for i, rep in enumerate(cfg.data.representations):
        prepared, failures = prepare_clips(paths, cfg, rep)
        failed += failures
        images += [p.audio_image for p in prepared]
        if i == 0:
            frames = [f for p in prepared for f in p.frames]
    return {"video": np.stack(frames), "audio": np.stack(images)}, failed


def cosines(a, b):
    """Row-wise cosine similarity."""
    import numpy as np

    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return (a * b).sum(-1) / np.maximum(norms, 1e-30)


def agreement(kind: str, arch: str, side: int, images, seed: int, weights_dir: Path,
              batch: int) -> dict:
    """Cosine similarity and relative L2 error, per feature vector, bfloat16 vs float32."""
    import keras
    import numpy as np

    from maivar_tf.models.backbones import BackboneFeatures, build_backbone

    keras.utils.set_random_seed(seed)
    m32 = build_backbone(kind, "none", side, architecture=arch)
    path = weights_dir / f"{kind}.weights.h5"
    m32.save_weights(path)
    m16 = build_backbone(kind, str(path), side, architecture=arch, precision="bfloat16")
    shape = (side, side, 3)
    f32 = np.asarray(BackboneFeatures(m32, shape)(images, max_images=batch), np.float64)
    f16 = np.asarray(BackboneFeatures(m16, shape)(images, max_images=batch), np.float64)
    cosine = cosines(f32, f16)
    mean = f32.mean(axis=0)  # what every vector shares; the rest tells clips apart
    centred = cosines(f32 - mean, f16 - mean)
    rel = np.linalg.norm(f16 - f32, axis=-1) / np.maximum(np.linalg.norm(f32, axis=-1), 1e-30)
    return {"backbone": f"{arch}@{side}", "vectors": len(images), "dim": f32.shape[-1],
            "cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean()),
            "centred_cosine_min": float(centred.min()),
            "centred_cosine_mean": float(centred.mean()),
            "rel_l2_max": float(rel.max()), "rel_l2_mean": float(rel.mean()),
            "feature_rms": float(np.sqrt((f32 ** 2).mean()))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", default=str(DEFAULT_CLIPS), help="folder of video files")
    parser.add_argument("--config", default=str(ROOT / "configs" / "synthetic.yaml"))
    parser.add_argument("--set", action="append", default=[], help="config override")
    parser.add_argument("--seed", type=int, default=0, help="the random weights' seed")
    parser.add_argument("--batch", type=int, default=32, help="images per backbone call")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--print-commands", action="store_true",
                        help="print how to measure the demo's accuracies in bfloat16, and exit")
    add_threads_flag(parser)
    args = parser.parse_args(argv)
    if args.print_commands:
        print(COMMANDS)
        return 0
    set_threads(args.threads)
    from maivar_tf.config import load_config
    from maivar_tf.models.precision import check_precision

    cfg = load_config(args.config, overrides=args.set)
    check_precision("bfloat16")  # refuses (with the reason) where bfloat16 is emulated
    paths = [str(p) for p in video_files(args.clips)]
    images, failures = clip_images(cfg, paths)
    for f in failures:
        print(f"skipped: {f.line()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, arch, side in (("video", cfg.model.video_backbone, cfg.data.crop_size),
                                 ("audio", cfg.model.audio_backbone,
                                  cfg.data.audio.image_size)):
            rows.append({"kind": kind, **agreement(kind, arch, int(side), images[kind],
                                                   args.seed + (kind == "audio"), Path(tmp),
                                                   args.batch)})
    print(f"{len(paths) - len(failures)} clips, K={cfg.data.num_segments}, "
          f"{len(cfg.data.representations)} audio-images per clip; bfloat16 vs float32, same "
          f"random weights (seed {args.seed})")
    print(f"{'backbone':<28} {'vectors':>7} {'cos min':>9} {'cos mean':>9} {'centred min':>11} "
          f"{'centred mean':>12} {'relL2 max':>9} {'relL2 mean':>10}")
    for r in rows:
        print(f"{r['kind'] + ' ' + r['backbone']:<28} {r['vectors']:>7} {r['cosine_min']:>9.5f} "
              f"{r['cosine_mean']:>9.5f} {r['centred_cosine_min']:>11.5f} "
              f"{r['centred_cosine_mean']:>12.5f} {r['rel_l2_max']:>9.4f} "
              f"{r['rel_l2_mean']:>10.4f}")
    print("centred: both minus the float32 features' mean over the vectors (the part that "
          "tells clips apart)")
    print(NOTE)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "note": NOTE,
                                               "load_average": os.getloadavg()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

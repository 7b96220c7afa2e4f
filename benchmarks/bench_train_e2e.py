"""End-to-end training throughput: the VMLP stage fed from TFRecords, against its parts.

Builds (once, cached; :mod:`bench_extract`'s shards: the embedded dataset's real H.264/AAC
videos through the one decode path) a small TFRecord set, then for the tiny and the full
BNInception prints, in training examples (clips of K frames) per second:

  (a) the model alone: ``model.fit`` of the VMLP stage (BNInception fine-tuned with partial
      BatchNorm and the backbone learning rate, the VMLP on the consensus) on one decoded batch
      held in memory and re-fed,
  (b) the input pipeline alone: :class:`maivar_tf.end_to_end_data.TFRecordInput` in training
      mode (JPEG decode, random segment offsets, multi-scale crop and flip every clip),
      iterated without a model,
  (c) ``model.fit`` fed by that pipeline, as ``maivar train`` runs it,

and the ratio (c) / min(a, b) against the target 0.9: with the pipeline fast enough, training
runs at the speed of its slower part. On a CPU the two also share the cores, so when both are
CPU-heavy (the tiny BNInception decodes about as fast as it trains) the bound is
``1 / (1/a + 1/b)``, the rate of doing both jobs one after the other on the same cores; the
ratio (c) to that bound is printed too (1.0: nothing lost beyond sharing the cores). Each
figure is the best of ``--repeats`` passes after a warm-up pass (tracing).

Usage::

    python benchmarks/bench_train_e2e.py                      # tiny and full, K = 8, batch 4
    python benchmarks/bench_train_e2e.py --models tiny --steps 40 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGET = 0.9
#: model.video_backbone and crop side of each benchmarked BNInception.
MODELS = {"tiny": ("bn_inception_tiny", 224), "full": ("bn_inception", 224)}


def _parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None, help="experiment YAML (K, frame size)")
    p.add_argument("--work_dir", default="data/bench_extract",
                   help="where the videos and shards go (shared with bench_extract.py)")
    p.add_argument("--per_class", type=int, default=4, help="train videos per class (8 classes)")
    p.add_argument("--num_segments", type=int, default=0, help="K (0: the config's)")
    p.add_argument("--representation", default="chromagram")
    p.add_argument("--batch", type=int, default=4, help="clips per step (global batch)")
    p.add_argument("--models", default="tiny,full", help="comma list of: tiny, full")
    p.add_argument("--steps", type=int, default=0,
                   help="steps per timed pass (0: 40 for tiny, 8 for full)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default="")
    return p.parse_args(argv)


def _ids(data_dir: Path, split: str = "train") -> list[str]:
    import tensorflow as tf

    from maivar_tf.data import schema
    from maivar_tf.data.input_pipeline import shard_files

    ids = []
    for raw in tf.data.TFRecordDataset(shard_files(data_dir, split)):
        ids.append(schema.parse_sequence_example(raw, [])[schema.EXAMPLE_ID].numpy().decode())
    return ids


def _model(exp, arch: str, crop: int, num_classes: int):
    """The compiled VMLP stage: BNInception fine-tuned (partial BN, BackboneAdam) + VMLP."""
    import keras

    from maivar_tf.models.end_to_end import (
        BackboneAdam,
        build_stage_model,
        build_training_backbone,
        set_finetune,
    )
    from maivar_tf.models.heads import build_video_mlp

    keras.utils.set_random_seed(0)
    backbone = build_training_backbone("video", "none", crop, architecture=arch)
    set_finetune(backbone, True, partial_bn=True)
    dim = int(backbone.output_shape[-1])
    head = build_video_mlp(num_classes, exp.data.num_segments, exp.model, feature_dim=dim)
    model = build_stage_model("vmlp", head, video_backbone=backbone,
                              num_segments=exp.data.num_segments, crop_size=crop,
                              image_size=exp.data.audio.image_size)
    model.compile(optimizer=BackboneAdam(1e-4, backbone_variables=backbone.trainable_variables,
                                         multiplier=0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _rate(fn, examples: int, repeats: int) -> tuple[float, list[float]]:
    fn()  # warm-up: tracing, caches
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        rates.append(examples / (time.perf_counter() - t0))
    return max(rates), rates


def bench(exp, data_dir: Path, name: str, args) -> dict:
    import dataclasses

    import tensorflow as tf

    from maivar_tf.end_to_end_data import TFRecordInput

    arch, crop = MODELS[name]
    steps = args.steps or (40 if name == "tiny" else 8)
    data = dataclasses.replace(exp.data, crop_size=crop)
    source = TFRecordInput(data_dir, "train", data, ids=_ids(data_dir), frames=True,
                           audio_image=None)
    strategy = tf.distribute.get_strategy()
    ds, _ = source.distributed(strategy, args.batch, training=True, seed=0)
    model = _model(exp, arch, crop, num_classes=8)
    x, y = next(iter(ds))
    held = tf.data.Dataset.from_tensors((x, y)).repeat()
    examples = steps * args.batch

    def model_alone():
        model.fit(held, steps_per_epoch=steps, epochs=1, verbose=0)

    def pipeline_alone():
        for _ in zip(range(steps), ds, strict=False):
            pass

    def fed():
        model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)

    a, a_all = _rate(model_alone, examples, args.repeats)
    b, b_all = _rate(pipeline_alone, examples, args.repeats)
    c, c_all = _rate(fed, examples, args.repeats)
    return {"model": name, "architecture": arch, "crop": crop, "batch": args.batch,
            "num_segments": exp.data.num_segments, "steps": steps,
            "model_alone": a, "pipeline_alone": b, "fit_from_tfrecords": c,
            "pipeline_over_model": b / a, "fit_over_slower_part": c / min(a, b),
            "fit_over_shared_cores": c * (1 / a + 1 / b),
            "passes": {"model_alone": a_all, "pipeline_alone": b_all, "fit": c_all}}


def main(argv=None) -> int:
    args = _parse(argv)
    from bench_extract import _build_shards, _config

    exp = _config(args)
    data_dir = _build_shards(exp, Path(args.work_dir))
    print(f"load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = [bench(exp, data_dir, name, args) for name in args.models.split(",")]
    print(f"\n{'model':<6}{'(a) model':>12}{'(b) pipeline':>14}{'(c) fit':>10}"
          f"{'b/a':>8}{'c/min(a,b)':>12}{'c/shared':>10}   (clips/s, K={exp.data.num_segments}, "
          f"batch {args.batch}; target c/min >= {TARGET})")
    for r in rows:
        ok = "ok" if r["fit_over_slower_part"] >= TARGET else "BELOW TARGET"
        print(f"{r['model']:<6}{r['model_alone']:>12.2f}{r['pipeline_alone']:>14.2f}"
              f"{r['fit_from_tfrecords']:>10.2f}{r['pipeline_over_model']:>8.2f}"
              f"{r['fit_over_slower_part']:>12.3f}{r['fit_over_shared_cores']:>10.3f}   {ok}")
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "target": TARGET}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

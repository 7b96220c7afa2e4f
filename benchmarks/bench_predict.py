"""Per-clip latency of ``maivar predict`` on the real clips, split by stage.

Runs the very code ``maivar predict --run-dir`` runs (:func:`maivar_tf.predict.predict_files`
with a :class:`~maivar_tf.serving.predictors.RunPredictor`) with the full-size networks —
BNInception over K frames, InceptionResNetV2 over one audio-image, and the fusion MLP (random
weights: the cost does not depend on them) — and times each stage per clip:

* ``decode``: :func:`maivar_tf.data.video.load_clip` (PyAV demux/decode of K frames + audio
  resampling);
* ``render``: the rest of the Beam job's per-video function (JPEG-encode the frames, render the
  audio-image with the TF renderer, PNG-encode it);
* ``pipeline``: the shared decoder reading the record back in memory
  (:func:`maivar_tf.data.decode.decode_example`, traced once per predictor: parse, JPEG/PNG
  decode, centre crop);
* ``backbones``: BNInception + InceptionResNetV2;
* ``head``: the fusion MLP, softmax and top-k.

Each repeat is one ``maivar predict`` call over all the clips (after one warm-up call that
traces the functions, as a first prediction in a process would). It prints wall-clock and
process CPU milliseconds per stage (on a shared machine the wall time
includes waiting for a core; CPU time does not), and the ratio of the whole to the
backbones-only compute. Target: everything outside the backbones <= 25% of the total on 2 cores.

Usage:
    python benchmarks/bench_predict.py [--config configs/synthetic.yaml] [--repeats 3]
        [--clips DIR] [--per-file] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from clip_bench import DEFAULT_CLIPS, add_threads_flag, set_threads, video_files  # noqa: E402

STAGES = ("decode", "render", "pipeline", "backbones", "head")


class _Clock:
    """Wall and process-CPU time of a block."""

    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = 1000 * (time.perf_counter() - self.w0)
        self.cpu = 1000 * (time.process_time() - self.c0)


def build_predictor(cfg):
    """A RunPredictor over full-size backbones and a fusion MLP built from the config."""
    from maivar_tf.models.backbones import BackboneFeatures, build_backbone
    from maivar_tf.models.heads import build_fusion_mlp, build_video_mlp
    from maivar_tf.runs import ServableRun
    from maivar_tf.serving.predictors import RunPredictor

    classes = tuple(f"class_{i:02d}" for i in range(8))
    vmlp = build_video_mlp(len(classes), cfg.data.num_segments, cfg.model)
    crop, size = cfg.data.crop_size, cfg.data.audio.image_size
    run = ServableRun(
        fusion=build_fusion_mlp(vmlp, cfg.model),
        video=BackboneFeatures(build_backbone("video", "none", crop), (crop, crop, 3)),
        audio=BackboneFeatures(build_backbone("audio", "none", size), (size, size, 3)),
        class_names=classes, cfg=cfg, num_segments=cfg.data.num_segments,
        representation=cfg.model.representation, ten_crop=cfg.extract.ten_crop)
    return RunPredictor(run)


def timed_clip_fn(records: dict):
    """The Beam per-video function, recording per file its ``load_clip`` and total clocks."""
    import maivar_tf.data.video as video_mod
    from maivar_tf.data.clips import clip_example_from_record

    original = video_mod.load_clip

    def clip_fn(record, cfg):
        clocks = records.setdefault(record.path, {})

        def load_clip(*args, **kwargs):
            with _Clock() as c:
                out = original(*args, **kwargs)
            clocks["decode"] = c
            return out

        video_mod.load_clip = load_clip  # clip_example_from_record imports it at call time
        try:
            with _Clock() as c:
                out = clip_example_from_record(record, cfg)
        finally:
            video_mod.load_clip = original
        clocks["prepare"] = c
        return out

    return clip_fn


class _TimedPredictor:
    """Forwards to a predictor, keeping the wall/CPU clock and stage times of each call."""

    def __init__(self, predictor):
        self._predictor = predictor
        self.calls: list[tuple[_Clock, dict]] = []

    def __getattr__(self, name):
        return getattr(self._predictor, name)

    def __call__(self, frames, audio_image):
        with _Clock() as c:
            out, ms = self._predictor(frames, audio_image)
        self.calls.append((c, ms))
        return out, ms


def run_once(paths: list[str], predictor) -> dict[str, dict[str, tuple[float, float]]]:
    """One ``maivar predict`` call over ``paths``: per file ``{stage: (wall_ms, cpu_ms)}``.

    The CPU time of the call not spent in a per-file stage (the decoder's) is shared out over
    the files in proportion to each file's pipeline wall time.
    """
    import os.path

    from maivar_tf.predict import predict_files

    records: dict = {}
    timed = _TimedPredictor(predictor)
    with _Clock() as total:
        predictions, failures = predict_files(paths, timed, k=5, clip_fn=timed_clip_fn(records))
    if failures:
        raise RuntimeError(failures[0].line())
    assert len(timed.calls) == len(predictions) == len(paths)
    prep = [records[os.path.abspath(p)] for p in paths]
    pipeline_cpu = total.cpu - sum(r["prepare"].cpu for r in prep) - sum(
        c.cpu for c, _ in timed.calls)
    pipeline_wall = [p.timings_ms["pipeline"] for p in predictions]
    out = {}
    for path, rec, (clock, ms) in zip(paths, prep, timed.calls, strict=True):
        bb, hd = ms["backbones"], ms["head"]
        bb_cpu = clock.cpu * bb / max(bb + hd, 1e-9)  # one call, two stages: split by wall
        pipe_cpu = pipeline_cpu * pipeline_wall[len(out)] / max(sum(pipeline_wall), 1e-9)
        stages = {
            "decode": (rec["decode"].wall, rec["decode"].cpu),
            "render": (rec["prepare"].wall - rec["decode"].wall,
                       rec["prepare"].cpu - rec["decode"].cpu),
            "pipeline": (pipeline_wall[len(out)], pipe_cpu),
            "backbones": (bb, bb_cpu),
            "head": (hd, clock.cpu - bb_cpu),
        }
        stages["total"] = (sum(v[0] for v in stages.values()),
                           sum(v[1] for v in stages.values()))
        out[path] = stages
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None,
                        help="experiment YAML (default: maivar_tf.config.resolve_config_path's)")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--clips", default=str(DEFAULT_CLIPS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--per-file", action="store_true",
                        help="one `maivar predict` call per clip instead of one call for all")
    add_threads_flag(parser)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    from maivar_tf.config import load_config, resolve_config_path

    cfg = load_config(resolve_config_path(args.config), args.set)
    clips = video_files(args.clips)
    if not clips:
        print(f"no clips in {args.clips}", file=sys.stderr)
        return 1
    print(f"maivar predict latency: K={cfg.data.num_segments} frames {cfg.data.crop_size}px, "
          f"{cfg.model.representation} {cfg.data.audio.image_size}px, {len(clips)} clips, "
          f"median of {args.repeats}, {'one call per clip' if args.per_file else 'one call'}; "
          f"cores={os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    with _Clock() as c:
        predictor = build_predictor(cfg)
        run_once([str(clips[0])], predictor)  # traces the functions once (not counted)
    print(f"set-up (build + first-call tracing): {c.wall / 1000:.1f} s wall")

    paths = [str(p) for p in clips]
    if args.per_file:
        runs = [{k: v for p in paths for k, v in run_once([p], predictor).items()}
                for _ in range(args.repeats)]
    else:
        runs = [run_once(paths, predictor) for _ in range(args.repeats)]
    rows = {Path(path).name: {k: (statistics.median(r[path][k][0] for r in runs),
                                  statistics.median(r[path][k][1] for r in runs))
                              for k in (*STAGES, "total")}
            for path in paths}

    for which, idx in (("wall", 0), ("cpu", 1)):
        print(f"\nper clip, {which} ms:")
        header = f"{'clip':<42}" + "".join(f"{s:>10}" for s in (*STAGES, "total"))
        print(header + f"{'outside':>9}")
        sums = dict.fromkeys((*STAGES, "total"), 0.0)
        for name, r in rows.items():
            vals = {k: r[k][idx] for k in (*STAGES, "total")}
            for k in sums:
                sums[k] += vals[k]
            outside = 1 - vals["backbones"] / vals["total"]
            print(f"{name[:41]:<42}" + "".join(f"{vals[k]:10.1f}" for k in (*STAGES, "total"))
                  + f"{100 * outside:8.1f}%")
        n = len(rows)
        mean = {k: v / n for k, v in sums.items()}
        outside = 1 - mean["backbones"] / mean["total"]
        print(f"{'mean':<42}" + "".join(f"{mean[k]:10.1f}" for k in (*STAGES, "total"))
              + f"{100 * outside:8.1f}%")
        print(f"{which}: whole / backbones-only = {mean['total'] / mean['backbones']:.3f}; "
              f"outside the backbones {100 * outside:.1f}% of the total "
              f"(target <= 25%: {'met' if outside <= 0.25 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

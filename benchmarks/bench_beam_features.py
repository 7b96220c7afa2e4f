"""Feature extraction videos/s: ``maivar extract`` against the Beam job's RunInference stage.

On the embedded synthetic dataset (generated once into ``--work_dir``), three fresh processes:

  (a) the Beam job (DirectRunner) without ``--with_features``,
  (b) the same job with ``--with_features`` (the backbones in RunInference), and
  (c) ``extract_features`` (``maivar extract``) on (a)'s TFRecords,

each timed inside the process (from after the imports to the end: backbones built and traced,
every video, every shard and the feature_info written). The stage's cost is (b) - (a); its
videos/s, (c)'s and their ratio are printed. Same backbones, same ``extract.batch_size``, and
the same TF thread setting in every process (``--tf_threads``; the job's default 1 keeps
audio-images bit-identical across runner modes, 0 lets TF use every core as ``maivar extract``
does). Backbones: the tiny ones by default (``bn_inception_tiny`` at crop 112, ``resnet18`` at
64x64 audio-images); ``--full`` runs BNInception at 224 and InceptionResNetV2 at 299.

Usage::

    python benchmarks/bench_beam_features.py                       # tiny backbones, 24 videos
    python benchmarks/bench_beam_features.py --full --per_class 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TINY = ["model.video_backbone=bn_inception_tiny", "data.crop_size=112",
        "data.frame_short_side=128", "model.audio_backbone=resnet18", "data.audio.image_size=64"]
FULL = ["model.video_backbone=bn_inception", "data.crop_size=224", "data.frame_short_side=256",
        "model.audio_backbone=inception_resnet_v2", "data.audio.image_size=299"]


def _parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work_dir", default="data/bench_beam_features",
                   help="where the videos, TFRecords and features go")
    p.add_argument("--per_class", type=int, default=2, help="train videos per class (8 classes; 1 test video each)")
    p.add_argument("--num_segments", type=int, default=4, help="K")
    p.add_argument("--representations", default="chromagram", help="comma-separated")
    p.add_argument("--batch", type=int, default=4, help="extract.batch_size (videos per batch)")
    p.add_argument("--tf_threads", type=int, default=0,
                   help="TF intra-op threads in every process (0: TF's default, all cores)")
    p.add_argument("--full", action="store_true", help="full-size BNInception and IRV2")
    p.add_argument("--json", default="", help="also write the figures to this JSON file")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    p.add_argument("--child_out", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _overrides(args) -> list[str]:
    work = Path(args.work_dir).resolve()
    reps = json.dumps([r for r in args.representations.split(",") if r])
    return [*(FULL if args.full else TINY), "data.dataset=synthetic",
            f"data.video_root={json.dumps(str(work / 'videos'))}",
            f"data.synth.train_per_class={args.per_class}", "data.synth.test_per_class=1",
            f"data.num_segments={args.num_segments}", f"data.representations={reps}",
            "data.num_shards=2", f"extract.batch_size={args.batch}"]


def _job_argv(args, out: Path, features: Path | None) -> list[str]:
    argv = ["--runner=DirectRunner", f"--output_dir={out}", f"--tf_threads={args.tf_threads}"]
    for o in _overrides(args):
        argv += ["--set", o]
    if features is not None:
        argv += ["--with_features", f"--features_dir={features}"]
    return argv


def _videos(info) -> int:
    return sum(c["total"] for c in info.counts.values())


def child(args) -> int:
    """One timed run in this fresh process; writes ``{"seconds", "videos"}``."""
    from maivar_tf.console import import_tensorflow_quietly

    import_tensorflow_quietly()
    from beam import build_tfrecords
    from beam.transforms import limit_tf_threads

    limit_tf_threads(args.tf_threads)
    work = Path(args.work_dir).resolve()
    t0 = time.perf_counter()
    if args.child == "extract":
        from maivar_tf.artifacts import DatasetInfo
        from maivar_tf.config import load_config
        from maivar_tf.features import extract_features

        exp = load_config(None, overrides=_overrides(args))
        out = work / "features_extract"
        shutil.rmtree(out, ignore_errors=True)
        extract_features(exp, splits=("train", "test"), progress=False,
                         data_dir=work / "tfrecords", features_dir=out)
        videos = _videos(DatasetInfo.read(work / "tfrecords"))
    else:
        with_features = args.child == "job_features"
        out = work / ("tfrecords_features" if with_features else "tfrecords")
        features = work / "features_beam" if with_features else None
        rc = build_tfrecords.main(_job_argv(args, out, features))
        if rc != 0:
            return rc
        from maivar_tf.artifacts import DatasetInfo

        videos = _videos(DatasetInfo.read(out))
    Path(args.child_out).write_text(json.dumps({"seconds": time.perf_counter() - t0,
                                                "videos": videos}))
    return 0


def _run_child(args, mode: str) -> dict:
    out = Path(args.work_dir).resolve() / f".{mode}.json"
    argv = [sys.executable, __file__, "--child", mode, "--child_out", str(out),
            "--work_dir", args.work_dir, "--per_class", str(args.per_class),
            "--num_segments", str(args.num_segments), "--representations", args.representations,
            "--batch", str(args.batch), "--tf_threads", str(args.tf_threads)]
    if args.full:
        argv.append("--full")
    subprocess.run(argv, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def main(argv=None) -> int:
    args = _parse(argv)
    if args.child:
        return child(args)
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    plain = _run_child(args, "job")  # also generates the videos (first run)
    plain = _run_child(args, "job")  # timed with the videos already generated
    featured = _run_child(args, "job_features")
    extract = _run_child(args, "extract")
    n = plain["videos"]
    stage = featured["seconds"] - plain["seconds"]
    figures = {
        "videos": n, "backbones": "full" if args.full else "tiny", "batch": args.batch,
        "tf_threads": args.tf_threads, "job_s": plain["seconds"],
        "job_with_features_s": featured["seconds"], "stage_s": stage,
        "extract_s": extract["seconds"],
        "stage_videos_per_s": n / stage if stage > 0 else float("inf"),
        "extract_videos_per_s": n / extract["seconds"],
    }
    figures["stage_over_extract"] = figures["stage_videos_per_s"] / figures["extract_videos_per_s"]
    print(f"{n} videos, {figures['backbones']} backbones, batch {args.batch}, "
          f"TF threads {args.tf_threads or 'all'}")
    print(f"  Beam job            {plain['seconds']:7.1f} s")
    print(f"  Beam job + features {featured['seconds']:7.1f} s  -> RunInference stage "
          f"{stage:6.1f} s = {figures['stage_videos_per_s']:.2f} videos/s")
    print(f"  maivar extract      {extract['seconds']:7.1f} s  = "
          f"{figures['extract_videos_per_s']:.2f} videos/s")
    print(f"  stage / extract throughput: x{figures['stage_over_extract']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

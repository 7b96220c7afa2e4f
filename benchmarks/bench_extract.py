"""Backbone throughput fed from TFRecords through tf.data, against the same models in memory.

Builds (once, cached) a small embedded dataset and its TFRecord shards (real H.264/AAC videos
through the one decode path, ``clip_example_from_record``), then prints

  (a) BNInception frames/s on in-memory uint8 tensors (one decoded batch, re-fed),
  (b) BNInception frames/s fed by ``make_dataset`` (JPEG decode + centre crop every batch),
  (c) InceptionResNetV2 audio-images/s in memory, and
  (d) fed by ``make_dataset`` (PNG decode every batch),

and the ratios (b)/(a), (d)/(c) against the target 0.9. The pipeline runs decode from the
TFRecords on every pass (``repeat`` re-reads the files; nothing decoded is cached), and each
pipeline figure includes creating and destroying the iterator. Runs alternate in-memory and
pipeline passes and report the best and the median of ``--repeats`` each, in wall-clock time
and per CPU-second of this process (the latter barely moves with other load on a shared
machine). Both backbones are :class:`~maivar_tf.models.backbones.BackboneFeatures`, the traced
callables extraction and serving use. Finally ``extract_features`` itself is timed end to end
(reading, both backbones, writing shards, every input-shard boundary; the traced functions are
reused, so this is the steady state, not the one-off tracing) against the in-memory compute
per video.

On a shared machine the figures are noisy: the load average is printed before and after.

Usage::

    python benchmarks/bench_extract.py                     # 16 videos, K=8, batch 4
    python benchmarks/bench_extract.py --batches 6 --repeats 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET = 0.9


def _parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None,
                   help="experiment YAML for K, frame size and audio-image settings (default: "
                        "maivar_tf.config.resolve_config_path's)")
    p.add_argument("--work_dir", default="data/bench_extract",
                   help="where the videos, shards and features go")
    p.add_argument("--per_class", type=int, default=2, help="train videos per class (8 classes)")
    p.add_argument("--num_segments", type=int, default=0, help="K (0: the config's)")
    p.add_argument("--representation", default="chromagram", help="the audio-image to feed")
    p.add_argument("--batch", type=int, default=4, help="videos per batch")
    p.add_argument("--batches", type=int, default=6, help="batches per timed pass")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per mode")
    p.add_argument("--skip", default="", help="comma list to skip: video,audio,extract")
    p.add_argument("--json", default="", help="also write the figures to this JSON file")
    return p.parse_args(argv)


def _config(args):
    """The experiment: the config file, then this benchmark's data and extraction settings."""
    from maivar_tf.config import load_config, resolve_config_path

    work = Path(args.work_dir)
    overrides = [f"data.video_root={json.dumps(str(work / 'videos'))}",
                 f"data.output_dir={json.dumps(str(work / 'tfrecords'))}",
                 f"data.features_dir={json.dumps(str(work / 'features'))}",
                 "data.dataset=synthetic", "data.synth.num_motions=4", "data.synth.num_sounds=2",
                 f"data.synth.train_per_class={args.per_class}", "data.synth.test_per_class=1",
                 f"data.representations={json.dumps([args.representation])}",
                 f"model.representation={args.representation}",
                 f"extract.batch_size={args.batch}"]
    if args.num_segments:
        overrides.append(f"data.num_segments={args.num_segments}")
    return load_config(resolve_config_path(args.config), overrides)


def _build_shards(exp, work: Path) -> Path:
    """Videos -> TFRecords with the bare per-video function (cached by a marker file)."""
    import tensorflow as tf

    from beam.publish import make_dataset_info, summarize
    from maivar_tf.console import progress
    from maivar_tf.data.annotations import read_annotations
    from maivar_tf.data.audio_image import warm_up
    from maivar_tf.data.clips import clip_example_from_record
    from maivar_tf.data.schema import to_sequence_example
    from maivar_tf.data.synthetic import class_names, generate_dataset

    cfg = exp.data
    out = Path(cfg.output_dir)
    marker = out / "bench_config.json"
    key = json.dumps(exp.to_dict()["data"], sort_keys=True)
    if marker.exists() and marker.read_text() == key:
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    generate_dataset(cfg.video_root, cfg.synth, progress=True)
    records = [r for r in read_annotations(cfg).records if r.split == "train"]
    warm_up(cfg.audio, cfg.representations)
    names = [str(out / f"train-{i:05d}-of-00002.tfrecord") for i in range(2)]
    writers = [tf.io.TFRecordWriter(n) for n in names]
    counts: dict[tuple[str, int], int] = {}
    for i, rec in enumerate(progress(records, total=len(records), desc="TFRecords",
                                     unit="video")):
        clip = clip_example_from_record(rec, cfg)
        writers[i % 2].write(to_sequence_example(clip).SerializeToString())
        counts[("train", rec.label_index)] = counts.get(("train", rec.label_index), 0) + 1
    for w in writers:
        w.close()
    classes = class_names(cfg.synth)
    make_dataset_info(exp, classes, summarize(counts, [], ["train"], classes), names, [],
                      len(records)).write(out)
    marker.write_text(key)
    return out


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def _compare(name: str, unit: str, items: int, mem_pass, pipe_pass, repeats: int) -> dict:
    """Alternates in-memory and pipeline passes; returns throughputs and ratios.

    Wall-clock throughput is what a user sees; CPU-time throughput (items per CPU-second of this
    process, every thread counted) is far less sensitive to other processes on a shared
    machine and shows how much work the input pipeline adds on top of the model.
    """
    mem_pass()   # warm-up: traces the function, fills caches
    pipe_pass()
    mem, pipe, mem_cpu, pipe_cpu = [], [], [], []
    for _ in range(repeats):
        wall, cpu = _timed(mem_pass)
        mem.append(items / wall)
        mem_cpu.append(items / cpu)
        wall, cpu = _timed(pipe_pass)
        pipe.append(items / wall)
        pipe_cpu.append(items / cpu)
    med = statistics.median
    out = {
        f"{name}_in_memory_best": max(mem), f"{name}_in_memory_median": med(mem),
        f"{name}_pipeline_best": max(pipe), f"{name}_pipeline_median": med(pipe),
        f"{name}_ratio_best": max(pipe) / max(mem),
        f"{name}_ratio_median": med(pipe) / med(mem),
        f"{name}_in_memory_per_cpu_s": med(mem_cpu), f"{name}_pipeline_per_cpu_s": med(pipe_cpu),
        f"{name}_ratio_cpu": med(pipe_cpu) / med(mem_cpu),
    }
    print(f"  in memory : best {max(mem):7.2f} {unit}/s, median {med(mem):7.2f}; "
          f"{med(mem_cpu):7.2f} {unit}/CPU-s")
    print(f"  tf.data   : best {max(pipe):7.2f} {unit}/s, median {med(pipe):7.2f}; "
          f"{med(pipe_cpu):7.2f} {unit}/CPU-s")
    r = out[f"{name}_ratio_median"]
    print(f"  ratio     : wall best/best {out[f'{name}_ratio_best']:.3f}, median/median {r:.3f} "
          f"(target >= {TARGET}) {'OK' if r >= TARGET else 'BELOW TARGET'}; "
          f"per CPU-second {out[f'{name}_ratio_cpu']:.3f}", flush=True)
    return out


def _backbones(exp):
    """Both backbones as the traced callables extraction uses."""
    from maivar_tf.models.backbones import BackboneFeatures, build_backbone

    crop, size = exp.data.crop_size, exp.data.audio.image_size
    video = build_backbone("video", exp.model.video_weights, crop)
    audio = build_backbone("audio", exp.model.audio_weights, size)
    return (BackboneFeatures(video, (crop, crop, 3)), BackboneFeatures(audio, (size, size, 3)))


def _video_figures(args, cfg, dataset, video) -> dict:
    import tensorflow as tf

    print("\nBNInception (frames):")
    c, k, b = cfg.crop_size, cfg.num_segments, args.batch
    first = next(iter(dataset(True, [])))["frames"]
    frames = tf.constant(tf.reshape(first, [-1, c, c, 3]).numpy())

    def video_mem():
        for _ in range(args.batches):
            video(frames).numpy()

    def video_pipe():
        for batch in dataset(True, []):
            video(tf.reshape(batch["frames"], [-1, c, c, 3])).numpy()

    return _compare("video", "frames", args.batches * b * k, video_mem, video_pipe,
                    args.repeats)


def _audio_figures(args, dataset, audio) -> dict:
    import tensorflow as tf

    rep = args.representation
    print(f"\nInceptionResNetV2 ({rep} audio-images):")
    images = tf.constant(next(iter(dataset(False, [rep])))["audio_images"][rep].numpy())

    def audio_mem():
        for _ in range(args.batches):
            audio(images).numpy()

    def audio_pipe():
        for batch in dataset(False, [rep]):
            audio(batch["audio_images"][rep]).numpy()

    return _compare("audio", "images", args.batches * args.batch, audio_mem, audio_pipe,
                    args.repeats)


def _extract_figures(exp, data_dir: Path, figures: dict, video, audio) -> dict:
    """``extract_features`` end to end against the in-memory compute of the same videos."""
    from maivar_tf.artifacts import DatasetInfo
    from maivar_tf.features import extract_features

    print("\nextract_features end to end (read, both backbones, write shards):")
    n = DatasetInfo.read(data_dir).counts["train"]["total"]
    k = exp.data.num_segments
    shutil.rmtree(exp.data.features_dir, ignore_errors=True)
    seconds, cpu = _timed(lambda: extract_features(
        exp, splits=("train",), representations=[exp.model.representation], progress=False,
        video_backbone=video, audio_backbone=audio))
    compute_cpu = n * (k / figures["video_in_memory_per_cpu_s"]
                       + 1 / figures["audio_in_memory_per_cpu_s"])
    compute = n * (k / figures["video_in_memory_median"]
                   + 1 / figures["audio_in_memory_median"])
    print(f"  {n} videos in {seconds:.1f}s = {n / seconds:.2f} videos/s; in-memory compute "
          f"alone would take {compute:.1f}s: ratio {compute / seconds:.3f}; per CPU-second "
          f"{compute_cpu / cpu:.3f}")
    return {"extract_ratio_cpu": compute_cpu / cpu, "extract_videos_per_s": n / seconds,
            "extract_ratio_vs_compute": compute / seconds}


def main(argv=None) -> int:
    args = _parse(argv)
    from maivar_tf.console import import_tensorflow_quietly

    tf = import_tensorflow_quietly()
    from maivar_tf.data.input_pipeline import make_dataset

    exp = _config(args)
    cfg = exp.data
    data_dir = _build_shards(exp, Path(args.work_dir))
    k, b = cfg.num_segments, args.batch
    print(f"\nK={k}, batch {b} videos ({b * k} frames), {args.batches} batches per pass, "
          f"{args.repeats} passes; tf {tf.__version__}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    skip = set(filter(None, args.skip.split(",")))
    figures: dict[str, float] = {"load_before": os.getloadavg()[0]}
    video, audio = _backbones(exp)

    def dataset(include_frames: bool, reps: list[str]):
        return make_dataset(data_dir, "train", cfg, batch_size=b, training=False,
                            representations=reps, include_frames=include_frames,
                            repeat=True, drop_remainder=True).take(args.batches)

    if "video" not in skip:
        figures.update(_video_figures(args, cfg, dataset, video))
    if "audio" not in skip:
        figures.update(_audio_figures(args, dataset, audio))
    if "extract" not in skip and "video_in_memory_median" in figures \
            and "audio_in_memory_median" in figures:
        figures.update(_extract_figures(exp, data_dir, figures, video, audio))
    figures["load_after"] = os.getloadavg()[0]
    print(f"\nload average after: {figures['load_after']:.2f} (other work on the machine skews "
          "these figures)")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"num_segments": k, "batch": b, "batches": args.batches, "repeats": args.repeats,
             "representation": args.representation, "cpus": os.cpu_count(), **figures},
            indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

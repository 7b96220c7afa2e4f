"""Throughput of the TFRecord build: the bare per-video function against the Beam job.

Generates (once, cached) an embedded dataset of at least 100 videos, then prints videos/s for

  (a) a plain Python loop over ``clip_example_from_record`` + serialisation (the bare
      function; no Beam, nothing written),
  (b) the Beam job with one worker (``--direct_num_workers=1``),
  (c) the Beam job with two worker processes
      (``--direct_running_mode=multi_processing --direct_num_workers=2``),
  (d) the Beam job with two worker threads in one process
      (``--direct_running_mode=multi_threading --direct_num_workers=2``),

and the ratios against the targets: (b) >= 0.7 x (a), and (c) >= 1.5 x (b).

Every run is a fresh process timed end to end, as a user would run it, so each pays the same
start-up (Python, TensorFlow import, tracing the audio-image function once per process); the
ratios then measure what Beam adds or saves. The bare loop's steady-state rate (after start-up)
is printed too, and the CPU seconds of every run (the cost that does not depend on what else
the machine is doing). On a shared machine the wall-clock figures are noisy, and two workers
cannot beat one when other work already keeps every core busy: run it on a quiet machine.

Usage::

    python benchmarks/bench_build.py                       # 8 classes x 13 videos, K=8, 6 reps
    python benchmarks/bench_build.py --per_class 13 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the child processes import TensorFlow
sys.path.insert(0, str(REPO))

TARGET_ONE_WORKER = 0.7
TARGET_TWO_WORKERS = 1.5
RUNS = {
    "beam_1_worker": ["--direct_num_workers=1"],
    "beam_2_processes": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
    "beam_2_threads": ["--direct_running_mode=multi_threading", "--direct_num_workers=2"],
}


def _parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None,
                   help="experiment YAML for K, frame size and representations (default: "
                        "maivar_tf.config.resolve_config_path's)")
    p.add_argument("--work_dir", default="data/bench_build",
                   help="where the videos and the shards of each run go")
    p.add_argument("--per_class", type=int, default=13,
                   help="videos per class (8 classes): 10 train + the rest test")
    p.add_argument("--num_segments", type=int, default=0, help="K (0: the config's)")
    p.add_argument("--representations", default="",
                   help="comma list (default: the config's)")
    p.add_argument("--skip", default="",
                   help="comma list of runs to skip: bare, " + ", ".join(RUNS))
    p.add_argument("--json", default="", help="also write the figures to this JSON file")
    p.add_argument("--bare_child", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _overrides(args) -> list[str]:
    work = Path(args.work_dir)
    train = min(10, args.per_class - 1)
    out = [f"data.video_root={json.dumps(str(work / 'videos'))}", "data.dataset=synthetic",
           "data.synth.num_motions=4", "data.synth.num_sounds=2",
           f"data.synth.train_per_class={train}",
           f"data.synth.test_per_class={args.per_class - train}"]
    if args.num_segments:
        out.append(f"data.num_segments={args.num_segments}")
    if args.representations:
        out.append(f"data.representations={json.dumps(args.representations.split(','))}")
    return out


def _config_path(args) -> str | None:
    from maivar_tf.config import resolve_config_path

    return resolve_config_path(args.config)


def bare_child(args) -> int:
    """The bare loop in this (fresh) process; writes its timings to ``args.bare_child``."""
    t_start = time.perf_counter()
    from maivar_tf.console import import_tensorflow_quietly, progress

    import_tensorflow_quietly()
    import numpy as np

    from maivar_tf.config import load_config
    from maivar_tf.data.annotations import read_annotations
    from maivar_tf.data.audio_image import render_audio_images
    from maivar_tf.data.clips import clip_example_from_record
    from maivar_tf.data.schema import to_sequence_example

    cfg = load_config(_config_path(args), _overrides(args)).data
    records = list(read_annotations(cfg).records)
    render_audio_images(np.zeros(2 * cfg.audio.n_fft, np.float32), cfg.representations,
                        cfg.audio)  # the same one-off trace the Beam workers do
    t_loop = time.perf_counter()
    for rec in progress(records, total=len(records), desc="bare clip_example_from_record",
                        unit="video"):
        to_sequence_example(clip_example_from_record(rec, cfg)).SerializeToString()
    t_end = time.perf_counter()
    Path(args.bare_child).write_text(json.dumps({
        "videos": len(records), "loop_s": t_end - t_loop, "in_process_s": t_end - t_start}))
    return 0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(cmd: list[str]) -> tuple[float, float, float]:
    """Runs ``cmd``.

    Returns:
        Wall seconds, CPU seconds (of it and its subprocesses) and the steady-state rate: the
        sum over workers of each one's last logged videos/s (after its set-up), 0 if none.
    """
    t0, c0 = time.perf_counter(), _children_cpu()
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    seconds, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-5000:])
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed with exit code {proc.returncode}")
    last_progress: dict[str, str] = {}  # worker -> its last progress line
    for line in proc.stdout.splitlines():
        if "videos processed" in line:
            last_progress[line.split("worker", 1)[1].split(":", 1)[0]] = line
        if "set up in" in line or "Beam job finished" in line:
            print(f"      | {line.strip()}")
    for line in last_progress.values():
        print(f"      | {line.strip()}")
    steady = sum(float(line.rsplit("(", 1)[1].split()[0]) for line in last_progress.values())
    print(f"      | {seconds:.1f}s wall, {cpu:.1f} CPU-s")
    return seconds, cpu, steady


def main(argv=None) -> int:
    args = _parse(argv)
    if args.bare_child:
        return bare_child(args)
    from maivar_tf.config import load_config
    from maivar_tf.data.annotations import read_annotations
    from maivar_tf.data.synthetic import generate_dataset

    config_path = _config_path(args)
    overrides = _overrides(args)
    cfg = load_config(config_path, overrides).data
    generate_dataset(cfg.video_root, cfg.synth, progress=True)
    n = len(read_annotations(cfg).records)
    print(f"{n} videos, K={cfg.num_segments}, representations={','.join(cfg.representations)}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
    skip = set(filter(None, args.skip.split(",")))
    common = [f"--work_dir={args.work_dir}", f"--per_class={args.per_class}",
              f"--num_segments={args.num_segments}",
              *([f"--config={config_path}"] if config_path else [])]
    if args.representations:
        common.append(f"--representations={args.representations}")
    figures: dict[str, float] = {}

    if "bare" not in skip:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "bare.json"
            wall, cpu, _ = _timed([sys.executable, str(Path(__file__).resolve()), *common,
                                   f"--bare_child={out}"])
            bare = json.loads(out.read_text())
        figures["bare"] = n / wall
        figures["bare_cpu_s"] = cpu
        figures["bare_steady_state"] = n / bare["loop_s"]
        print(f"(a) bare function:        {figures['bare']:7.2f} videos/s end to end "
              f"({figures['bare_steady_state']:.2f} videos/s after start-up)", flush=True)

    beam_common = ["--runner=DirectRunner", *(["--config", config_path] if config_path else []),
                   *[x for o in overrides for x in ("--set", o)]]
    labels = {"beam_1_worker": "(b) Beam, 1 worker:     ",
              "beam_2_processes": "(c) Beam, 2 processes:  ",
              "beam_2_threads": "(d) Beam, 2 threads:    "}
    for name, extra in RUNS.items():
        if name in skip:
            continue
        wall, cpu, steady = _timed([sys.executable, "-m", "beam.build_tfrecords", *beam_common,
                                    f"--output_dir={Path(args.work_dir) / name}", *extra])
        figures[name] = n / wall
        figures[f"{name}_cpu_s"] = cpu
        figures[f"{name}_steady_state"] = steady
        print(f"{labels[name]}  {figures[name]:7.2f} videos/s end to end "
              f"({steady:.2f} videos/s after worker set-up)", flush=True)

    print()
    if "bare" in figures and "beam_1_worker" in figures:
        r = figures["beam_1_worker"] / figures["bare"]
        figures["ratio_1_worker_vs_bare"] = r
        print(f"1 worker / bare:      {r:.2f}x (target >= {TARGET_ONE_WORKER}x) "
              f"{'OK' if r >= TARGET_ONE_WORKER else 'BELOW TARGET'}; "
              f"vs the bare steady state: "
              f"{figures['beam_1_worker'] / figures['bare_steady_state']:.2f}x")
    if "beam_1_worker" in figures and "beam_2_processes" in figures:
        r = figures["beam_2_processes"] / figures["beam_1_worker"]
        figures["ratio_2_processes_vs_1"] = r
        ss = figures["beam_1_worker_steady_state"]
        print(f"2 processes / 1:      {r:.2f}x (target >= {TARGET_TWO_WORKERS}x) "
              f"{'OK' if r >= TARGET_TWO_WORKERS else 'BELOW TARGET'}"
              + (f"; after set-up: {figures['beam_2_processes_steady_state'] / ss:.2f}x"
                 if ss else ""))
    if "beam_1_worker" in figures and "beam_2_threads" in figures:
        r = figures["beam_2_threads"] / figures["beam_1_worker"]
        figures["ratio_2_threads_vs_1"] = r
        ss = figures["beam_1_worker_steady_state"]
        print(f"2 threads / 1:        {r:.2f}x"
              + (f"; after set-up: {figures['beam_2_threads_steady_state'] / ss:.2f}x"
                 if ss else ""))
    print(f"load average after: {os.getloadavg()[0]:.2f} (other work on the machine skews these)")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"videos": n, "num_segments": cfg.num_segments,
             "representations": list(cfg.representations), "cpus": os.cpu_count(),
             **figures}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

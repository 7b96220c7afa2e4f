"""Audio-image rendering speed: milliseconds per image for a 10 s clip, once warm.

Renders each representation alone through :func:`maivar_tf.data.audio_image.render_audio_images`
(its cached ``tf.function``; the per-call overhead is included), then all six together (the
STFT shared, as the Beam job renders them), and prints the median and the best of ``--repeats``
calls. The waveform is the first 10 s of a real test clip (``../shared/testdata/clips``) when
present, else seeded noise.

Usage:
    python benchmarks/bench_render.py [--repeats 30] [--clip PATH] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from maivar_tf.console import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()  # before the renderers import TensorFlow: no start-up banner

from maivar_tf.config import REPRESENTATIONS, AudioImageConfig  # noqa: E402
from maivar_tf.data.audio_image import render_audio_images  # noqa: E402

DEFAULT_CLIP = REPO / ".." / "shared" / "testdata" / "clips" / "veba_-2RPPODqLy4_guitar.mp4"
TARGET_MS = 15.0


def _waveform(clip: Path | None, seconds: float, sample_rate: int) -> tuple[np.ndarray, str]:
    n = int(seconds * sample_rate)
    if clip is not None and clip.is_file():
        from maivar_tf.data.audio import decode_audio

        y = decode_audio(clip, sample_rate, max_seconds=seconds)
        if y.size < n:
            y = np.pad(y, (0, n - y.size))
        return y, clip.name
    rng = np.random.default_rng(0)
    return (0.1 * rng.standard_normal(n)).astype(np.float32), "noise"


def _time(fn, repeats: int) -> tuple[float, float, float]:
    """(median wall ms, best wall ms, median CPU ms of this process, all threads)."""
    for _ in range(3):  # warm: trace + first runs
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return float(np.median(wall)) * 1e3, float(np.min(wall)) * 1e3, float(np.median(cpu)) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)

    cfg = AudioImageConfig()
    y, source = _waveform(args.clip, args.seconds, cfg.sample_rate)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"audio-image render time, {args.seconds:g} s at {cfg.sample_rate} Hz ({source}), "
          f"{cfg.image_size}x{cfg.image_size}, {os.cpu_count()} CPUs, load {load:.1f}")
    print("(wall: elapsed time per call; cpu: CPU time this process used per call, all threads;"
          " on a busy machine wall >> cpu)")
    print(f"{'representation':<20}{'wall median':>12}{'wall best':>10}{'cpu median':>11}")
    for rep in REPRESENTATIONS:
        med, best, cpu = _time(lambda r=rep: render_audio_images(y, r, cfg), args.repeats)
        flag = "" if med <= TARGET_MS else f"  (median > {TARGET_MS:g} ms target)"
        print(f"{rep:<20}{med:>12.2f}{best:>10.2f}{cpu:>11.2f}{flag}")
    med, best, cpu = _time(lambda: render_audio_images(y, REPRESENTATIONS, cfg), args.repeats)
    print(f"{'all six (shared)':<20}{med:>12.2f}{best:>10.2f}{cpu:>11.2f}   "
          f"= {med / len(REPRESENTATIONS):.2f} ms wall per image")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

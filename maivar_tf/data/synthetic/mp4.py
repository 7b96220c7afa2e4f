"""Reproducible MP4 writing: H.264 (yuv420p) video and mono AAC audio in one container.

The embedded dataset is real media, decoded by the same PyAV path as UCF101 or Kinetics
videos (MAiVAR, Shaikh et al. 2024, reads both modalities from one file). The colour
conversion is done in NumPy (not by swscale's CPU-specific code) and x264 runs
single-threaded with ``cpu-independent=1``, so one input always gives one bitstream.
"""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np

__all__ = ["rgb_to_yuv420p", "write_mp4"]


def rgb_to_yuv420p(frames: np.ndarray) -> np.ndarray:
    """BT.601 limited-range RGB -> planar YUV 4:2:0, in NumPy (exact and machine-independent).

    Args:
        frames: uint8 ``[T, H, W, 3]`` RGB with even H and W.

    Returns:
        uint8 ``[T, H * 3 // 2, W]``: the Y plane, then U, then V (PyAV's ``yuv420p`` layout).
    """
    t, h, w, _ = frames.shape
    x = frames.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16.0 + 0.256788 * r + 0.504129 * g + 0.097906 * b
    # U and V are linear in RGB, so they are computed from the 2x2-averaged pixels
    m = x.reshape(t, h // 2, 2, w // 2, 2, 3)
    m = (m[:, :, 0, :, 0] + m[:, :, 0, :, 1] + m[:, :, 1, :, 0] + m[:, :, 1, :, 1]) * 0.25
    r, g, b = m[..., 0], m[..., 1], m[..., 2]
    u = 128.0 - 0.148223 * r - 0.290993 * g + 0.439216 * b
    v = 128.0 + 0.439216 * r - 0.367788 * g - 0.071427 * b

    def q(a: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(a), 0, 255).astype(np.uint8).reshape(t, -1)

    return np.concatenate([q(y), q(u), q(v)], axis=1).reshape(t, h * 3 // 2, w)


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: int, waveform: np.ndarray,
              sample_rate: int) -> None:
    """Writes H.264 (yuv420p) video and mono AAC audio into one MP4 container.

    The output is reproducible: the colour conversion is done in NumPy (not by swscale's
    CPU-specific code) and x264 runs single-threaded with ``cpu-independent=1``. Without the
    latter, x264 on AVX-512 machines was seen to produce different bitstreams (and decoded
    frames) from identical input in consecutive runs.

    Args:
        path: the output file (``.mp4``).
        frames: uint8 ``[T, H, W, 3]`` RGB, H and W even.
        fps: frames per second.
        waveform: float32 ``[N]`` mono samples in [-1, 1].
        sample_rate: the waveform's rate.
    """
    import av

    t, h, w, _ = frames.shape
    with av.open(str(path), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=fps,
                            options={"crf": "20", "preset": "veryfast", "threads": "1",
                                     "x264-params": "cpu-independent=1"})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.time_base = Fraction(1, fps)
        aus = out.add_stream("aac", rate=sample_rate, layout="mono")
        yuv = rgb_to_yuv420p(frames)
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(yuv[i], format="yuv420p")
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(waveform[None], np.float32),
                                        format="fltp", layout="mono")
        af.sample_rate = sample_rate
        af.pts = 0
        out.mux(aus.encode(af))
        out.mux(aus.encode(None))

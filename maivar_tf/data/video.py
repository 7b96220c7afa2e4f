"""Video decoding with PyAV and TSN segment sampling; :func:`load_clip`, the one decode entry.

Temporal Segment Networks (Wang et al. 2016), which MAiVAR's video branch (Shaikh et al. 2024)
follows, split a video into K equal segments and take one frame from each: the centre frame at
test time, a random frame per segment in training.

Decoding makes a single pass over the file (one container open for video and audio):

1. demux every packet of the video and audio streams in the time window; audio packets are
   decoded and resampled on the fly, video packets are kept (compressed, small) and counted;
2. the K frame indices are chosen from that count (``stream.frames`` is often 0 or wrong, so
   the container's claim is never used for sampling);
3. the kept video packets are decoded in order and only the chosen frames are converted to
   RGB at their stored size; if the decoder yields fewer frames than packets, the indices are
   re-chosen from the decoded count and the packets decoded once more;
4. the chosen frames are resized with :func:`maivar_tf.ops.resize_short_side` (shorter display
   side = ``short_side``, aspect kept, the stream's sample aspect ratio applied, square pixels
   out): the very op the serving graph resizes with, so decode-time and serve-time resizing
   are one implementation.

Clips with fewer frames than K repeat frames. Timestamps are microseconds from the file start
(a Kinetics ``[start_s, end_s)`` trim gives timestamps inside the window). Failures raise
:class:`~maivar_tf.data.errors.MediaError` (:mod:`maivar_tf.data.container`: truncation).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import av
import numpy as np

from maivar_tf import ops
from maivar_tf.config import SAMPLING_MODES, DataConfig
from maivar_tf.data import container as media
from maivar_tf.data.audio import AudioCollector, check_audio, silent_waveform
from maivar_tf.data.container import media_error

__all__ = [
    "VideoClip",
    "DecodedClip",
    "sample_segment_indices",
    "decode_segment_frames",
    "load_clip",
    "encode_jpeg",
    "pixel_aspect",
]

#: Packets may be up to this much past ``end_s`` in decode order (B-frame reordering).
_REORDER_MARGIN_S = 1.0
#: Tolerance when comparing frame times with window edges.
_EPS = 1e-6


@dataclass(frozen=True)
class VideoClip:
    """K sampled frames of one video.

    Args:
        frames: uint8 [K, H, W, 3] RGB; the shorter side is ``short_side``.
        timestamps_us: int64 [K], each frame's time in microseconds from the file start.
        frame_rate: the stream's average frame rate (frames per second).
        num_frames: frames decoded in the window (what the segments were sampled from).
        duration_s: seconds of video in the window.
    """

    frames: np.ndarray
    timestamps_us: np.ndarray
    frame_rate: float
    num_frames: int
    duration_s: float


@dataclass(frozen=True)
class DecodedClip:
    """One video's sampled frames and its mono waveform.

    Args:
        video: the sampled frames.
        waveform: float32 [N] mono samples at ``sample_rate``.
        sample_rate: the waveform's rate in Hz.
        audio_missing: the file has no audio stream (or it decodes to no samples) and
            ``data.on_missing_audio`` is ``silence``: ``waveform`` is zeros
            (:func:`maivar_tf.data.audio.silent_waveform`).
        audio_start_s: the time of ``waveform[0]`` in seconds from the file start (the trim
            ``start_s``, or later when the audio stream starts after it).
    """

    video: VideoClip
    waveform: np.ndarray
    sample_rate: int
    audio_missing: bool = False
    audio_start_s: float = 0.0


def sample_segment_indices(num_frames: int, num_segments: int, mode: str = "center",
                           rng: np.random.Generator | int | None = None) -> np.ndarray:
    """TSN frame indices: one per equal segment.

    ``center`` is TSN's test-time rule ``int(tick / 2 + tick * k)`` with
    ``tick = num_frames / num_segments``. ``random`` picks uniformly inside segment
    ``[floor(k n / K), floor((k + 1) n / K))`` (TSN's training rule, covering every frame
    also when ``n`` is not a multiple of ``K``). With fewer frames than segments both modes
    repeat frames (indices are non-decreasing).

    Args:
        num_frames: frames available (>= 1).
        num_segments: K (>= 1).
        mode: ``center`` or ``random``.
        rng: a NumPy generator or seed for ``random`` (``None``: fresh entropy).

    Returns:
        int64 [K] indices in ``[0, num_frames)``.

    Raises:
        ValueError: a non-positive count or an unknown mode.
    """
    n, k = int(num_frames), int(num_segments)
    if n < 1:
        raise ValueError(f"num_frames must be >= 1; got {num_frames}")
    if k < 1:
        raise ValueError(f"num_segments must be >= 1; got {num_segments}")
    if mode == "center":
        tick = n / k
        idx = np.array([int(tick / 2.0 + tick * x) for x in range(k)], dtype=np.int64)
    elif mode == "random":
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        seg = np.arange(k, dtype=np.int64)
        starts = seg * n // k
        ends = np.maximum((seg + 1) * n // k, starts + 1)
        idx = starts + gen.integers(0, ends - starts)
    else:
        raise ValueError(f"unknown sampling mode {mode!r}; allowed: {', '.join(SAMPLING_MODES)}")
    return np.clip(idx, 0, n - 1).astype(np.int64)


def pixel_aspect(stream) -> float:
    """A video stream's sample aspect ratio (display width / stored width of a pixel).

    1.0 when the stream declares none (or 0); the value :func:`maivar_tf.ops.resize_short_side`
    takes as ``pixel_aspect``.
    """
    sar = stream.codec_context.sample_aspect_ratio
    return float(sar) if sar else 1.0


def _frame_rate(stream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return float(rate)
    return 0.0


def _in_window(t: float | None, start_s: float, end_s: float) -> bool:
    """Whether a relative time (``None``: unknown, counted in) lies in ``[start_s, end_s)``."""
    return t is None or (t >= start_s - _EPS and (end_s <= 0 or t < end_s - _EPS))


class _FrameSelector:
    """Walks decoded frames in presentation order, converting only the chosen ones to RGB.

    Chosen frames are converted at their stored size (the first chosen frame's, should the
    stream change size midway); resizing is :func:`maivar_tf.ops.resize_short_side`'s job.
    """

    def __init__(self, indices: np.ndarray, start_s: float, end_s: float, t0: float,
                 time_base, fps: float):
        self.time_base = time_base
        self.wanted: dict[int, list[int]] = {}
        for pos, i in enumerate(indices.tolist()):
            self.wanted.setdefault(i, []).append(pos)
        self.frames: list[np.ndarray | None] = [None] * len(indices)
        self.times = np.zeros(len(indices), dtype=np.float64)
        self.start_s, self.end_s, self.t0, self.fps = start_s, end_s, t0, fps
        self.size: tuple[int, int] | None = None
        self.count = 0
        self.first_t: float | None = None
        self.last_t: float | None = None

    def add(self, frame) -> None:
        t = media.frame_time(frame, self.time_base)
        if t is not None:
            t = t - self.t0
        elif self.last_t is not None:
            t = self.last_t + (1.0 / self.fps if self.fps else 0.0)
        else:
            t = 0.0
        if not _in_window(t, self.start_s, self.end_s):
            return
        if self.first_t is None:
            self.first_t = t
        self.last_t = t
        positions = self.wanted.get(self.count)
        if positions:
            if self.size is None:
                self.size = (frame.width, frame.height)
            w, h = self.size
            rgb = frame.to_ndarray(width=w, height=h, format="rgb24")
            for pos in positions:
                self.frames[pos] = rgb
                self.times[pos] = t
        self.count += 1

    def complete(self) -> bool:
        return all(f is not None for f in self.frames)


def _decode_packets(stream, packets: list, selector: _FrameSelector) -> int:
    """Decodes ``packets`` (then flushes) into ``selector``; returns the corrupt-packet count."""
    ctx = stream.codec_context
    errors = 0
    for packet in packets:
        try:
            for frame in ctx.decode(packet):
                selector.add(frame)
        except av.error.FFmpegError:
            errors += 1
    try:
        for frame in ctx.decode(None):
            selector.add(frame)
    except av.error.FFmpegError:
        errors += 1
    return errors


def _check_arguments(num_segments: int, short_side: int, mode: str, start_s: float,
                     end_s: float) -> None:
    media.check_window(start_s, end_s)
    if mode not in SAMPLING_MODES:
        raise ValueError(f"unknown sampling mode {mode!r}; allowed: {', '.join(SAMPLING_MODES)}")
    if num_segments < 1 or short_side < 1:
        raise ValueError(f"num_segments and short_side must be >= 1; got {num_segments}, "
                         f"{short_side}")


def _demux(path, container, vs, ast, collector: AudioCollector | None, t0: float,
           start_s: float, end_s: float) -> tuple[list, int]:
    """Step 1: keeps the window's video packets, feeds audio packets to ``collector``.

    Returns:
        The kept video packets (in decode order) and how many of them lie in the window.
    """
    tally = media.DemuxTally([vs] + ([ast] if ast is not None else []), t0)
    packets: list = []
    in_window = 0
    video_done = False
    media.seek_to(container, start_s, t0)
    try:
        for packet in container.demux(*tally.streams):
            if packet.size == 0:
                continue
            tally.add(packet)
            if packet.stream_index == vs.index:
                if video_done:
                    continue
                rel = tally.time(packet)
                if end_s > 0 and rel is not None and rel > end_s + _REORDER_MARGIN_S:
                    video_done = True
                    continue
                packets.append(packet)
                if not packet.is_discard and _in_window(rel, start_s, end_s):
                    in_window += 1
            elif collector is not None:
                collector.decode_packet(packet)
            if video_done and (collector is None or collector.done):
                break
    except av.error.FFmpegError as e:
        raise media.demux_error(path, tally.total, e) from e
    tally.check(path, container, start_s, end_s)
    return packets, in_window


def _select_frames(path, vs, packets: list, in_window: int, *, num_segments: int, mode: str,
                   seed, start_s: float, end_s: float, t0: float) -> _FrameSelector:
    """Steps 2 and 3: chooses the K frames from the count and decodes them (twice if needed)."""
    rng = np.random.default_rng(seed)
    fps = _frame_rate(vs)
    time_base = media.time_base_of(vs)

    def run(count: int) -> tuple[_FrameSelector, int]:
        indices = sample_segment_indices(max(count, 1), num_segments, mode, rng)
        sel = _FrameSelector(indices, start_s, end_s, t0, time_base, fps)
        return sel, _decode_packets(vs, packets, sel)

    selector, errors = run(in_window)
    decoded = selector.count
    if decoded == 0:
        if errors:
            raise media_error("decode_error", path, f"no video frame decodes ({errors} "
                              f"of {len(packets)} packets failed)")
        raise media_error("too_short", path, "no decodable video frames"
                          + (f" in [{start_s}, {end_s or 'end'}) s" if start_s or end_s
                             else ""))
    if errors and decoded < 0.9 * in_window:
        raise media_error("truncated", path, f"decoding stopped on corrupt data: "
                          f"{decoded} of {in_window} frames decoded")
    if not selector.complete():
        # The decoder produced fewer frames than packets: choose again from what decodes.
        vs.codec_context.flush_buffers()
        selector, _ = run(decoded)
        if not selector.complete():
            raise media_error("decode_error", path, "frames decode differently on a "
                              "second pass; cannot sample segments")
    return selector


def _video_clip(selector: _FrameSelector, fps: float, short_side: int,
                aspect: float) -> VideoClip:
    """Step 4: the chosen frames resized by :func:`maivar_tf.ops.resize_short_side`."""
    times = np.maximum.accumulate(selector.times)
    if not fps and selector.count > 1 and selector.last_t > selector.first_t:
        fps = (selector.count - 1) / (selector.last_t - selector.first_t)
    duration = (selector.last_t - selector.first_t) + (1.0 / fps if fps else 0.0)
    frames = ops.resize_short_side(np.stack(selector.frames), short_side, pixel_aspect=aspect)
    return VideoClip(
        frames=np.asarray(frames, dtype=np.uint8),
        timestamps_us=np.round(times * 1e6).astype(np.int64),
        frame_rate=float(fps),
        num_frames=int(selector.count),
        duration_s=float(duration),
    )


def _decode(path, *, num_segments: int, short_side: int, mode: str, seed,
            start_s: float, end_s: float, audio: dict | None):
    """The single pass behind :func:`decode_segment_frames` and :func:`load_clip`.

    Returns ``(clip, waveform or None, audio_start_s, audio_missing)``.
    """
    _check_arguments(num_segments, short_side, mode, start_s, end_s)
    keep_silent = audio is not None and audio.get("on_missing") == "silence"
    with media.open_media(path) as container:
        vs = media.video_stream(container)
        if vs is None:
            raise media_error("no_video_stream", path, "the file has no video stream")
        ast = media.audio_stream(container)
        if audio is not None and ast is None and not keep_silent:
            raise media_error("no_audio", path, "the file has no audio stream")
        t0 = media.container_start(container)
        collector = None
        if audio is not None and ast is not None:
            collector = AudioCollector(audio["sample_rate"], start_s, end_s,
                                       audio["max_seconds"], t0, media.time_base_of(ast))
        packets, in_window = _demux(path, container, vs, ast, collector, t0, start_s, end_s)
        selector = _select_frames(path, vs, packets, in_window, num_segments=num_segments,
                                  mode=mode, seed=seed, start_s=start_s, end_s=end_s, t0=t0)
        # no audio stream: a no_audio error above, unless kept silent (on_missing_audio)
        waveform, audio_start, missing = None, start_s, audio is not None and ast is None
        if collector is not None:  # after the video, so an empty window is "too_short"
            y = collector.finish(ast)
            audio_start = collector.start_time()
            missing = keep_silent and y.size == 0 and not collector.errors  # no samples
            if not missing:
                waveform = check_audio(path, y, collector.errors, audio["min_samples"])
        fps, aspect = _frame_rate(vs), pixel_aspect(vs)
    clip = _video_clip(selector, fps, short_side, aspect)
    if missing:
        waveform = silent_waveform(clip.duration_s, audio["sample_rate"], audio["max_seconds"],
                                   audio["min_samples"])
    return clip, waveform, audio_start, missing


def decode_segment_frames(path: str | os.PathLike, num_segments: int, short_side: int = 256,
                          mode: str = "center", seed: int | None = None, start_s: float = 0.0,
                          end_s: float = 0.0) -> VideoClip:
    """Decodes K TSN-sampled RGB frames of a video.

    Args:
        path: any file FFmpeg decodes.
        num_segments: K.
        short_side: frames are resized so their shorter side has this many pixels.
        mode: ``center`` (evaluation) or ``random`` (training; one random frame per segment).
        seed: seed for ``random`` (``None``: fresh entropy each call).
        start_s: window start in seconds from the file start (Kinetics trims).
        end_s: window end in seconds (0 = the end of the file).

    Returns:
        The sampled frames and their timestamps.

    Raises:
        MediaError: ``missing``, ``empty``, ``not_a_video``, ``no_video_stream``,
            ``too_short``, ``truncated`` or ``decode_error``; the message names the file.
        ValueError: invalid arguments (mode, counts, window).
    """
    clip, _, _, _ = _decode(path, num_segments=num_segments, short_side=short_side, mode=mode,
                            seed=seed, start_s=start_s, end_s=end_s, audio=None)
    return clip


def load_clip(path: str | os.PathLike, cfg: DataConfig, mode: str = "center",
              seed: int | None = None, start_s: float = 0.0, end_s: float = 0.0) -> DecodedClip:
    """Decodes a video's sampled frames and its audio in one pass (the one decode entry point).

    The Beam job, ``maivar predict`` and serving preparation all call this, so training and
    serving see identical inputs.

    Args:
        path: the video file.
        cfg: ``num_segments``, ``frame_short_side``, ``audio`` (``sample_rate``,
            ``max_seconds``; fewer than ``audio.n_fft`` samples is ``too_short``) and
            ``on_missing_audio``: with ``silence`` a file without an audio stream, or whose
            audio stream decodes to no samples, is kept with a silent waveform of the video
            window's duration
            (:func:`~maivar_tf.data.audio.silent_waveform`) and ``audio_missing`` set; corrupt audio is
            still an error.
        mode: ``center`` or ``random`` segment sampling.
        seed: seed for ``random``.
        start_s: window start in seconds.
        end_s: window end in seconds (0 = the end of the file).

    Returns:
        The frames and the mono waveform.

    Raises:
        MediaError: any reason of :func:`decode_segment_frames`, plus ``no_audio`` (under
            ``on_missing_audio: reject``).
        ValueError: invalid arguments.
    """
    audio = {"sample_rate": cfg.audio.sample_rate, "max_seconds": cfg.audio.max_seconds,
             "min_samples": cfg.audio.n_fft, "on_missing": cfg.on_missing_audio}
    clip, waveform, audio_start, missing = _decode(
        path, num_segments=cfg.num_segments, short_side=cfg.frame_short_side, mode=mode,
        seed=seed, start_s=start_s, end_s=end_s, audio=audio)
    return DecodedClip(video=clip, waveform=waveform, sample_rate=cfg.audio.sample_rate,
                       audio_missing=missing, audio_start_s=float(audio_start))


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    """Encodes a uint8 [H, W, 3] RGB frame as JPEG bytes.

    Args:
        frame: the frame.
        quality: JPEG quality, 1..100.

    Returns:
        The JPEG file contents.
    """
    from PIL import Image

    arr = np.asarray(frame)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"encode_jpeg expects a uint8 [H, W, 3] RGB array; "
                         f"got {arr.dtype} {arr.shape}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be in 1..100; got {quality}")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()

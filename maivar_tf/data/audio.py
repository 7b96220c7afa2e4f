"""Audio decoding with PyAV: any FFmpeg codec -> mono float32 at a fixed sample rate.

MAiVAR (Shaikh et al. 2024, Sec. 3.2) renders each clip's sound track, loaded mono at a fixed
rate, into audio-images. Down-mixing averages the channels (what ``librosa.load(mono=True)``,
used by the paper, does); each channel is resampled with ``av.AudioResampler``
(libswresample) first. Times are relative to the container's start, so ``start_s`` / ``end_s``
trims (Kinetics) match the video's timestamps. Opening, seeking and the truncation check are
:mod:`maivar_tf.data.container`'s.
"""

from __future__ import annotations

import math
import os

import av
import numpy as np

from maivar_tf.data.container import (
    DemuxTally,
    audio_stream,
    check_window,
    container_start,
    demux_error,
    frame_time,
    media_error,
    open_media,
    seek_to,
    time_base_of,
)

__all__ = ["AudioCollector", "check_audio", "decode_audio", "silent_waveform"]


class AudioCollector:
    """Accumulates decoded audio frames into one mono float32 waveform.

    Args:
        sample_rate: the output rate (Hz).
        start_s: drop audio before this relative time.
        end_s: drop audio from this relative time (0 = no end).
        max_seconds: keep at most this many seconds (0 = no limit).
        t0: the container start time (seconds) that times are relative to.
        time_base: the audio stream's time base as a float (frame ``pts`` units).
    """

    def __init__(self, sample_rate: int, start_s: float = 0.0, end_s: float = 0.0,
                 max_seconds: float = 0.0, t0: float = 0.0, time_base=None):
        self.sample_rate = int(sample_rate)
        self.time_base = time_base
        self.start_s = float(start_s)
        self.end_s = float(end_s)
        self.t0 = t0
        limit = math.inf
        if end_s > 0:
            limit = end_s - start_s
        if max_seconds > 0:
            limit = min(limit, max_seconds)
        self.limit = None if math.isinf(limit) else int(round(limit * self.sample_rate))
        self.first_time: float | None = None
        self.next_time: float | None = None
        self.chunks: list[np.ndarray] = []
        self.collected = 0
        self.done = False
        self.errors = 0
        self._resampler: av.AudioResampler | None = None
        self._setup = None

    def _resample(self, frame) -> None:
        setup = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self._resampler is None or setup != self._setup:
            self._drain()
            self._resampler = av.AudioResampler(format="fltp", rate=self.sample_rate)
            self._setup = setup
        for out in self._resampler.resample(frame):
            self._append(out)

    def _append(self, out) -> None:
        arr = out.to_ndarray()
        mono = arr.mean(axis=0, dtype=np.float32) if arr.shape[0] > 1 else arr[0]
        self.chunks.append(np.asarray(mono, dtype=np.float32))
        self.collected += mono.shape[0]

    def _drain(self) -> None:
        if self._resampler is not None:
            for out in self._resampler.resample(None):
                self._append(out)
            self._resampler = None

    def _offset(self) -> int:
        if self.first_time is None or self.start_s <= self.first_time:
            return 0
        return int(round((self.start_s - self.first_time) * self.sample_rate))

    def add(self, frame) -> None:
        """Adds one decoded ``av.AudioFrame`` (ignored once enough audio is collected)."""
        if self.done or frame.samples == 0:
            return
        t = frame_time(frame, self.time_base)
        t = t - self.t0 if t is not None else self.next_time
        length = frame.samples / frame.sample_rate
        if t is not None:
            self.next_time = t + length
            if self.end_s > 0 and t >= self.end_s:
                self.done = True
                return
            if t + length <= self.start_s:
                return
        if self.first_time is None:
            self.first_time = t if t is not None else 0.0
        self._resample(frame)
        if self.limit is not None and self.collected >= self._offset() + self.limit + 4096:
            self.done = True

    def start_time(self) -> float:
        """The relative time of the waveform's first sample (``start_s``, or later when the
        audio stream starts after it)."""
        if self.first_time is None:
            return self.start_s
        return max(self.start_s, self.first_time)

    def decode_packet(self, packet) -> None:
        """Decodes one packet into the collector, counting (not raising) corrupt packets."""
        if self.done:
            return
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            self.errors += 1
            return
        for frame in frames:
            self.add(frame)

    def finish(self, stream=None) -> np.ndarray:
        """Flushes the decoder/resampler and returns the trimmed mono waveform."""
        if stream is not None and not self.done:
            try:
                for frame in stream.codec_context.decode(None):
                    self.add(frame)
            except av.error.FFmpegError:
                self.errors += 1
        self._drain()
        y = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        offset = self._offset()
        stop = None if self.limit is None else offset + self.limit
        return np.ascontiguousarray(y[offset:stop], dtype=np.float32)


def silent_waveform(duration_s: float, sample_rate: int, max_seconds: float = 0.0,
                    min_samples: int = 1) -> np.ndarray:
    """The waveform of a clip without sound (``data.on_missing_audio: silence``): zeros.

    Args:
        duration_s: the video window's duration in seconds.
        sample_rate: the audio rate (``audio.sample_rate``).
        max_seconds: cap on the duration, as for decoded audio (0: none).
        min_samples: the least length (``audio.n_fft``, what an audio-image needs).

    Returns:
        float32 ``[max(min_samples, round(min(duration_s, max_seconds) * sample_rate))]``.
    """
    seconds = float(duration_s)
    if max_seconds > 0:
        seconds = min(seconds, max_seconds)
    return np.zeros(max(int(min_samples), int(round(seconds * sample_rate))), np.float32)


def check_audio(path, y: np.ndarray, errors: int, min_samples: int) -> np.ndarray:
    """Raises ``no_audio`` / ``decode_error`` / ``too_short`` for unusable decoded audio."""
    if y.size == 0:
        if errors:
            raise media_error("decode_error", path, f"the audio stream failed to decode "
                              f"({errors} corrupt packets, no samples)")
        raise media_error("no_audio", path, "the audio stream decodes to no samples")
    if y.size < min_samples:
        raise media_error("too_short", path, f"{y.size} audio samples; at least {min_samples} "
                          "are needed")
    return y


def decode_audio(path: str | os.PathLike, sample_rate: int = 22050, max_seconds: float = 0.0,
                 start_s: float = 0.0, end_s: float = 0.0, *, min_samples: int = 1) -> np.ndarray:
    """Decodes a file's audio to mono float32 at ``sample_rate``.

    Args:
        path: any file FFmpeg reads (video or audio container).
        sample_rate: output rate in Hz.
        max_seconds: keep at most this many seconds after ``start_s`` (0 = all).
        start_s: window start in seconds from the start of the file.
        end_s: window end in seconds (0 = the end of the file).
        min_samples: fewer decoded samples than this raise ``too_short``.

    Returns:
        float32 [N] mono samples.

    Raises:
        MediaError: ``missing``, ``empty``, ``not_a_video``, ``no_audio`` (no audio stream or
            no decodable samples), ``too_short``, ``truncated`` or ``decode_error``.
        ValueError: an invalid time window.
    """
    check_window(start_s, end_s)
    with open_media(path) as container:
        stream = audio_stream(container)
        if stream is None:
            raise media_error("no_audio", path, "the file has no audio stream")
        t0 = container_start(container)
        collector = AudioCollector(sample_rate, start_s, end_s, max_seconds, t0,
                                   time_base_of(stream))
        tally = DemuxTally([stream], t0)
        seek_to(container, start_s, t0)
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                end = tally.add(packet)
                collector.decode_packet(packet)
                if end_s > 0 and end is not None and end - 1.0 > end_s:
                    break
        except av.error.FFmpegError as e:
            raise demux_error(path, tally.total, e) from e
        tally.check(path, container, start_s, end_s)
        y = collector.finish(stream)
    return check_audio(path, y, collector.errors, min_samples)

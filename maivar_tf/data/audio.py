"""Audio decoding with PyAV: any FFmpeg codec -> mono float32 at a fixed sample rate.

Also home of the container-level helpers shared with :mod:`maivar_tf.data.video`: opening a
file with every failure mapped to a :class:`~maivar_tf.data.errors.MediaError` reason, and the
truncation check.

Down-mixing averages the channels (what ``librosa.load(mono=True)``, used by the MAiVAR paper,
does); each channel is resampled with ``av.AudioResampler`` (libswresample) first. Times are
relative to the container's start, so ``start_s`` / ``end_s`` trims (Kinetics) match the
video's timestamps.

Truncation, decided per container after demuxing (see :func:`check_complete`):

* ``av.open`` fails on a file that starts like an MP4/MOV (an ISO-BMFF box such as ``ftyp``):
  its index (the ``moov`` atom, usually written last) was cut off;
* demuxing raises after at least one packet was read;
* a stream that declares its packet count (MP4, AVI) delivered fewer than 90% of them;
* the last packet ends more than ``max(0.5 s, 5%)`` before the container's declared duration.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import av
import numpy as np

from maivar_tf.data.errors import MediaError

__all__ = ["decode_audio", "open_media", "check_complete", "AudioCollector", "media_error",
           "frame_time", "packet_time", "packet_end", "time_base_of"]

#: First box types of an ISO-BMFF (MP4/MOV) file; FFmpeg failing on one means a cut-off index.
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")

#: A stream delivering fewer than this fraction of the packets it declares is truncated.
_MIN_PACKET_FRACTION = 0.9
#: The last packet may end this much (absolute s, fraction of the span) before the declared end.
_END_SLACK_S = 0.5
_END_SLACK_FRACTION = 0.05


def media_error(reason: str, path: str | os.PathLike, what: str) -> MediaError:
    """A :class:`MediaError` whose message names the file."""
    return MediaError(reason, f"{os.fspath(path)}: {what}")


def check_window(start_s: float, end_s: float) -> None:
    """Raises ``ValueError`` unless ``0 <= start_s`` and ``end_s`` is 0 or after ``start_s``."""
    if start_s < 0 or end_s < 0 or (end_s and end_s <= start_s):
        raise ValueError(f"invalid time window start_s={start_s}, end_s={end_s}; allowed: "
                         "0 <= start_s and (end_s == 0 or end_s > start_s)")


def _looks_like_mp4(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return len(head) >= 8 and head[4:8] in _MP4_BOXES


def open_media(path: str | os.PathLike) -> av.container.InputContainer:
    """Opens a media file, mapping every failure to a :class:`MediaError`.

    Args:
        path: the file.

    Returns:
        An open PyAV input container (close it, or use it as a context manager).

    Raises:
        MediaError: ``missing``, ``empty``, ``truncated`` (an MP4 without its index),
            ``not_a_video`` (FFmpeg recognises no container, or it holds no streams) or
            ``decode_error``.
    """
    p = Path(path)
    if not p.exists():
        raise media_error("missing", p, "no such file")
    if not p.is_file():
        raise media_error("not_a_video", p, "not a regular file")
    if p.stat().st_size == 0:
        raise media_error("empty", p, "the file is empty (0 bytes)")
    try:
        container = av.open(os.fspath(p), metadata_errors="ignore")
    except av.error.InvalidDataError as e:
        if "moov atom not found" in str(e) or _looks_like_mp4(p):
            raise media_error("truncated", p, "an MP4/MOV file FFmpeg cannot read (its index, "
                              "the moov atom, is missing); the file was cut off") from e
        raise media_error("not_a_video", p, "FFmpeg recognises no media container in it") from e
    except av.error.FileNotFoundError as e:
        raise media_error("missing", p, "no such file") from e
    except (av.error.FFmpegError, OSError) as e:
        raise media_error("decode_error", p, f"cannot open: {e}") from e
    if not container.streams:
        container.close()
        raise media_error("not_a_video", p, "the container holds no streams")
    return container


def video_stream(container: av.container.InputContainer):
    """The best video stream that is not an attached picture (cover art), or ``None``."""
    streams = [s for s in container.streams.video
               if not (s.disposition & av.stream.Disposition.attached_pic)]
    if not streams:
        return None
    best = container.streams.best("video")
    return best if best in streams else streams[0]


def audio_stream(container: av.container.InputContainer):
    """The best audio stream, or ``None``."""
    if not container.streams.audio:
        return None
    return container.streams.best("audio") or container.streams.audio[0]


def container_start(container: av.container.InputContainer) -> float:
    """The container's start time in seconds (the zero of every time in this package)."""
    start = container.start_time
    return start / 1e6 if start is not None and abs(start) < 2**62 else 0.0


def time_base_of(stream) -> float | None:
    """A stream's time base as a float (Fraction arithmetic per packet is slow)."""
    return float(stream.time_base) if stream.time_base else None


def packet_time(packet, time_base: float | None) -> float | None:
    """A packet's presentation (or, lacking it, decoding) time in seconds."""
    ts = packet.pts if packet.pts is not None else packet.dts
    if ts is None or time_base is None:
        return None
    return ts * time_base


def packet_end(packet, time_base: float | None) -> float | None:
    """The time the packet's content ends (its time plus its duration), in seconds."""
    t = packet_time(packet, time_base)
    if t is not None and packet.duration:
        t += packet.duration * time_base
    return t


def frame_time(frame, time_base: float | None) -> float | None:
    """A decoded frame's time in seconds from its ``pts`` and the stream's (float) time base.

    ``frame.time`` is NaN for frames flushed out of a decoder, so it is not used.
    """
    if frame.pts is None or time_base is None:
        return None
    return frame.pts * time_base


def seek_to(container: av.container.InputContainer, start_s: float, t0: float) -> None:
    """Seeks to the keyframe at or before ``start_s`` (relative time); no-op at 0."""
    if start_s <= 0:
        return
    try:
        container.seek(int((t0 + start_s) * 1e6), backward=True, any_frame=False)
    except av.error.FFmpegError:
        container.seek(0)  # unseekable: decode from the start and drop what is early


def check_complete(path, container: av.container.InputContainer, *, packet_counts: dict,
                   last_end: float | None, start_s: float, end_s: float) -> None:
    """Raises ``MediaError("truncated")`` if the demuxed data falls short of what is declared.

    Args:
        path: the file (for the message).
        container: the container that was demuxed.
        packet_counts: ``{stream: packets demuxed}`` for every demuxed stream.
        last_end: the latest packet end seen (relative seconds), or ``None``.
        start_s: the window start (relative seconds).
        end_s: the window end (0 = the end of the file).
    """
    whole = start_s <= 0 and end_s <= 0
    if whole:
        for stream, count in packet_counts.items():
            declared = stream.frames or 0
            if declared > 0 and count < _MIN_PACKET_FRACTION * declared:
                raise media_error("truncated", path, f"{stream.type} stream delivered {count} of "
                                  f"its {declared} declared packets; the file was cut off")
    if container.duration is None or container.duration <= 0 or last_end is None:
        return
    declared_end = container.duration / 1e6
    expected_end = min(declared_end, end_s) if end_s > 0 else declared_end
    span = max(expected_end - start_s, 0.0)
    slack = max(_END_SLACK_S, _END_SLACK_FRACTION * span)
    if last_end < expected_end - slack:
        raise media_error("truncated", path, f"data ends at {last_end:.2f}s but the container "
                          f"declares {declared_end:.2f}s; the file was cut off")


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
        tb = time_base_of(stream)
        collector = AudioCollector(sample_rate, start_s, end_s, max_seconds, t0, tb)
        counts = {stream: 0}
        last_end = None
        seek_to(container, start_s, t0)
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                counts[stream] += 1
                end = packet_end(packet, tb)
                if end is not None:
                    end -= t0
                    last_end = end if last_end is None else max(last_end, end)
                collector.decode_packet(packet)
                if end_s > 0 and end is not None and end - 1.0 > end_s:
                    break
        except av.error.FFmpegError as e:
            if counts[stream] == 0:
                raise media_error("decode_error", path, f"cannot read packets: {e}") from e
            raise media_error("truncated", path, f"reading stopped after {counts[stream]} "
                              f"packets: {e}") from e
        check_complete(path, container, packet_counts=counts, last_end=last_end,
                       start_s=start_s, end_s=end_s)
        y = collector.finish(stream)
    return check_audio(path, y, collector.errors, min_samples)

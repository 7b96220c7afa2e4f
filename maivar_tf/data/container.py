"""PyAV container helpers shared by :mod:`maivar_tf.data.video` and :mod:`maivar_tf.data.audio`.

Opening a file (every failure mapped to a :class:`~maivar_tf.data.errors.MediaError` reason),
choosing the streams, the time arithmetic on packets and frames, seeking to a window and the
truncation check. MAiVAR (Shaikh et al. 2024) reads each video's frames and its sound track;
both decoders open, seek and time the container the same way, so a clip's frames and its
waveform share one time axis: seconds from the container's start.

Truncation, decided per container after demuxing (see :func:`check_complete`):

* ``av.open`` fails on a file that starts like an MP4/MOV (an ISO-BMFF box such as ``ftyp``):
  its index (the ``moov`` atom, usually written last) was cut off;
* demuxing raises after at least one packet was read (:func:`demux_error`);
* a stream that declares its packet count (MP4, AVI) delivered fewer than 90% of them;
* the last packet ends more than ``max(0.5 s, 5%)`` before the container's declared duration.
"""

from __future__ import annotations

import os
from pathlib import Path

import av

from maivar_tf.data.errors import MediaError

__all__ = [
    "audio_stream",
    "check_complete",
    "check_window",
    "container_start",
    "demux_error",
    "DemuxTally",
    "frame_time",
    "media_error",
    "open_media",
    "packet_end",
    "packet_time",
    "seek_to",
    "time_base_of",
    "video_stream",
]

#: First box types of an ISO-BMFF (MP4/MOV) file; FFmpeg failing on one means a cut-off index.
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")

#: A stream delivering fewer than this fraction of the packets it declares is truncated.
MIN_PACKET_FRACTION = 0.9
#: The last packet may end this much (absolute s, fraction of the span) before the declared end.
END_SLACK_S = 0.5
END_SLACK_FRACTION = 0.05


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


def demux_error(path, packets_read: int, error: Exception) -> MediaError:
    """The error for demuxing that raised: ``decode_error`` before any packet, else ``truncated``.

    Args:
        path: the file (for the message).
        packets_read: packets demuxed before the failure.
        error: what PyAV raised.
    """
    if not packets_read:
        return media_error("decode_error", path, f"cannot read packets: {error}")
    return media_error("truncated", path, f"reading stopped after {packets_read} packets: "
                       f"{error}")


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
            if declared > 0 and count < MIN_PACKET_FRACTION * declared:
                raise media_error("truncated", path, f"{stream.type} stream delivered {count} of "
                                  f"its {declared} declared packets; the file was cut off")
    if container.duration is None or container.duration <= 0 or last_end is None:
        return
    declared_end = container.duration / 1e6
    expected_end = min(declared_end, end_s) if end_s > 0 else declared_end
    span = max(expected_end - start_s, 0.0)
    slack = max(END_SLACK_S, END_SLACK_FRACTION * span)
    if last_end < expected_end - slack:
        raise media_error("truncated", path, f"data ends at {last_end:.2f}s but the container "
                          f"declares {declared_end:.2f}s; the file was cut off")


class DemuxTally:
    """What demuxing saw: packets per stream and the latest packet end (relative seconds).

    Both decoders feed every non-empty packet to :meth:`add` and finish with :meth:`check`,
    so a truncated file is judged the same way whichever decoder reads it.

    Args:
        streams: the streams being demuxed.
        t0: the container start (:func:`container_start`) that times are relative to.
    """

    def __init__(self, streams, t0: float):
        self.streams = list(streams)
        self.t0 = t0
        self.counts = {s.index: 0 for s in self.streams}
        self.time_bases = {s.index: time_base_of(s) for s in self.streams}
        self.last_end: float | None = None

    @property
    def total(self) -> int:
        """Packets counted so far, over all streams."""
        return sum(self.counts.values())

    def time(self, packet) -> float | None:
        """The packet's time relative to the container start, or ``None``."""
        t = packet_time(packet, self.time_bases[packet.stream_index])
        return None if t is None else t - self.t0

    def add(self, packet) -> float | None:
        """Counts one packet; returns the time its content ends (relative), or ``None``."""
        self.counts[packet.stream_index] += 1
        end = packet_end(packet, self.time_bases[packet.stream_index])
        if end is None:
            return None
        end -= self.t0
        self.last_end = end if self.last_end is None else max(self.last_end, end)
        return end

    def check(self, path, container: av.container.InputContainer, start_s: float,
              end_s: float) -> None:
        """:func:`check_complete` on what was counted."""
        check_complete(path, container,
                       packet_counts={s: self.counts[s.index] for s in self.streams},
                       last_end=self.last_end, start_s=start_s, end_s=end_s)

"""Errors raised on bad input media, each with a machine-readable reason.

Real datasets of MAiVAR (Shaikh et al. 2024) hold videos that cannot be used: UCF101 clips
without a sound track, Kinetics downloads cut off or gone. The Beam job turns a
:class:`MediaError` into a dead-letter record ``{"input", "reason", "message"}``;
``maivar predict`` prints its message on one line. Reasons are a closed set
(:data:`REASONS`) so counts can be aggregated by reason.
"""

from __future__ import annotations

#: Every reason a video can be rejected for.
REASONS = (
    "missing",          # the file does not exist
    "empty",            # zero bytes
    "not_a_video",      # FFmpeg cannot open it as a container
    "no_video_stream",  # a container without a video stream
    "no_audio",         # a container without an audio stream (or no decodable audio)
    "too_short",        # fewer frames/samples than can be used
    "truncated",        # decoding stopped on corrupt or missing data
    "unknown_label",    # the annotation names a class outside classInd
    "decode_error",     # anything else the decoder raised
)


class MediaError(Exception):
    """A video that cannot be used, with the reason (one of :data:`REASONS`).

    Args:
        reason: one of :data:`REASONS`.
        message: a one-line human explanation naming the file.
    """

    def __init__(self, reason: str, message: str):
        if reason not in REASONS:
            raise ValueError(f"unknown MediaError reason {reason!r}; allowed: {REASONS}")
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __reduce__(self):  # picklable across Beam worker processes
        return (MediaError, (self.reason, self.message))

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message}

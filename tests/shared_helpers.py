"""Helpers several test folders share: stopping a fit like a kill, a clip without its sound."""

from __future__ import annotations

from pathlib import Path

import keras


class StopAt(keras.callbacks.Callback):
    """Stops a fit when ``epoch`` begins by raising ``error``, leaving its backup as a kill would.

    Args:
        epoch: the epoch (0-based) whose start stops the fit.
        error: the exception type raised.
    """

    def __init__(self, epoch: int, error: type[BaseException] = KeyboardInterrupt) -> None:
        super().__init__()
        self.epoch, self.error = epoch, error

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise self.error


def remux_video_only(src: str | Path, dst: str | Path) -> Path:
    """``src``'s video stream alone, packets copied (no re-encoding), into ``dst``.

    A real clip without an audio track, for the missing-audio tests (written to a tmp folder;
    the clips of ``../shared/testdata`` are never copied into the project).
    """
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        for packet in inp.demux(vin):
            if packet.dts is None:
                continue
            packet.stream = vout
            out.mux(packet)
    with av.open(str(dst)) as check:
        assert not check.streams.audio and check.streams.video
    return Path(dst)

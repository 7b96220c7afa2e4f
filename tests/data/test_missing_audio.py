"""Tests of ``data.on_missing_audio``: which clips without sound become silence, which errors."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from maivar_tf.config import DataConfig
from maivar_tf.data.audio import silent_waveform
from maivar_tf.data.errors import MediaError
from maivar_tf.data.video import decode_segment_frames, load_clip
from tests.conftest import write_test_media


def _cfg(mode: str) -> DataConfig:
    return DataConfig(num_segments=3, frame_short_side=48, crop_size=48, on_missing_audio=mode)


def _remux(src: Path, dst: Path, audio: str) -> Path:
    """``src`` with its audio packets dropped (``empty``) or replaced by random bytes (``junk``)."""
    rng = np.random.default_rng(0)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin, ain = inp.streams.video[0], inp.streams.audio[0]
        vout, aout = out.add_stream_from_template(vin), out.add_stream_from_template(ain)
        for packet in inp.demux(vin, ain):
            if packet.dts is None:
                continue
            if packet.stream.type == "audio":
                if audio == "empty":
                    continue
                junk = av.Packet(rng.integers(0, 256, packet.size, dtype=np.uint8).tobytes())
                junk.pts, junk.dts, junk.time_base = packet.pts, packet.dts, packet.time_base
                junk.stream = aout
                out.mux(junk)
                continue
            packet.stream = vout
            out.mux(packet)
    with av.open(str(dst)) as check:
        assert len(check.streams.audio) == 1
    return dst


def test_no_audio_stream_is_rejected_or_kept_silent(tmp_path):
    path = write_test_media(tmp_path / "mute.mp4", seconds=2.0, fps=10, audio=False)
    with pytest.raises(MediaError) as e:
        load_clip(path, _cfg("reject"))
    assert e.value.reason == "no_audio" and "has no audio stream" in e.value.message
    clip = load_clip(path, _cfg("silence"))
    assert clip.audio_missing and clip.waveform.dtype == np.float32
    assert clip.waveform.shape == (round(clip.video.duration_s * 22050),) == (44100,)
    assert not clip.waveform.any()
    np.testing.assert_array_equal(clip.video.frames,
                                  decode_segment_frames(path, 3, short_side=48).frames)
    # a trimmed window: silence of the window's duration
    window = load_clip(path, _cfg("silence"), start_s=0.5, end_s=1.5)
    assert window.waveform.shape == (22050,) and window.audio_start_s == 0.5


def test_silence_is_at_least_one_stft_window_and_capped_like_decoded_audio(tmp_path):
    path = write_test_media(tmp_path / "one.mp4", num_frames=1, fps=25, audio=False)
    clip = load_clip(path, _cfg("silence"))
    assert clip.waveform.shape == (2048,)  # 0.04 s of video < audio.n_fft samples
    assert silent_waveform(30.0, 100, max_seconds=10.0).shape == (1000,)
    assert silent_waveform(0.01, 100, min_samples=7).shape == (7,)


def test_an_audio_stream_without_samples_is_missing_audio(tmp_path):
    src = write_test_media(tmp_path / "src.mkv", seconds=1.0, fps=10)
    path = _remux(src, tmp_path / "empty.mkv", "empty")
    with pytest.raises(MediaError, match="decodes to no samples") as e:
        load_clip(path, _cfg("reject"))
    assert e.value.reason == "no_audio"
    clip = load_clip(path, _cfg("silence"))
    assert clip.audio_missing and clip.waveform.size >= 2048 and not clip.waveform.any()


def test_corrupt_audio_stays_an_error_under_silence(tmp_path):
    src = write_test_media(tmp_path / "src.mkv", seconds=1.0, fps=10)
    path = _remux(src, tmp_path / "junk.mkv", "junk")
    for mode in ("reject", "silence"):
        with pytest.raises(MediaError, match="failed to decode") as e:
            load_clip(path, _cfg(mode))
        assert e.value.reason == "decode_error"


def test_clips_with_sound_are_unchanged_by_silence(tmp_path):
    path = write_test_media(tmp_path / "tone.mp4", seconds=1.0, fps=10)
    a, b = load_clip(path, _cfg("reject")), load_clip(path, _cfg("silence"))
    assert not a.audio_missing and not b.audio_missing
    np.testing.assert_array_equal(a.waveform, b.waveform)
    assert np.abs(a.waveform).max() > 0.1

"""Tests for maivar_tf.data.audio: mono float32 at a fixed rate from any codec, and errors."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from maivar_tf.data.audio import decode_audio
from maivar_tf.data.errors import MediaError


def _duration(path: Path) -> float:
    with av.open(str(path)) as c:
        return c.duration / 1e6


def _best_lag(a: np.ndarray, b: np.ndarray, max_lag: int = 64) -> tuple[int, float]:
    """Best shift of ``b`` against ``a[max_lag:-max_lag]`` (``a`` has ``max_lag`` extra
    samples each side), and the correlation there."""
    core = b[max_lag:-max_lag]
    best = (0, -1.0)
    for lag in range(-max_lag, max_lag + 1):
        seg = a[2 * max_lag + lag: 2 * max_lag + lag + core.size]
        corr = float(np.corrcoef(seg, core)[0, 1])
        if corr > best[1]:
            best = (lag, corr)
    return best


def test_every_real_clip_decodes_to_mono_float32(clip_paths):
    # AAC 16/22.05/44.1 kHz mono+stereo, Opus 48 kHz, MP3 44.1 kHz stereo
    for path in clip_paths:
        y = decode_audio(path, sample_rate=22050)
        assert y.dtype == np.float32 and y.ndim == 1, path.name
        assert np.isfinite(y).all()
        expect = _duration(path) * 22050
        assert abs(y.size - expect) < 0.01 * expect, (path.name, y.size, expect)
        assert 1e-3 < y.std() and np.abs(y).max() <= 1.5, path.name


def test_sample_rate_sets_the_length(clip_paths):
    path = clip_paths[5]  # AAC 16 kHz stereo: upsampled
    y16 = decode_audio(path, sample_rate=16000)
    y8 = decode_audio(path, sample_rate=8000)
    # 157 AAC frames of 1024 samples = 10.048 s; the container says 10.0 s
    assert abs(y16.size - 10.048 * 16000) < 16
    assert abs(y8.size - 10.048 * 8000) < 8


def test_max_seconds_and_window(clip_paths):
    path = clip_paths[1]  # Opus 48 kHz in Matroska
    assert decode_audio(path, max_seconds=2.0).size == 44100
    full = decode_audio(path)
    part = decode_audio(path, start_s=2.0, end_s=4.0)
    assert part.size == 44100
    lag, corr = _best_lag(full[44100 - 64: 88200 + 64], part)
    assert abs(lag) <= 16 and corr > 0.98, (lag, corr)  # within the resampler's delay
    both = decode_audio(path, start_s=2.0, end_s=9.0, max_seconds=1.0)
    np.testing.assert_array_equal(both, part[:22050])


def test_stereo_is_the_mean_of_the_channels(media_factory):
    # PCM at the target rate: no resampling, so the down-mix is visible exactly
    path = media_factory("stereo.wav", video=False, audio_codec="pcm_s16le",
                         audio_channels=2, seconds=1.0, audio_rate=22050)
    y = decode_audio(path, sample_rate=22050)
    t = np.arange(22050) / 22050
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 660 * t)
    np.testing.assert_allclose(y, (left + right) / 2, atol=2e-4)


@pytest.mark.parametrize("codec,rate", [("libmp3lame", 44100), ("libopus", 48000),
                                        ("aac", 16000)])
def test_resampling_keeps_the_pitch(media_factory, codec, rate):
    path = media_factory(f"tone_{codec}.mkv", video=False, audio_codec=codec, audio_rate=rate,
                         audio_channels=1, seconds=1.0, tone_hz=1000.0)
    y = decode_audio(path, sample_rate=22050)
    assert abs(y.size - 22050) < 0.06 * 22050
    spectrum = np.abs(np.fft.rfft(y[2000:2000 + 16384]))
    peak_hz = np.argmax(spectrum) * 22050 / 16384
    assert abs(peak_hz - 1000.0) < 3.0, peak_hz


def test_min_samples_is_too_short(media_factory):
    path = media_factory("blip.wav", video=False, audio_codec="pcm_s16le", seconds=0.05)
    assert decode_audio(path).size == int(0.05 * 22050)
    with pytest.raises(MediaError) as info:
        decode_audio(path, min_samples=2048)
    assert info.value.reason == "too_short" and str(path) in info.value.message


def test_no_audio_stream(media_factory):
    path = media_factory("mute.mp4", audio=False)
    with pytest.raises(MediaError) as info:
        decode_audio(path)
    assert info.value.reason == "no_audio" and str(path) in info.value.message


@pytest.mark.parametrize("content,reason", [(None, "missing"), (b"", "empty"),
                                            (b"\x00\x01garbage" * 999, "not_a_video")])
def test_bad_files(tmp_path, content, reason):
    path = tmp_path / "bad.m4a"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MediaError) as info:
        decode_audio(path)
    assert info.value.reason == reason and str(path) in info.value.message


def test_truncated_audio(clip_paths, tmp_path):
    src = clip_paths[2]  # AVI with MP3
    path = tmp_path / "half.avi"
    data = src.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError) as info:
        decode_audio(path)
    assert info.value.reason == "truncated"

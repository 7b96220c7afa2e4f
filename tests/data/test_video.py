"""Tests for maivar_tf.data.video: TSN sampling, frame decoding, load_clip and bad inputs."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from maivar_tf import ops
from maivar_tf.config import AudioImageConfig, DataConfig
from maivar_tf.data.errors import MediaError
from maivar_tf.data.video import (
    DecodedClip,
    decode_segment_frames,
    encode_jpeg,
    load_clip,
    sample_segment_indices,
)

# ----------------------------------------------------------------------------- sampling


def test_center_indices_are_tsn_segment_centres():
    # tick = 12.5: int(6.25 + 12.5 k)
    np.testing.assert_array_equal(sample_segment_indices(100, 8, "center"),
                                  [6, 18, 31, 43, 56, 68, 81, 93])
    np.testing.assert_array_equal(sample_segment_indices(25, 25, "center"), np.arange(25))
    assert sample_segment_indices(100, 8).dtype == np.int64


def test_center_indices_repeat_frames_of_short_clips():
    np.testing.assert_array_equal(sample_segment_indices(3, 8, "center"),
                                  [0, 0, 0, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(sample_segment_indices(1, 4, "center"), [0, 0, 0, 0])


def test_random_indices_fall_in_their_segments_and_cover_them():
    n, k = 100, 8
    starts = np.arange(k) * n // k
    ends = (np.arange(k) + 1) * n // k
    rng = np.random.default_rng(0)
    seen = [set() for _ in range(k)]
    for _ in range(400):
        idx = sample_segment_indices(n, k, "random", rng)
        assert idx.shape == (k,) and idx.dtype == np.int64
        assert np.all(idx >= starts) and np.all(idx < ends)
        for s, i in zip(seen, idx, strict=True):
            s.add(int(i))
    # every frame of every segment gets picked eventually (uniform within the segment)
    assert all(len(s) == e - b for s, b, e in zip(seen, starts, ends, strict=True))


def test_random_indices_are_reproducible_with_a_seed():
    a = sample_segment_indices(300, 8, "random", 7)
    b = sample_segment_indices(300, 8, "random", np.random.default_rng(7))
    c = sample_segment_indices(300, 8, "random", 8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_random_indices_of_short_clips_repeat_frames():
    # segments [k*3//8, max((k+1)*3//8, k*3//8 + 1)) all have length 1 -> deterministic
    for seed in range(5):
        np.testing.assert_array_equal(sample_segment_indices(3, 8, "random", seed),
                                      [0, 0, 0, 1, 1, 1, 2, 2])


@pytest.mark.parametrize("args", [(0, 8, "center"), (10, 0, "center"), (10, 8, "middle")])
def test_sampling_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        sample_segment_indices(*args)


# ----------------------------------------------------------------------------- real clips


def _reference_frames(path: Path) -> tuple[list, list[float], Fraction | None]:
    """Every decoded frame and its time, by the plainest possible PyAV loop."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        frames = list(c.decode(vs))
        times = [float(f.pts * vs.time_base) for f in frames]
        sar = vs.codec_context.sample_aspect_ratio
    return frames, times, sar


def test_every_real_clip_decodes_to_the_centre_frames(clip_paths):
    k = 8
    for path in clip_paths:
        clip = decode_segment_frames(path, k, short_side=256)
        ref_frames, ref_times, sar = _reference_frames(path)
        assert clip.num_frames == len(ref_frames), path.name
        assert clip.frames.shape[0] == k and clip.frames.shape[3] == 3
        assert clip.frames.dtype == np.uint8
        h, w = clip.frames.shape[1:3]
        assert min(h, w) == 256, (path.name, h, w)
        display_w = ref_frames[0].width * float(sar or 1)
        aspect = display_w / ref_frames[0].height
        assert abs(w / h - aspect) < 2.0 / 256, (path.name, w / h, aspect)
        ts = clip.timestamps_us
        assert ts.dtype == np.int64 and ts.shape == (k,)
        assert np.all(np.diff(ts) >= 0), (path.name, ts)
        idx = sample_segment_indices(len(ref_frames), k, "center")
        np.testing.assert_array_equal(ts, np.round(np.array(ref_times)[idx] * 1e6))
        assert 0 <= ts[0] and ts[-1] <= clip.duration_s * 1e6
        assert clip.frame_rate > 10 and abs(clip.duration_s - len(ref_frames) / clip.frame_rate) < 0.1
        # the chosen frames: stored-size RGB resized by the serving graph's op, exactly
        for j in (0, k - 1):
            native = ref_frames[idx[j]].to_ndarray(format="rgb24")
            expect = ops.resize_short_side(native, 256, pixel_aspect=float(sar or 1)).numpy()
            np.testing.assert_array_equal(clip.frames[j], expect)
        assert clip.frames.std() > 10, path.name
        assert not np.array_equal(clip.frames[0], clip.frames[-1]), path.name


@pytest.mark.parametrize("sar,shape", [(Fraction(2, 1), (48, 128)), (Fraction(1, 2), (72, 48)),
                                       (Fraction(1, 1), (48, 64))])
def test_sample_aspect_ratio_is_honoured(tmp_path, sar, shape):
    """Stored 64x48: the display shape in square pixels, shorter side 48; square pixels already
    at that size come out exactly as converted (no resampling)."""
    path = tmp_path / "sar.mkv"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("mpeg4", rate=10)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        vs.codec_context.sample_aspect_ratio = sar
        xx = np.arange(64)[None, :, None]
        for i in range(4):
            img = np.broadcast_to(((xx * 4 + i * 30 + np.arange(3) * 60) % 256).astype(np.uint8),
                                  (48, 64, 3)).copy()
            for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode(None):
            out.mux(packet)
    clip = decode_segment_frames(path, 2, short_side=48)
    assert clip.frames.shape == (2, *shape, 3)
    ref_frames, _, ref_sar = _reference_frames(path)
    assert ref_sar == sar
    idx = sample_segment_indices(len(ref_frames), 2)
    for j, i in enumerate(idx):
        native = ref_frames[i].to_ndarray(format="rgb24")
        expect = ops.resize_short_side(native, 48, pixel_aspect=float(sar)).numpy()
        np.testing.assert_array_equal(clip.frames[j], expect)
        if sar == 1:
            np.testing.assert_array_equal(clip.frames[j], native)


def test_random_mode_is_seeded_and_stays_in_segments(clip_paths):
    path = clip_paths[3]  # vas_baby: 301 frames
    a = decode_segment_frames(path, 8, short_side=64, mode="random", seed=3)
    b = decode_segment_frames(path, 8, short_side=64, mode="random", seed=3)
    c = decode_segment_frames(path, 8, short_side=64, mode="random", seed=4)
    np.testing.assert_array_equal(a.timestamps_us, b.timestamps_us)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.array_equal(a.timestamps_us, c.timestamps_us)
    assert min(a.frames.shape[1:3]) == 64
    # each timestamp lies in its segment's time span
    fps, n = a.frame_rate, a.num_frames
    seg = np.arange(8)
    assert np.all(a.timestamps_us >= np.floor(seg * n / 8) / fps * 1e6 - 1)
    assert np.all(a.timestamps_us < np.ceil((seg + 1) * n / 8) / fps * 1e6 + 1)


def test_load_clip_returns_frames_and_mono_audio(clip_paths):
    cfg = DataConfig(num_segments=4, frame_short_side=128, crop_size=112)
    for path in clip_paths:
        clip = load_clip(path, cfg)
        assert isinstance(clip, DecodedClip)
        assert clip.video.frames.shape[0] == 4 and min(clip.video.frames.shape[1:3]) == 128
        assert clip.sample_rate == 22050
        y = clip.waveform
        assert y.dtype == np.float32 and y.ndim == 1 and np.isfinite(y).all()
        with av.open(str(path)) as c:
            duration = c.duration / 1e6
        expect = min(duration, cfg.audio.max_seconds) * 22050
        assert abs(y.size - expect) <= 0.01 * expect + 1100, (path.name, y.size, expect)
        assert y.std() > 1e-3, path.name


def test_load_clip_trims_a_kinetics_window(clip_paths):
    path = clip_paths[1]  # the Kinetics clip, 30 fps, 10.4 s
    cfg = DataConfig(num_segments=8, frame_short_side=64, crop_size=64,
                     audio=AudioImageConfig(max_seconds=0.0))
    clip = load_clip(path, cfg, start_s=2.0, end_s=4.0)
    ts = clip.video.timestamps_us
    assert np.all(ts >= 2_000_000) and np.all(ts < 4_000_000), ts
    assert abs(clip.video.num_frames - 60) <= 1
    assert abs(clip.waveform.size - 2 * 22050) <= 2
    full = load_clip(path, cfg)
    assert full.video.num_frames == 310
    assert abs(full.waveform.size - 10.37 * 22050) < 0.01 * 22050 * 10


def test_short_clip_repeats_frames(media_factory):
    path = media_factory("three.mp4", num_frames=3, fps=10, seconds=0.5)
    clip = decode_segment_frames(path, 8, short_side=48)
    assert clip.num_frames == 3
    np.testing.assert_array_equal(clip.timestamps_us,
                                  np.array([0, 0, 0, 1, 1, 2, 2, 2]) * 100_000)
    np.testing.assert_array_equal(clip.frames[0], clip.frames[2])
    assert not np.array_equal(clip.frames[2], clip.frames[3])


def test_encode_jpeg_round_trips(clip_paths):
    frame = decode_segment_frames(clip_paths[0], 1, short_side=64).frames[0]
    data = encode_jpeg(frame, quality=95)
    assert data[:2] == b"\xff\xd8"
    import io

    from PIL import Image

    back = np.asarray(Image.open(io.BytesIO(data)))
    assert back.shape == frame.shape
    assert np.abs(back.astype(int) - frame.astype(int)).mean() < 4
    with pytest.raises(ValueError):
        encode_jpeg(frame.astype(np.float32))


# ----------------------------------------------------------------------------- bad inputs


def _expect(reason: str, path: Path, fn=decode_segment_frames, *args, **kwargs) -> MediaError:
    args = args or (4,)
    with pytest.raises(MediaError) as info:
        fn(path, *args, **kwargs)
    assert info.value.reason == reason, info.value.message
    assert str(path) in info.value.message
    return info.value


def test_missing_file(tmp_path):
    _expect("missing", tmp_path / "nope.mp4")


def test_zero_bytes(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    _expect("empty", path)


def test_random_bytes_and_text_are_not_videos(tmp_path):
    path = tmp_path / "noise.avi"
    path.write_bytes(np.random.default_rng(0).bytes(50_000))
    _expect("not_a_video", path)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 100)
    _expect("not_a_video", text)


@pytest.mark.parametrize("index", [0, 1, 2])  # mp4 (moov at the end), mkv, avi
def test_real_clip_cut_in_half_is_truncated(clip_paths, tmp_path, index):
    src = clip_paths[index]
    path = tmp_path / f"half{src.suffix}"
    data = src.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _expect("truncated", path)


def test_faststart_mp4_cut_short_is_truncated(clip_paths, tmp_path):
    """An MP4 with its index first still opens; the missing packets give it away."""
    full = tmp_path / "faststart.mp4"
    with av.open(str(clip_paths[4])) as src, av.open(str(full), "w",
                                                      options={"movflags": "faststart"}) as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in (src.streams.video[0],
                                                                       src.streams.audio[0])}
        for packet in src.demux(*[src.streams[i] for i in streams]):
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            dst.mux(packet)
    assert decode_segment_frames(full, 4, short_side=32).num_frames == 180
    cut = tmp_path / "cut.mp4"
    data = full.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.7)])
    err = _expect("truncated", cut)
    assert "declared" in err.message


def test_video_without_audio(media_factory):
    path = media_factory("silent.mp4", audio=False)
    assert decode_segment_frames(path, 4, short_side=48).num_frames == 10
    _expect("no_audio", path, load_clip, DataConfig())


def test_audio_only_file_has_no_video_stream(media_factory):
    path = media_factory("tone.wav", video=False, audio_codec="pcm_s16le")
    _expect("no_video_stream", path)
    _expect("no_video_stream", path, load_clip, DataConfig())


def test_too_short(media_factory, clip_paths):
    # 2 frames but 0.05 s of audio: fewer samples than n_fft = 2048
    path = media_factory("blip.mkv", num_frames=2, seconds=0.05, audio_codec="pcm_s16le")
    _expect("too_short", path, load_clip, DataConfig())
    # a window after the end holds no frames (and no audio)
    _expect("too_short", clip_paths[4], decode_segment_frames, 4, start_s=100.0, end_s=101.0)
    _expect("too_short", clip_paths[4], load_clip, DataConfig(), start_s=100.0, end_s=101.0)


def test_undecodable_video_packets_are_a_decode_error(tmp_path):
    path = tmp_path / "garbage.mkv"
    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("mjpeg", rate=10)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuvj420p"
        for i in range(10):
            packet = av.Packet(rng.bytes(2000))
            packet.stream = vs
            packet.pts = packet.dts = i
            packet.time_base = Fraction(1, 10)
            out.mux(packet)
    _expect("decode_error", path)


def test_bad_window_is_a_value_error(clip_paths):
    with pytest.raises(ValueError, match="start_s"):
        decode_segment_frames(clip_paths[0], 4, start_s=3.0, end_s=2.0)


def test_copy_of_a_real_clip_decodes_like_the_original(clip_paths, tmp_path):
    """Guards the tests above: a byte-identical copy in tmp_path is fine."""
    path = tmp_path / clip_paths[2].name
    shutil.copy(clip_paths[2], path)
    a = decode_segment_frames(path, 4, short_side=32)
    b = decode_segment_frames(clip_paths[2], 4, short_side=32)
    np.testing.assert_array_equal(a.frames, b.frames)


def test_fewer_decoded_frames_than_packets_resamples(tmp_path):
    """One corrupt packet of 21: the indices are chosen again from the 20 that decode."""
    path = tmp_path / "one_bad.mkv"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("mjpeg", rate=10)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuvj420p"
        for i in range(20):
            img = np.full((48, 64, 3), i * 12, np.uint8)
            for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode(None):
            out.mux(packet)
        bad = av.Packet(np.random.default_rng(0).bytes(3000))
        bad.stream = vs
        bad.pts = bad.dts = 20
        bad.time_base = Fraction(1, 10)
        out.mux(bad)
    clip = decode_segment_frames(path, 21, short_side=48)
    assert clip.num_frames == 20
    expect = sample_segment_indices(20, 21, "center") * 100_000
    np.testing.assert_array_equal(clip.timestamps_us, expect)
    # the frames' grey levels follow the chosen indices (mjpeg is lossy: +-3)
    levels = clip.frames.reshape(21, -1).mean(axis=1)
    np.testing.assert_allclose(levels, sample_segment_indices(20, 21) * 12, atol=3)


def test_variable_frame_rate_uses_real_timestamps(tmp_path):
    """Frames at irregular times: sampling counts frames, timestamps are the frames' own."""
    path = tmp_path / "vfr.mkv"
    times_ms = np.cumsum([0] + [40, 40, 120, 40, 300, 40, 40, 80, 40, 200, 40] * 3)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("mpeg4", rate=25)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        vs.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), (i * 7) % 256, np.uint8),
                                               format="rgb24")
            frame.pts = int(t)
            frame.time_base = Fraction(1, 1000)
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode(None):
            out.mux(packet)
    clip = decode_segment_frames(path, 5, short_side=48)
    assert clip.num_frames == len(times_ms)
    idx = sample_segment_indices(len(times_ms), 5)
    np.testing.assert_array_equal(clip.timestamps_us, times_ms[idx] * 1000)

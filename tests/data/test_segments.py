"""Tests of the per-segment audio windows and of the per-segment audio-images of a clip."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from maivar_tf.config import AudioImageConfig, DataConfig
from maivar_tf.data.annotations import VideoRecord
from maivar_tf.data.audio_image import render_audio_images
from maivar_tf.data.clips import clip_example_from_record
from maivar_tf.data.segments import cut_windows, segment_centres, segment_windows
from maivar_tf.data.video import load_clip

SR = 100  # 1 s = 100 samples: window arithmetic in round numbers


def test_windows_are_centred_and_moved_inside_at_the_edges():
    # 10 s clip, 1 s windows: 0.2 s and 9.9 s are pushed inside, 5.0 s is centred
    w = segment_windows([0.2, 0.5, 5.0, 9.5, 9.9], 1000, SR, 1.0)
    assert w.dtype == np.int64
    assert w.tolist() == [[0, 100], [0, 100], [450, 550], [900, 1000], [900, 1000]]
    # an odd window: start = floor(c * sr - L / 2 + 0.5): 5.0 s -> 500 - 12.5 + 0.5 -> 488
    assert segment_windows([5.0, 0.0], 1000, SR, 0.25).tolist() == [[488, 513], [0, 25]]
    # centres before the start or after the end (a trimmed clip's stray frame) stay inside
    assert segment_windows([-3.0, 42.0], 1000, SR, 1.0).tolist() == [[0, 100], [900, 1000]]


def test_clip_shorter_than_one_window_gives_the_whole_clip_to_every_segment():
    w = segment_windows([0.0, 0.3, 0.6], 60, SR, 1.0)
    assert w.tolist() == [[0, 60]] * 3
    assert segment_windows([0.1], 100, SR, 1.0).tolist() == [[0, 100]]  # exactly one window


def test_clip_shorter_than_k_windows_overlaps_them_with_equal_lengths():
    # 2.5 s clip, K = 8 segments at TSN centres, 1 s windows: they overlap, all 100 long
    centres = (np.arange(8) + 0.5) * 2.5 / 8
    w = segment_windows(centres, 250, SR, 1.0)
    # centres 0.156, 0.469, 0.781, ... s -> starts floor(100 c - 49.5), clipped to [0, 150]
    assert w.tolist() == [[0, 100], [0, 100], [28, 128], [59, 159], [91, 191], [122, 222],
                          [150, 250], [150, 250]]
    assert set((w[:, 1] - w[:, 0]).tolist()) == {100}


def test_segment_windows_rejects_bad_arguments():
    for args in (([0.0], 0, SR, 1.0), ([0.0], 10, 0, 1.0), ([0.0], 10, SR, 0.0),
                 ([[0.0]], 10, SR, 1.0)):
        with pytest.raises(ValueError, match="segment_windows"):
            segment_windows(*args)


def test_cut_windows_cuts_each_window_and_checks_them():
    y = np.arange(10, dtype=np.float32)
    batch = cut_windows(y, np.array([[0, 3], [7, 10], [4, 7]]))
    assert batch.dtype == np.float32 and batch.shape == (3, 3)
    assert batch.tolist() == [[0, 1, 2], [7, 8, 9], [4, 5, 6]]
    with pytest.raises(ValueError, match="unequal"):
        cut_windows(y, np.array([[0, 3], [0, 4]]))
    with pytest.raises(ValueError, match="outside"):
        cut_windows(y, np.array([[8, 11]]))


def test_segment_centres_are_relative_to_the_audio_start():
    np.testing.assert_allclose(segment_centres([2_500_000, 4_000_000], 2.0), [0.5, 2.0])


AVE = "ave_0lFf-HP86Q0_female_speech.mp4"


@pytest.mark.parametrize("start_s,end_s", [(0.0, 0.0), (2.0, 7.5)])
def test_per_segment_images_equal_the_renderer_on_each_window(clips_dir, start_s, end_s):
    """The K PNGs are render_audio_images on the cut windows, exactly; trims move the centres."""
    cfg = DataConfig(video_root=str(clips_dir), num_segments=5, frame_short_side=64,
                     crop_size=64, representations=("chromagram", "waveplot"),
                     segment_audio=True,
                     audio=AudioImageConfig(image_size=48, segment_seconds=1.5))
    record = VideoRecord(AVE, 0, "speech", "train", start_s=start_s, end_s=end_s,
                         spans=((5.0, 10.0),))
    clip = clip_example_from_record(record, cfg)
    decoded = load_clip(clips_dir / AVE, cfg, start_s=start_s, end_s=end_s)
    y = decoded.waveform
    centres = np.asarray(clip.frame_timestamps_us) / 1e6 - start_s
    windows = segment_windows(centres, y.shape[0], cfg.audio.sample_rate, 1.5)
    assert (windows[:, 1] - windows[:, 0] == int(1.5 * cfg.audio.sample_rate)).all()
    expected = render_audio_images(cut_windows(y, windows), cfg.representations, cfg.audio)
    for rep in cfg.representations:
        pngs = clip.segment_audio_images_png[rep]
        assert len(pngs) == 5
        got = np.stack([tf.io.decode_png(p).numpy() for p in pngs])
        np.testing.assert_array_equal(got, expected[rep])
        assert len({g.tobytes() for g in got}) == 5  # five different windows
    # the clip-level image is the whole waveform's, as without segment_audio
    plain = clip_example_from_record(record, dataclasses.replace(cfg, segment_audio=False))
    assert plain.audio_images_png == clip.audio_images_png
    assert plain.segment_audio_images_png == {}
    assert clip.spans == [(5_000_000, 10_000_000, 0)] and not clip.audio_missing

"""The decoder's schema-2 outputs: segment times and span labels, has_spans, audio_missing and
the per-segment audio-images, for the segments kept (all, or an evenly spread subset).

The example is built by hand with ``schema.ClipExample``: six frames at 0, 0.5, ..., 2.5 s and
two spans, [1.0, 2.0) s of class 2 and [2.5, 3.0) s of class 1, so one frame lies exactly on a
span's start (1.0 s, inside), one exactly on its end (2.0 s, outside) and one on the second
span's start (2.5 s).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from maivar_tf.data import schema
from maivar_tf.data.decode import (
    decode_example,
    decode_examples,
    segment_labels,
    segment_subset,
)

K = 6
STAMPS_US = [0, 500_000, 1_000_000, 1_500_000, 2_000_000, 2_500_000]
SPANS = [(1_000_000, 2_000_000, 2), (2_500_000, 3_000_000, 1)]
LABELS = [-1, -1, 2, 2, -1, 1]
REPS = ("chromagram", "mfcc")
IMG = 12
SIDE = 16


def _example(spans=SPANS, audio_missing=True, segment_images=True, version=2):
    rng = np.random.default_rng(7)
    frames = [tf.io.encode_jpeg(np.full((SIDE, SIDE, 3), 20 * k, np.uint8)).numpy()
              for k in range(K)]
    seg = {r: rng.integers(0, 256, (K, IMG, IMG, 3), dtype=np.uint8) for r in REPS}
    clip = schema.ClipExample(
        example_id="c/x.mp4", data_path="c/x.mp4", label_index=2, label_string="c",
        split="test", frames_jpeg=frames, frame_timestamps_us=STAMPS_US, height=SIDE,
        width=SIDE, frame_rate=2.0, sample_rate=16000,
        audio_images_png={r: tf.io.encode_png(seg[r][0]).numpy() for r in REPS},
        spans=spans, audio_missing=audio_missing,
        segment_audio_images_png={r: [tf.io.encode_png(img).numpy() for img in seg[r]]
                                  for r in REPS} if segment_images else {})
    example = schema.to_sequence_example(clip)
    if version == 1:
        del example.context.feature[schema.AUDIO_MISSING]
    return example.SerializeToString(), seg


@pytest.fixture(scope="module")
def example():
    return _example()


def test_all_segments_times_labels_flags_and_per_segment_images(example):
    serialized, seg = example
    out = decode_example(serialized, representations=("mfcc",), crop_size=SIDE,
                         image_size=IMG, segment_representations=REPS)
    assert out["segment_labels"].dtype == tf.int64
    assert out["segment_labels"].numpy().tolist() == LABELS
    assert out["segment_times"].dtype == tf.float32
    np.testing.assert_allclose(out["segment_times"].numpy(), [0, 0.5, 1.0, 1.5, 2.0, 2.5])
    assert bool(out["has_spans"]) and bool(out["audio_missing"])
    assert set(out["audio_segments"]) == set(REPS)
    for r in REPS:
        assert out["audio_segments"][r].shape == (K, IMG, IMG, 3)
        np.testing.assert_array_equal(out["audio_segments"][r].numpy(), seg[r])
    plain = decode_example(serialized, representations=("mfcc",), crop_size=SIDE)
    assert "audio_segments" not in plain  # only when asked for


@pytest.mark.parametrize("static", [True, False])
def test_a_subset_keeps_the_frames_segments_times_and_labels_together(example, static):
    serialized, seg = example
    pick = segment_subset(K, 3)
    assert pick == [1, 3, 5]
    out = decode_example(serialized, representations=(), crop_size=SIDE, num_segments=3,
                         stored_segments=K if static else None, image_size=IMG,
                         segment_representations=("chromagram",))
    assert out["segment_labels"].numpy().tolist() == [-1, 2, 1]
    np.testing.assert_allclose(out["segment_times"].numpy(), [0.5, 1.5, 2.5])
    np.testing.assert_array_equal(out["audio_segments"]["chromagram"].numpy(),
                                  seg["chromagram"][pick])
    frames = out["frames"].numpy()
    np.testing.assert_allclose(frames.reshape(3, -1).mean(axis=1), [20, 60, 100], atol=2)


def test_no_spans_and_version_1_records_are_background_with_audio_present():
    for serialized in (_example(spans=(), audio_missing=False)[0],
                       _example(spans=(), audio_missing=True, segment_images=False,
                                version=1)[0]):
        out = decode_example(serialized, representations=(), crop_size=SIDE)
        assert out["segment_labels"].numpy().tolist() == [-1] * K
        assert not bool(out["has_spans"]) and not bool(out["audio_missing"])
        np.testing.assert_allclose(out["segment_times"].numpy(),
                                   np.array(STAMPS_US) / 1e6, rtol=1e-6)


def test_segment_labels_first_span_wins_and_bounds_are_half_open():
    times = tf.constant([0, 10, 19, 20, 25, 40], tf.int64)
    got = segment_labels(times, tf.constant([10, 15], tf.int64), tf.constant([20, 30], tf.int64),
                         tf.constant([4, 7], tf.int64))
    assert got.numpy().tolist() == [-1, 4, 4, 7, 7, -1]
    empty = tf.zeros([0], tf.int64)
    assert segment_labels(times, empty, empty, empty).numpy().tolist() == [-1] * 6


def test_in_memory_decoding_carries_the_new_outputs(example):
    serialized, seg = example
    got = decode_examples([serialized, serialized], representations=(), crop_size=SIDE,
                          num_segments=3, stored_segments=K, image_size=IMG,
                          segment_representations=("mfcc",))
    assert len(got) == 2
    assert got[1]["segment_labels"].tolist() == [-1, 2, 1]  # segments 1, 3, 5 of 6
    np.testing.assert_array_equal(got[1]["audio_segments"]["mfcc"], seg["mfcc"][[1, 3, 5]])
    assert bool(got[0]["audio_missing"]) and bool(got[0]["has_spans"])

"""The one decoder: serialized SequenceExample -> frames, audio-images, label and id.

Examples are written with ``schema.to_sequence_example`` (known frames and PNGs); the decoder
must give back the same pixels, crop them with ``maivar_tf.ops``, keep evenly spread segments,
and agree between its graph (``decode_example`` mapped by tf.data) and in-memory
(``decode_examples``) forms.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from maivar_tf import ops
from maivar_tf.data import schema
from maivar_tf.data.decode import (
    CROP_MODES,
    decode_example,
    decode_examples,
    decode_parsed,
    segment_subset,
)

K = 6
H, W = 36, 44
CROP = 32
IMG = 20
REPS = ("chromagram", "mfcc")


def _example(i: int) -> tuple[bytes, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:H, 0:W + 4 * i]
    frames = np.stack([np.stack([(xx * 5 + 9 * t) % 256, (yy * 7 + i) % 256,
                                 np.full_like(xx, 30 * t) % 256], -1).astype(np.uint8)
                       for t in range(K)])
    images = {r: rng.integers(0, 256, (IMG, IMG, 3), dtype=np.uint8) for r in REPS}
    clip = schema.ClipExample(
        example_id=f"c/{i}.mp4", data_path=f"c/{i}.mp4", label_index=i, label_string="c",
        split="test", frames_jpeg=[tf.io.encode_jpeg(f, quality=95).numpy() for f in frames],
        frame_timestamps_us=list(range(K)), height=H, width=W + 4 * i, frame_rate=10.0,
        sample_rate=16000,
        audio_images_png={r: tf.io.encode_png(img).numpy() for r, img in images.items()})
    return schema.to_sequence_example(clip).SerializeToString(), frames, images


@pytest.fixture(scope="module")
def examples():
    return [_example(i) for i in range(3)]


def _jpeg_frames(serialized: bytes) -> np.ndarray:
    parsed = schema.parse_sequence_example(serialized, ())
    return np.stack([tf.io.decode_jpeg(b).numpy() for b in parsed[schema.IMAGE_ENCODED]])


def test_centre_crop_audio_images_label_and_id(examples):
    serialized, frames, images = examples[1]
    out = decode_example(serialized, representations=REPS, crop_size=CROP, image_size=IMG)
    assert set(out) == {"frames", "audio_images", "label", "example_id", "segment_times",
                        "segment_labels", "has_spans", "audio_missing"}
    assert out["frames"].shape == (K, CROP, CROP, 3) and out["frames"].dtype == tf.uint8
    whole = _jpeg_frames(serialized)
    np.testing.assert_array_equal(out["frames"].numpy(),
                                  ops.center_crop(whole, CROP).numpy())
    assert np.abs(out["frames"].numpy().astype(float)
                  - ops.center_crop(frames, CROP).numpy()).mean() < 4.0  # JPEG loss only
    for rep in REPS:  # PNG is lossless
        np.testing.assert_array_equal(out["audio_images"][rep].numpy(), images[rep])
    assert int(out["label"]) == 1 and out["example_id"].numpy() == b"c/1.mp4"


def test_crop_none_keeps_whole_frames_and_random_needs_a_seed(examples):
    serialized, _, _ = examples[2]
    out = decode_example(serialized, representations=(), crop_size=CROP, crop="none")
    np.testing.assert_array_equal(out["frames"].numpy(), _jpeg_frames(serialized))
    assert "audio_images" not in out
    seed = tf.constant([3, 4], tf.int64)
    rnd = decode_example(serialized, representations=(), crop_size=CROP, crop="random",
                         seed=seed)
    np.testing.assert_array_equal(
        rnd["frames"].numpy(),
        ops.random_crop_and_flip(_jpeg_frames(serialized), CROP, seed).numpy())
    with pytest.raises(ValueError, match="needs a seed"):
        decode_example(serialized, representations=(), crop_size=CROP, crop="random")
    with pytest.raises(ValueError, match="allowed: center, none, random"):
        decode_example(serialized, representations=(), crop_size=CROP, crop="corner")
    assert CROP_MODES == ("center", "none", "random")


def test_segments_are_evenly_spread_whether_the_stored_count_is_known_or_not(examples):
    serialized, _, _ = examples[0]
    assert segment_subset(8, 4) == [1, 3, 5, 7]
    assert segment_subset(4, 2) == [1, 3]
    whole = _jpeg_frames(serialized)
    for wanted in (1, 2, 4, K):
        static = decode_example(serialized, representations=(), crop_size=CROP, crop="none",
                                num_segments=wanted, stored_segments=K)
        counted = decode_example(serialized, representations=(), crop_size=CROP, crop="none",
                                 num_segments=wanted)
        np.testing.assert_array_equal(static["frames"].numpy(),
                                      whole[segment_subset(K, wanted)])
        np.testing.assert_array_equal(counted["frames"].numpy(), static["frames"].numpy())


def test_audio_only_and_graph_mode(examples):
    serialized = [s for s, _, _ in examples]

    def decode(s):
        return decode_parsed(schema.parse_sequence_example(s, ("mfcc",)),
                             representations=("mfcc",), crop_size=CROP, image_size=IMG,
                             include_frames=False)

    ds = tf.data.Dataset.from_tensor_slices(serialized).map(decode)
    assert "frames" not in ds.element_spec
    assert ds.element_spec["audio_images"]["mfcc"].shape.as_list() == [IMG, IMG, 3]
    got = [el["audio_images"]["mfcc"] for el in ds.as_numpy_iterator()]
    for (_, _, images), image in zip(examples, got, strict=True):
        np.testing.assert_array_equal(image, images["mfcc"])


def test_decode_examples_in_memory_equals_the_mapped_decoder(examples):
    serialized = [s for s, _, _ in examples]
    options = dict(representations=REPS, crop_size=CROP, num_segments=4, stored_segments=K,
                   image_size=IMG)
    got = decode_examples(serialized, **options)
    assert [g["example_id"] for g in got] == [b"c/0.mp4", b"c/1.mp4", b"c/2.mp4"]
    assert [g["label"] for g in got] == [0, 1, 2]
    for s, g in zip(serialized, got, strict=True):
        ref = decode_example(s, **options)
        np.testing.assert_array_equal(g["frames"], ref["frames"].numpy())
        for rep in REPS:
            np.testing.assert_array_equal(g["audio_images"][rep],
                                          ref["audio_images"][rep].numpy())
    whole = decode_examples(serialized, representations=(), crop_size=CROP, crop="none")
    assert [g["frames"].shape[2] for g in whole] == [W, W + 4, W + 8]  # sizes may differ
    assert decode_examples([], representations=(), crop_size=CROP) == []
    with pytest.raises(ValueError, match="crop='random' is for the training pipeline"):
        decode_examples(serialized, representations=(), crop_size=CROP, crop="random")

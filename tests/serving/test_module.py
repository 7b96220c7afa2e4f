"""The serving module in memory: construction, TSN ten crops, and serving = extraction.

The acceptance test of the one-house refactor lives here: the export's ``serve_media`` on
frames of another size than training (the 320x240 UCF101 clip, sent as decoded) gives the
features that decoding at the training size + JPEG + decoding + extraction gives, within the
tolerance the JPEG round trip leaves.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from maivar_tf import ops  # noqa: E402
from maivar_tf.models.backbones import video_features  # noqa: E402
from maivar_tf.serving import (  # noqa: E402
    SIGNATURE_FEATURES,
    SIGNATURE_MEDIA,
    ExportError,
    ServingModule,
    as_numpy_outputs,
    serving_module,
)
from tests.serving.helpers import CLASSES, REPRESENTATION, K  # noqa: E402

#: Per segment, ||serve - extract|| / ||extract|| of the video features may reach this (JPEG).
VIDEO_FEATURE_RTOL = 0.03
#: And the export's serve_media and serving_default probabilities may differ this much.
PROBABILITY_ATOL = 0.06


def test_constructor_checks_the_run(tiny):
    run = tiny.run
    with pytest.raises(ValueError, match="takes 2 segments but num_segments is 3"):
        ServingModule(run.fusion, run.video, run.audio, CLASSES, run.cfg.data,
                      representation=REPRESENTATION, num_segments=3)
    with pytest.raises(ValueError, match="non-empty single lines"):
        ServingModule(run.fusion, run.video, run.audio, ("a", "b\nc"), run.cfg.data,
                      representation=REPRESENTATION)
    with pytest.raises(ValueError, match="empty class list"):
        ServingModule(run.fusion, run.video, run.audio, (), run.cfg.data,
                      representation=REPRESENTATION)
    with pytest.raises(ValueError, match="temperature 0.0: allowed: a finite number > 0"):
        ServingModule(run.fusion, run.video, run.audio, CLASSES, run.cfg.data,
                      representation=REPRESENTATION, temperature=0.0)
    with pytest.raises(ValueError, match="expected 'video_features' and 'audio_features'"):
        ServingModule(run.video.model, run.video, run.audio, CLASSES, run.cfg.data,
                      representation=REPRESENTATION)
    # through the exporter's factory, the same errors are ExportErrors (one CLI line)
    with pytest.raises(ExportError, match="takes 2 segments but num_segments is 3"):
        serving_module(dataclasses.replace(run, num_segments=3))


def test_module_describes_itself(module):
    assert module.class_names == CLASSES and module.top_k == 5
    assert (module.num_segments, module.crop_size, module.short_side) == (K, 224, 256)
    assert set(module.signatures()) == {SIGNATURE_FEATURES, SIGNATURE_MEDIA, "serve_waveform"}
    assert [s.name for s in module.input_signatures()[SIGNATURE_MEDIA]] == ["frames",
                                                                           "audio_image"]
    # the in-memory table is filled from the list: the same names, in logit order
    names = module.label_table.lookup(tf.range(len(CLASSES) + 1, dtype=tf.int64)).numpy()
    assert [n.decode() for n in names] == [*CLASSES, "<unknown>"]


def test_ten_crop_video_features_average_tsn_crops_like_extraction(tiny):
    run = dataclasses.replace(tiny.run, ten_crop=True)
    module = serving_module(run)
    frames = np.random.default_rng(6).integers(0, 256, (2, K, 256, 300, 3), dtype=np.uint8)
    got = module.media_features(frames, np.zeros((2, 299, 299, 3), np.uint8))[0].numpy()
    crops = ops.ten_crop(tf.constant(frames), 224).numpy().astype(np.float32)  # [10,B,K,c,c,3]
    feats = np.asarray(run.video.model(crops.reshape(-1, 224, 224, 3)))
    want = feats.reshape(10, 2, K, -1).mean(axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # frames of another size are resized (shorter side 256) before the ten crops
    small = frames[:, :, ::2, ::2]
    resized = ops.resize_short_side(small, 256)
    np.testing.assert_allclose(
        module.media_features(small, np.zeros((2, 299, 299, 3), np.uint8))[0].numpy(),
        video_features(run.video, resized, 224, ten_crop=True).numpy(), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- acceptance


def extraction_features(run, path: str, data) -> tuple[np.ndarray, np.ndarray, dict]:
    """The features path: the Beam function (decode at ``data``'s short side, JPEG, PNG),
    the shards' decoder and the backbones, as ``maivar extract`` maps them."""
    from maivar_tf.data import schema
    from maivar_tf.data.annotations import VideoRecord
    from maivar_tf.data.clips import clip_example_from_record
    from maivar_tf.data.decode import decode_example

    record = VideoRecord(path=path, label_index=0, label_string=CLASSES[0], split="test",
                         example_id="clip")
    serialized = schema.to_sequence_example(clip_example_from_record(record, data))
    decoded = decode_example(serialized.SerializeToString(), representations=(REPRESENTATION,),
                             crop_size=data.crop_size, num_segments=K, stored_segments=K,
                             crop="center", image_size=data.audio.image_size)
    video = video_features(run.video, decoded["frames"][None], data.crop_size).numpy()
    audio = run.audio(decoded["audio_images"][REPRESENTATION][None]).numpy()
    decoded["whole_frames"] = decode_example(serialized.SerializeToString(), representations=(),
                                             crop_size=data.crop_size, crop="none")["frames"]
    return video, audio, decoded


def test_serve_media_on_other_frame_sizes_gives_the_extraction_features(
        tiny, module, exported, clip_paths):
    """serve_media on 320x240 frames == decode at 256 + JPEG + decode + extraction.

    The UCF101 clip is 320x240. Decoded with ``frame_short_side=240`` its frames stay
    320x240 and go to ``serve_media`` of a model trained with ``frame_short_side=256``, which
    resizes them with :func:`maivar_tf.ops.resize_short_side`: the very op decoding resizes
    with, so before JPEG the pixels are identical (asserted exactly). What is left is the JPEG
    (quality 90) round trip of the stored frames (a mean error of 1.5 grey levels, measured).

    Tolerance: per segment, the video features differ by at most ``VIDEO_FEATURE_RTOL`` = 3%
    of their L2 norm (measured: 1.1% with the tiny backbone; 0.4% with the full-size
    BNInception, random weights, measured once outside the suite), and the probabilities of
    the export's ``serve_media`` and of its ``serving_default`` on the extracted features by
    at most ``PROBABILITY_ATOL`` = 0.06 (measured: 0.023; the tiny head standardises its
    inputs with the statistics of six segments, which magnifies feature differences). The
    audio-image is PNG (lossless), so the audio features are equal, and ``serve_media`` on the
    JPEG-decoded frames gives the extraction features to 1e-5.
    """
    from maivar_tf.data.audio_image import render_audio_images
    from maivar_tf.data.video import load_clip

    path = str(clip_paths[2])
    data = dataclasses.replace(tiny.run.cfg.data, video_root="")
    assert data.frame_short_side == 256
    ref_video, ref_audio, decoded = extraction_features(tiny.run, path, data)

    clip = load_clip(path, dataclasses.replace(data, frame_short_side=240))
    frames = np.asarray(clip.video.frames)[None]
    assert frames.shape == (1, K, 240, 320, 3)
    image = render_audio_images(clip.waveform, REPRESENTATION, data.audio)[REPRESENTATION][None]
    np.testing.assert_array_equal(image[0], decoded["audio_images"][REPRESENTATION].numpy())
    # decode-time and serve-time resizing are one implementation: the same pixels ...
    at_256 = np.asarray(load_clip(path, data).video.frames)
    np.testing.assert_array_equal(ops.resize_short_side(frames[0], 256).numpy(), at_256)
    # ... and the stored (JPEG) frames differ by the JPEG round trip only
    jpeg_error = np.abs(ops.center_crop(at_256, 224).numpy().astype(int)
                        - decoded["frames"].numpy().astype(int))
    assert jpeg_error.mean() < 3.0

    video, audio = (t.numpy() for t in module.media_features(frames, image))
    rel = np.linalg.norm(video - ref_video, axis=-1) / np.linalg.norm(ref_video, axis=-1)
    assert rel.max() <= VIDEO_FEATURE_RTOL, rel
    np.testing.assert_allclose(audio, ref_audio, rtol=1e-5, atol=1e-5)

    signatures = exported.loaded.signatures
    served = as_numpy_outputs(signatures[SIGNATURE_MEDIA](frames=tf.constant(frames),
                                                          audio_image=tf.constant(image)))
    extracted = as_numpy_outputs(signatures[SIGNATURE_FEATURES](
        video_features=tf.constant(ref_video), audio_features=tf.constant(ref_audio)))
    np.testing.assert_allclose(served["probabilities"], extracted["probabilities"],
                               atol=PROBABILITY_ATOL)
    # the same JPEG-decoded pixels give the extraction features exactly
    same = module.media_features(decoded["whole_frames"][None], image)[0].numpy()
    np.testing.assert_allclose(same, ref_video, rtol=1e-5, atol=1e-5)


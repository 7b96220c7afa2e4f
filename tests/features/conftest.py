"""Fixtures of the feature tests: tiny backbones, tiny TFRecords and one extraction of them.

Each is made once for the whole ``tests/features`` package; tests that change files work on a
copy (``copy_of``).
"""

from __future__ import annotations

import shutil

import pytest

from maivar_tf.models.backbones import BackboneFeatures
from tests.features.tiny_data import AUDIO_SIZE, CROP, extract, make_config, write_tfrecords
from tests.tiny_models import tiny_audio_backbone, tiny_video_backbone


@pytest.fixture(scope="package")
def backbones():
    """The stand-in ``(video, audio)`` Keras backbones."""
    return tiny_video_backbone(CROP), tiny_audio_backbone(AUDIO_SIZE)


@pytest.fixture(scope="package")
def traced(backbones):
    """``(video, audio)`` as BackboneFeatures, traced once for every extraction that uses them."""
    video, audio = backbones
    return (BackboneFeatures(video, (CROP, CROP, 3)),
            BackboneFeatures(audio, (AUDIO_SIZE, AUDIO_SIZE, 3)))


@pytest.fixture(scope="package")
def tiny(tmp_path_factory):
    """``(cfg, id -> label)`` of the tiny TFRecords (written once)."""
    cfg = make_config(tmp_path_factory.mktemp("tiny"))
    return cfg, write_tfrecords(cfg)


@pytest.fixture(scope="package")
def extracted(tiny, traced):
    """The features folder of one full extraction of the tiny TFRecords (do not modify)."""
    cfg, _ = tiny
    return extract(cfg, traced)


@pytest.fixture()
def copy_of(tmp_path):
    """``copy_of(folder)``: a fresh copy of ``folder`` inside the test's tmp_path."""

    def copy(folder):
        return shutil.copytree(folder, tmp_path / folder.name)

    return copy


@pytest.fixture(scope="package")
def tiny_segments(tmp_path_factory):
    """``(cfg, id -> label)`` of tiny TFRecords with per-segment audio-images, spans and
    ``audio/missing`` (``data.segment_audio``; written once)."""
    cfg = make_config(tmp_path_factory.mktemp("tiny_segments"), segment_audio=True)
    return cfg, write_tfrecords(cfg)


@pytest.fixture(scope="package")
def extracted_segments(tiny_segments, traced):
    """The features folder of one full extraction of ``tiny_segments`` (do not modify)."""
    cfg, _ = tiny_segments
    return extract(cfg, traced)

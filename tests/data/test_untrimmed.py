"""Tests of the untrimmed embedded dataset: spans, what happens inside and outside them."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import av
import numpy as np
import pytest

from maivar_tf.config import DataConfig, SynthConfig
from maivar_tf.data.annotations import AVE_HEADER, read_annotations
from maivar_tf.data.synthetic import (
    ANNOTATIONS_NAME,
    MANIFEST_NAME,
    clip_spans,
    generate_dataset,
)

# 2 classes (Slide_Chime, Bounce_Chime) x 2 clips, 3-s clips of 64 x 48 pixels
TINY = SynthConfig(num_motions=2, num_sounds=1, train_per_class=1, test_per_class=1,
                   seconds=3.0, fps=15, width=64, height=48, seed=11, untrimmed=True)
FIELDS = ("untrimmed", "event_min", "event_max", "sound_lag")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("untrimmed") / "v", TINY, progress=False,
                            workers=1)


def _decode(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with av.open(str(path)) as c:
        luma = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
                        ).astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    with av.open(str(path)) as c:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    return luma, audio


def test_annotations_txt_holds_each_clips_span_in_aves_layout(root):
    lines = (root / ANNOTATIONS_NAME).read_text().splitlines()
    assert lines[0] == AVE_HEADER == "Category&VideoID&Quality&StartTime&EndTime"
    spans = clip_spans(TINY)
    assert len(lines) == 1 + len(spans) == 5
    for line in lines[1:]:
        assert re.fullmatch(r"[A-Za-z_]+&[A-Za-z_]+/v_[A-Za-z_]+_g\d\d_c\d\d&good&"
                            r"\d+\.\d\d&\d+\.\d\d", line), line
        category, video_id, _, start, end = line.split("&")
        span = spans[video_id + ".mp4"]
        assert (float(start), float(end)) == (span.start_s, span.end_s)
        assert video_id.startswith(category + "/")
        assert 0.3 * 3.0 - 0.01 <= span.end_s - span.start_s <= 0.6 * 3.0 + 0.01
        assert abs(span.sound_start_s - span.start_s) <= 0.25 + 1e-9
        assert abs(span.sound_end_s - span.end_s) <= 0.25 + 1e-9
    # the synthetic reader gives every record its span
    ann = read_annotations(DataConfig(dataset="synthetic", video_root=str(root)))
    assert {r.path: r.spans for r in ann.records} == {
        rel: ((s.start_s, s.end_s),) for rel, s in spans.items()}
    assert json.loads((root / MANIFEST_NAME).read_text())["spans"] == {
        rel: dataclasses.asdict(s) for rel, s in spans.items()}


def test_class_motion_inside_the_span_and_a_dim_slow_distractor_outside(root):
    for rel, span in clip_spans(TINY).items():
        luma, _ = _decode(root / rel)
        t = np.arange(len(luma)) / TINY.fps
        inside = (t >= span.start_s) & (t < span.end_s)
        assert 0 < inside.sum() < len(inside)
        motion = np.abs(np.diff(luma, axis=0)).mean(axis=(1, 2))  # frame-to-frame change
        both, neither = inside[1:] & inside[:-1], ~inside[1:] & ~inside[:-1]
        assert motion[both].mean() > 4 * motion[neither].mean(), rel
        # the distractor is there but dim: pixels off the backdrop, none by more than 40
        dev = np.abs(luma - np.median(luma, axis=(1, 2), keepdims=True))
        assert (dev[~inside] > 40).mean() < 1e-3, rel
        assert (dev[~inside] > 8).mean() > 0.02, rel


def test_class_sound_energy_sits_inside_the_sound_span(root):
    sr = TINY.audio_rate
    for rel, span in clip_spans(TINY).items():
        _, audio = _decode(root / rel)
        t = np.arange(audio.size) / sr
        margin = 0.1  # AAC's frame delay and pre-echo
        inside = (t > span.sound_start_s + margin) & (t < span.sound_end_s - margin)
        outside = (t < span.sound_start_s - margin) | (t > span.sound_end_s + margin)
        energy_in = np.mean(audio[inside] ** 2)
        energy_out = np.mean(audio[outside] ** 2) if outside.any() else 0.0
        assert energy_in > 10 * energy_out, rel
        assert np.abs(audio[outside]).max(initial=0.0) < 0.06, rel  # noise only


def test_untrimmed_generation_is_deterministic(root, tmp_path):
    again = generate_dataset(tmp_path / "again", TINY, progress=False, workers=1)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (root / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_trimmed_manifest_without_the_untrimmed_fields_is_the_same_config(tmp_path):
    trimmed = dataclasses.replace(TINY, untrimmed=False, seconds=1.0)
    root = generate_dataset(tmp_path / "t", trimmed, progress=False, workers=1)
    assert not (root / ANNOTATIONS_NAME).exists()
    manifest_path = root / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    for key in FIELDS:  # as written before the untrimmed variant existed
        del manifest["config"][key]
    manifest_path.write_text(json.dumps(manifest))
    videos = sorted(root.glob("*/*.mp4"))
    mtimes = [p.stat().st_mtime_ns for p in videos]
    generate_dataset(root, dataclasses.replace(trimmed, sound_lag=0.5), progress=False,
                     workers=1)
    assert [p.stat().st_mtime_ns for p in videos] == mtimes  # nothing regenerated
    # untrimmed: regenerated with Annotations.txt; back to trimmed: the spans file goes
    generate_dataset(root, dataclasses.replace(trimmed, untrimmed=True), progress=False,
                     workers=1)
    assert (root / ANNOTATIONS_NAME).is_file()
    assert [p.stat().st_mtime_ns for p in videos] != mtimes
    generate_dataset(root, trimmed, progress=False, workers=1)
    assert not (root / ANNOTATIONS_NAME).exists()

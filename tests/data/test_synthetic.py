"""Tests of the embedded dataset generator on a tiny config (2 motions x 2 sounds, 1 s clips)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from maivar_tf.config import SynthConfig
from maivar_tf.data import synthetic
from maivar_tf.data.annotations import read_ucf101
from maivar_tf.data.synthetic import (
    MANIFEST_NAME,
    SOUND_PITCH_CLASSES,
    class_names,
    generate_dataset,
    motion_coverage,
    render_audio,
)

TINY = SynthConfig(num_motions=2, num_sounds=2, train_per_class=1, test_per_class=1,
                   seconds=1.0, fps=15, width=160, height=120, audio_rate=22050, seed=3)


def _decode(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with av.open(str(path)) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    with av.open(str(path)) as c:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    return frames, audio


def _videos(root: Path) -> list[Path]:
    return sorted(root.glob("*/*.mp4"))


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("synth") / "videos", TINY, progress=False,
                            workers=1)


def test_class_names():
    assert class_names(TINY) == ("Slide_Chime", "Slide_Pluck", "Bounce_Chime", "Bounce_Pluck")
    full = class_names(SynthConfig())
    assert len(full) == 8 and full[-1] == "Pulse_Pluck" and len(set(full)) == 8
    # the sound kinds draw notes from disjoint pitch-class sets that cover all 12
    sets = [set(s) for s in SOUND_PITCH_CLASSES]
    assert sorted(p for s in sets for p in s) == list(range(12))


def test_mp4s_have_h264_and_aac(tiny_root):
    files = _videos(tiny_root)
    assert len(files) == 8
    for path in files:
        with av.open(str(path)) as c:
            v, a = c.streams.video[0], c.streams.audio[0]
            assert v.codec_context.name == "h264"
            assert v.codec_context.pix_fmt == "yuv420p"
            assert (v.codec_context.width, v.codec_context.height) == (160, 120)
            assert a.codec_context.name == "aac"
            assert a.codec_context.sample_rate == TINY.audio_rate
            assert a.codec_context.layout.name == "mono"
        frames, audio = _decode(path)
        assert abs(len(frames) - TINY.seconds * TINY.fps) <= 1
        n = TINY.seconds * TINY.audio_rate
        assert n <= audio.size <= n + 2048  # AAC pads to whole 1024-sample frames
        assert 0.01 < np.abs(audio).max() <= 1.0
        assert frames.std() > 5  # not a blank picture


def test_annotations_readable_by_read_ucf101(tiny_root):
    ann = read_ucf101(tiny_root, 1, tiny_root)
    assert ann.class_names == class_names(TINY)
    assert len(ann.split("train")) == 4 and len(ann.split("test")) == 4
    for r in ann.records:
        assert (tiny_root / r.path).is_file()
        assert r.path.split("/")[0] == ann.class_names[r.label_index]
    assert {r.path for r in ann.records} == {p.relative_to(tiny_root).as_posix()
                                             for p in _videos(tiny_root)}
    # like UCF101 split 1, test videos come from other groups than train videos
    groups = {s: {r.path.split("_g")[1][:2] for r in ann.split(s)} for s in ("train", "test")}
    assert not groups["train"] & groups["test"]


def test_deterministic_across_runs_and_workers(tiny_root, tmp_path):
    other = generate_dataset(tmp_path / "again", TINY, progress=False, workers=2)
    files = _videos(tiny_root)
    assert [p.relative_to(tiny_root) for p in files] == [p.relative_to(other)
                                                         for p in _videos(other)]
    for path in files:
        f1, a1 = _decode(path)
        f2, a2 = _decode(other / path.relative_to(tiny_root))
        np.testing.assert_array_equal(f1, f2)
        np.testing.assert_array_equal(a1, a2)
        assert path.read_bytes() == (other / path.relative_to(tiny_root)).read_bytes()
    # a different seed gives a different video (one class suffices: streams are per video)
    rel = "Slide_Chime/v_Slide_Chime_g01_c01.mp4"
    one_class = dataclasses.replace(TINY, seed=4, num_motions=1, num_sounds=1)
    f_seed, _ = _decode(generate_dataset(tmp_path / "seed", one_class, progress=False,
                                         workers=1) / rel)
    assert not np.array_equal(f_seed, _decode(tiny_root / rel)[0])


def test_idempotent_and_regenerates_on_config_change(tiny_root, tmp_path):
    root = tmp_path / "v"
    shutil.copytree(tiny_root, root)  # a generated dataset (mtimes kept); the fixture stays intact
    all_files = sorted(p for p in root.rglob("*") if p.is_file())
    mtimes = {p: p.stat().st_mtime_ns for p in all_files}
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    assert manifest["config"] == dataclasses.asdict(TINY) and manifest["complete"] is True

    generate_dataset(root, TINY, progress=False, workers=1)
    assert sorted(p for p in root.rglob("*") if p.is_file()) == all_files
    assert {p: p.stat().st_mtime_ns for p in all_files} == mtimes  # nothing rewritten

    # a deleted video is regenerated, identically
    victim = _videos(root)[0]
    before = victim.read_bytes()
    victim.unlink()
    generate_dataset(root, TINY, progress=False, workers=1)
    assert victim.read_bytes() == before

    # another config: everything is rewritten, videos of dropped classes removed
    smaller = dataclasses.replace(TINY, num_sounds=1, seed=5)
    generate_dataset(root, smaller, progress=False, workers=1)
    assert sorted(p.parent.name for p in _videos(root)) == ["Bounce_Chime"] * 2 + [
        "Slide_Chime"] * 2
    assert not (root / "Slide_Pluck").exists()
    kept = root / "Slide_Chime" / "v_Slide_Chime_g01_c01.mp4"
    assert kept.stat().st_mtime_ns != mtimes[kept]
    assert read_ucf101(root, 1, root).class_names == ("Slide_Chime", "Bounce_Chime")
    assert json.loads((root / MANIFEST_NAME).read_text())["config"]["seed"] == 5


def test_chroma_of_sound_kinds_in_their_pitch_class_sets(tiny_root):
    import librosa

    ann = read_ucf101(tiny_root, 1, tiny_root)
    for r in ann.records:
        _, audio = _decode(tiny_root / r.path)
        chroma = librosa.feature.chroma_stft(y=audio, sr=TINY.audio_rate, n_fft=2048,
                                             hop_length=512, tuning=0.0)
        rms = librosa.feature.rms(y=audio, frame_length=2048, hop_length=512)[0]
        loud = rms[: chroma.shape[1]] > 0.1 * rms.max()
        top = chroma.argmax(axis=0)[loud]
        sound = r.label_index % TINY.num_sounds
        intended = list(SOUND_PITCH_CLASSES[sound])
        other = list(SOUND_PITCH_CLASSES[1 - sound])
        assert np.isin(top, intended).mean() > 0.9, r.path
        assert chroma[intended].sum() > 2 * chroma[other].sum(), r.path


def test_all_four_sound_kinds_stay_in_their_pitch_classes():
    import librosa

    cfg = dataclasses.replace(TINY, num_sounds=4, seconds=2.0)
    for sound, name in enumerate(synthetic.SOUNDS):
        for seed in range(2):
            y = render_audio(sound, np.random.default_rng(seed), np.random.default_rng(seed + 9),
                             cfg)
            assert y.dtype == np.float32 and y.shape == (44100,)
            assert 0.05 < np.abs(y).max() <= 1.0
            chroma = librosa.feature.chroma_stft(y=y, sr=cfg.audio_rate, n_fft=2048,
                                                 hop_length=512, tuning=0.0)
            rms = librosa.feature.rms(y=y, frame_length=2048, hop_length=512)[0]
            top = chroma.argmax(axis=0)[rms[: chroma.shape[1]] > 0.1 * rms.max()]
            assert np.isin(top, SOUND_PITCH_CLASSES[sound]).mean() > 0.85, (name, seed)


def _vertical_over_horizontal_gradient_energy(frames: np.ndarray) -> float:
    """Energy of d/dy over d/dx of the moving foreground (frames minus their temporal median,
    3x3 box-filtered against pixel noise)."""
    from scipy.ndimage import uniform_filter

    g = frames.astype(np.float32).mean(axis=-1)
    fg = uniform_filter(g - np.median(g, axis=0, keepdims=True), size=(1, 3, 3))
    gx = np.diff(fg, axis=2)[:, :-1, :]
    gy = np.diff(fg, axis=1)[:, :, :-1]
    return float((gy ** 2).sum() / (gx ** 2).sum())


def test_motion_blur_orientation_slide_vs_bounce(tiny_root):
    ann = read_ucf101(tiny_root, 1, tiny_root)
    ratios = {}
    for r in ann.records:
        frames, _ = _decode(tiny_root / r.path)
        ratios.setdefault(r.label_string.split("_")[0], []).append(
            _vertical_over_horizontal_gradient_energy(frames))
    # horizontal smears have long horizontal edges (vertical gradients), and vice versa
    assert min(ratios["Slide"]) > 1.5, ratios
    assert max(ratios["Bounce"]) < 1.0, ratios


def test_pulse_area_oscillates_the_others_do_not():
    cfg = dataclasses.replace(TINY, seconds=2.0)

    def area_cv(motion: str, seed: int) -> float:
        alpha = motion_coverage(synthetic.MOTIONS.index(motion), np.random.default_rng(seed),
                                cfg)
        assert alpha.shape == (30, cfg.height, cfg.width)
        assert 0.0 <= alpha.min() and alpha.max() <= 1.0
        area = alpha.reshape(len(alpha), -1).mean(axis=1)
        return float(area.std() / area.mean())

    cvs = {m: [area_cv(m, s) for s in range(3)] for m in synthetic.MOTIONS}
    assert min(cvs["Pulse"]) > 0.15, cvs
    assert max(max(cvs[m]) for m in ("Slide", "Bounce", "Rotate")) < 0.1, cvs

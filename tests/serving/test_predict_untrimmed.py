"""``maivar predict`` on a real clip without an audio track, and ``--segments``.

The clip without sound is vas_dog_02677.mp4 with its video stream remuxed alone (PyAV) into
the test's temporary folder. ``--segments`` runs the tiny temporal-binding run with a
localiser (:mod:`tests.serving.temporal_run`) on the AVE speech clip, in memory and exported,
and is checked against spans computed by hand from the localiser's per-segment outputs.
"""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from maivar_tf.features.silent import silent_audio_image  # noqa: E402
from maivar_tf.predict import (  # noqa: E402
    NO_AUDIO_LINE,
    clip_duration,
    format_text,
    predict_command,
    predict_files,
    prepare_clips,
)
from maivar_tf.serving.predictors import RunPredictor  # noqa: E402
from tests.serving.helpers import CLASSES, REPRESENTATION  # noqa: E402
from tests.serving.temporal_run import keras_segment_outputs  # noqa: E402
from tests.shared_helpers import remux_video_only  # noqa: E402


@pytest.fixture(scope="module")
def silent_clip(tmp_path_factory, clip_paths):
    import av

    dst = tmp_path_factory.mktemp("no_audio") / "vas_dog_02677_video_only.mp4"
    remux_video_only(next(p for p in clip_paths if p.name == "vas_dog_02677.mp4"), dst)
    with av.open(str(dst)) as c:
        assert len(c.streams.audio) == 0 and len(c.streams.video) == 1
    return dst


def test_a_clip_without_audio_under_silence_is_classified_with_silent_audio(
        tiny, silent_clip, clip_paths):
    cfg = tiny.run.cfg
    silence = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data,
                                                                on_missing_audio="silence"))
    predictor = RunPredictor(dataclasses.replace(tiny.run, cfg=silence))
    real = clip_paths[4]
    predictions, failures = predict_files([str(silent_clip), str(real)], predictor, k=3)
    assert failures == []
    assert [p.audio_missing for p in predictions] == [True, False]
    # the record's audio-image is the silent one, and so is what the model was given
    prepared, _ = prepare_clips([str(silent_clip)], silence, REPRESENTATION)
    np.testing.assert_array_equal(prepared[0].audio_image,
                                  silent_audio_image(REPRESENTATION, cfg.data.audio))
    assert prepared[0].audio_missing is True
    silent_out, _ = predictor(prepared[0].frames[None], prepared[0].audio_image[None])
    np.testing.assert_allclose(predictions[0].probabilities, silent_out["probabilities"][0],
                               atol=1e-6)
    lines = format_text(predictions).splitlines()
    assert lines[:5] == [str(silent_clip)] + lines[1:4] + [NO_AUDIO_LINE]
    assert NO_AUDIO_LINE == "  (no audio track: classified with silent audio)"
    assert lines.count(NO_AUDIO_LINE) == 1 and lines[5] == str(real)
    assert [p.to_dict()["audio_missing"] for p in predictions] == [True, False]


def test_a_clip_without_audio_under_reject_is_a_no_audio_failure(tiny, silent_clip):
    assert tiny.run.cfg.data.on_missing_audio == "reject"
    predictions, failures = predict_files([str(silent_clip)], RunPredictor(tiny.run))
    assert predictions == []
    assert [(f.file, f.reason) for f in failures] == [(str(silent_clip), "no_audio")]
    assert failures[0].line().startswith(f"maivar: {silent_clip}: no_audio: ")


# ----------------------------------------------------------------------------- --segments


def spans_by_hand(scores: np.ndarray, times: np.ndarray, end_s: float) -> list[dict]:
    """Runs of non-background argmax, +- half the spacing, clipped to [0, end_s]."""
    best = scores.argmax(-1)
    half = (times[-1] - times[0]) / (len(times) - 1) / 2
    spans, k = [], 0
    for is_bg, group in itertools.groupby(range(len(best)), key=lambda i: best[i] == len(CLASSES)):
        ks = list(group)
        k += len(ks)
        if is_bg:
            continue
        counts = np.bincount(best[ks], minlength=len(CLASSES))
        spans.append({"start_s": max(0.0, times[ks[0]] - half),
                      "end_s": min(end_s, times[ks[-1]] + half),
                      "class": CLASSES[int(counts.argmax())],
                      "event_probability": float(np.mean(1 - scores[ks, -1]))})
    return spans


def assert_spans_equal(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want, strict=True):
        assert g["class"] == w["class"]
        for key in ("start_s", "end_s", "event_probability"):
            assert g[key] == pytest.approx(w[key], abs=2e-6), (key, g, w)


@pytest.fixture(scope="module")
def ave_clip(clip_paths):
    return next(p for p in clip_paths if p.name.startswith("ave_0lFf-HP86Q0"))


def test_segments_in_memory_match_a_hand_computation(tb, ave_clip):
    predictor = RunPredictor(tb.run)
    predictions, failures = predict_files([str(ave_clip)], predictor, k=2, segments=True)
    assert failures == []
    seg = predictions[0].segments
    prepared, _ = prepare_clips([str(ave_clip)], tb.cfg, REPRESENTATION, segment_audio=True)
    clip = prepared[0]
    ref = keras_segment_outputs(tb.run, clip.frames[None], clip.audio_image[None])
    times = np.asarray(clip.segment_times)
    np.testing.assert_allclose(seg["segment_times_s"], times)
    np.testing.assert_allclose(seg["segment_event"], 1 - ref["segment_scores"][0, :, -1],
                               atol=1e-5)
    want = spans_by_hand(ref["segment_scores"][0], times, clip_duration(str(ave_clip)))
    assert want and len(want) < 4  # the calibrated localiser finds events and background
    assert_spans_equal(seg["spans"], want)
    text = format_text(predictions).splitlines()
    assert text[3] == "  action spans:"
    assert len(text) == 4 + len(want)
    first = want[0]
    assert text[4] == (f"    {first['start_s']:7.2f} s - {first['end_s']:7.2f} s  "
                       f"{first['class']}  (event {100 * first['event_probability']:.1f}%)")
    tb.in_memory_segments = seg


def test_segments_from_the_export_as_json(tb, tb_export, ave_clip, capsys):
    path, _ = tb_export
    code = predict_command([str(ave_clip)], saved_model=str(path), top_k=2, as_json=True,
                           segments=True)
    out = capsys.readouterr()
    assert code == 0, out.err
    pred = json.loads(out.out)["predictions"][0]
    assert pred["audio_missing"] is False
    assert set(pred) >= {"segments", "segment_times_s", "segment_event"}
    mem = getattr(tb, "in_memory_segments", None)
    if mem is None:
        mem = predict_files([str(ave_clip)], RunPredictor(tb.run), segments=True)[0][0].segments
    assert_spans_equal(pred["segments"], mem["spans"])
    np.testing.assert_allclose(pred["segment_event"], mem["segment_event"], atol=1e-5)
    np.testing.assert_allclose(pred["segment_times_s"], mem["segment_times_s"])


def test_segments_without_a_localiser_exit_2(exported, ave_clip, capsys):
    code = predict_command([str(ave_clip)], saved_model=str(exported.path), segments=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"maivar: --segments: {exported.path} has no localiser (no segment_scores "
                   "output); train with model.fusion=temporal_binding and "
                   "model.localisation=true"]

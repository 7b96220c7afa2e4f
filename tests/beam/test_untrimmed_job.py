"""The Beam job on untrimmed data: spans, per-segment audio-images, clips without sound.

One run (``silent_run``) takes the untrimmed embedded clips, the real AVE clip with its span
and that clip with its audio stream removed, under ``data.on_missing_audio: silence`` with
``data.segment_audio``; one run of ``main`` takes the silent clip under ``reject``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import beam.build_tfrecords as job
from beam import publish
from maivar_tf.config import SynthConfig, load_config
from maivar_tf.data import schema
from maivar_tf.data.annotations import VideoRecord, make_example_id, read_annotations
from maivar_tf.data.audio_image import render_audio_images
from maivar_tf.data.synthetic import clip_spans, generate_dataset
from maivar_tf.data.video import load_clip
from tests.beam.jobdata import CLIPS_DIR, dead_letters
from tests.shared_helpers import remux_video_only

AVE = "ave_0lFf-HP86Q0_female_speech.mp4"
SPEECH = "Female speech, woman speaking"
K = 4
SIZE = 32
SYNTH = SynthConfig(num_motions=2, num_sounds=1, train_per_class=1, test_per_class=1,
                    seconds=2.0, width=64, height=48, seed=5, untrimmed=True)


def _overrides(video_root: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.video_root={json.dumps(str(video_root))}",
            f"data.output_dir={json.dumps(str(out))}", f"data.num_segments={K}",
            "data.representations=[chromagram]", "data.num_shards=1",
            "data.frame_short_side=48", "data.crop_size=48",
            f"data.audio.image_size={SIZE}", *extra]


@pytest.fixture(scope="module")
def silent_clip(tmp_path_factory) -> Path:
    return remux_video_only(CLIPS_DIR / AVE, tmp_path_factory.mktemp("noaudio") / "silent.mp4")


@pytest.fixture(scope="module")
def silent_run(tmp_path_factory, silent_clip, prism_calls):
    root = tmp_path_factory.mktemp("untrimmed_job")
    videos = generate_dataset(root / "videos", SYNTH, progress=False, workers=1)
    exp = load_config(None, overrides=_overrides(
        videos, root / "out", "data.segment_audio=true", "data.on_missing_audio=silence"))
    ann = read_annotations(exp.data)
    classes = ann.class_names + (SPEECH,)
    speech = len(classes) - 1
    records = list(ann.records) + [
        VideoRecord(str(CLIPS_DIR / AVE), speech, SPEECH, "test", spans=((5.0, 10.0),),
                    example_id="ave"),
        VideoRecord(str(silent_clip), speech, SPEECH, "train", example_id="silent")]
    logger = logging.getLogger("beam.build_tfrecords")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda rec: seen.append(rec.getMessage())
    logger.addHandler(handler)
    try:
        rc = job.run_job(exp, records, classes, ["--runner=DirectRunner"])
    finally:
        logger.removeHandler(handler)
    examples = {}
    for shard in sorted((root / "out").glob("*.tfrecord")):
        for raw in tf.data.TFRecordDataset(str(shard)):
            ex = schema.parse_sequence_example(raw, ("chromagram",),
                                               segment_representations=("chromagram",))
            examples[ex[schema.EXAMPLE_ID].numpy().decode()] = ex
    info = json.loads((root / "out" / "dataset_info.json").read_text())
    return rc, examples, info, seen, exp


def test_a_clip_without_audio_is_kept_silent_marked_and_counted(silent_run, silent_clip):
    rc, examples, info, seen, exp = silent_run
    assert rc == 0
    assert set(examples) == {"ave", "silent"} | {
        make_example_id(rel) for rel in clip_spans(SYNTH)}
    assert [int(ex[schema.AUDIO_MISSING]) for _, ex in sorted(examples.items())].count(1) == 1
    silent = examples["silent"]
    assert int(silent[schema.AUDIO_MISSING]) == 1
    assert int(examples["ave"][schema.AUDIO_MISSING]) == 0
    assert info["counts"]["train"]["audio_missing"] == 1
    assert info["counts"]["test"]["audio_missing"] == 0
    assert info["failed"]["total"] == 0
    # a runner without metrics counts the silent clips from the shards instead
    shards = [str(p) for p in sorted(Path(exp.data.output_dir).glob("*.tfrecord"))]
    assert publish.counts_from_shards(shards)[1] == {"train": 1}
    assert [m for m in seen if "kept with silent audio" in m] == [
        f"{silent_clip}: no audio; kept with silent audio (data.on_missing_audio: silence, "
        "audio/missing = 1)"]
    # its audio-images are the renderer's on the silent waveform of the video's duration
    decoded = load_clip(silent_clip, exp.data)
    assert decoded.audio_missing and not decoded.waveform.any()
    assert decoded.video.duration_s > 10.0  # capped at audio.max_seconds, as decoded audio is
    assert decoded.waveform.size == round(min(decoded.video.duration_s, 10.0) * 22050)
    want = render_audio_images(decoded.waveform, ("chromagram",), exp.data.audio)["chromagram"]
    got = tf.io.decode_png(silent["CHROMAGRAM/image/encoded"][0]).numpy()
    np.testing.assert_array_equal(got, want)
    assert silent[schema.segment_audio_image_key("chromagram")].shape == (K,)


def test_untrimmed_records_hold_their_span_and_k_segment_images(silent_run):
    _, examples, _, _, _ = silent_run
    spans = clip_spans(SYNTH)
    for rel, span in spans.items():
        ex = examples[make_example_id(rel)]
        assert ex[schema.SEGMENT_START_TIMESTAMP].numpy().tolist() == [round(span.start_s * 1e6)]
        assert ex[schema.SEGMENT_END_TIMESTAMP].numpy().tolist() == [round(span.end_s * 1e6)]
        assert ex[schema.SEGMENT_LABEL_INDEX].numpy().tolist() == [int(ex[schema.LABEL_INDEX])]
        pngs = ex[schema.segment_audio_image_key("chromagram")].numpy()
        assert len(pngs) == K
        images = [tf.io.decode_png(p).numpy() for p in pngs]
        assert all(im.shape == (SIZE, SIZE, 3) for im in images)
        assert len({im.tobytes() for im in images}) > 1  # the windows differ
    ave = examples["ave"]
    assert ave[schema.SEGMENT_START_TIMESTAMP].numpy().tolist() == [5_000_000]
    assert ave[schema.SEGMENT_END_TIMESTAMP].numpy().tolist() == [10_000_000]
    assert ave[schema.SEGMENT_LABEL_INDEX].numpy().tolist() == [2]


def test_a_clip_without_audio_is_a_no_audio_dead_letter_under_reject(silent_clip, tmp_path):
    csv_path = tmp_path / "a.csv"
    csv_path.write_text(f"path,label,split\n{silent_clip},speech,train\n")
    out = tmp_path / "out"
    rc = job.main(["--runner=DirectRunner", "--dataset=csv", f"--annotations={csv_path}",
                   "--num_segments=2", "--representations=chromagram", f"--output_dir={out}",
                   "--set", "data.on_missing_audio=reject"])
    assert rc == 1  # nothing succeeded
    letters = dead_letters(out)
    assert [(d["reason"], d["input"]) for d in letters] == [("no_audio", str(silent_clip))]
    assert "has no audio stream" in letters[0]["message"]

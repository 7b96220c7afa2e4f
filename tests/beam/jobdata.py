"""Inputs and readers shared by the Beam job's tests.

The real clips in ``../shared/testdata/clips`` (not in UCF layout) are listed in a generic CSV
next to one bad input of every kind (:data:`BAD_REASONS`); readers parse the shards and dead
letters a run wrote.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from maivar_tf.config import AudioImageConfig, DataConfig
from maivar_tf.data import schema
from maivar_tf.data.annotations import VideoRecord, make_example_id
from tests.conftest import CLIPS_DIR as _CLIPS_DIR
from tests.conftest import write_test_media

CLIPS_DIR = _CLIPS_DIR.resolve()
CLIPS = sorted(p for p in CLIPS_DIR.glob("*") if p.suffix in (".mp4", ".avi", ".mkv"))
K = 4
REPS = ("chromagram", "waveplot")

#: Each bad input kind -> the reason the job must record for it.
BAD_REASONS = {
    "missing.mp4": "missing",
    "empty.mp4": "empty",
    "truncated.mkv": "truncated",
    "not_a_video.mp4": "not_a_video",
    "no_audio.mp4": "no_audio",
    "too_short.mkv": "too_short",
    "unknown_label.mp4": "unknown_label",
}


def make_bad_inputs(folder: Path) -> dict[str, Path]:
    """One file per bad-input kind (``missing.mp4`` is only a path)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in BAD_REASONS}
    paths["empty.mp4"].write_bytes(b"")
    mkv = next(p for p in CLIPS if p.suffix == ".mkv")
    data = mkv.read_bytes()
    paths["truncated.mkv"].write_bytes(data[:len(data) // 3])
    paths["not_a_video.mp4"].write_text("this is a text file, not a video\n" * 50)
    write_test_media(paths["no_audio.mp4"], num_frames=30, width=64, height=64, audio=False)
    # 20 ms of PCM: fewer samples than one STFT window (AAC would pad to 2048).
    write_test_media(paths["too_short.mkv"], num_frames=2, seconds=0.02, width=64, height=64,
                     audio_codec="pcm_s16le")
    write_test_media(paths["unknown_label.mp4"], num_frames=30, seconds=3.0, width=64,
                     height=64)
    return paths


def write_csv(csv_path: Path, bad: dict[str, Path]) -> dict[str, tuple[str, str]]:
    """The generic CSV: clips relative to CLIPS_DIR (video_root), bad inputs absolute.

    Returns:
        example id -> (label, split) of every good clip.
    """
    good = {}
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        for i, clip in enumerate(CLIPS):
            label = clip.name.split("_")[0]  # ucf101, kinetics, ave, veba, vas
            split = "train" if i % 2 == 0 else "test"
            w.writerow([clip.name, label, split])
            good[make_example_id(clip.name)] = (label, split)
        for name, path in bad.items():
            w.writerow([str(path), "" if name == "unknown_label.mp4" else "vas", "train"])
    return good


def base_argv(csv_path: Path, out: Path, *extra: str) -> list[str]:
    """The job's flags for ``csv_path`` -> ``out`` (K frames, :data:`REPS`, 2 shards)."""
    return ["--runner=DirectRunner", "--dataset=csv", f"--annotations={csv_path}",
            f"--video_root={CLIPS_DIR}", f"--output_dir={out}", f"--num_segments={K}",
            f"--representations={','.join(REPS)}", "--num_shards=2", *extra]


def small_cfg(**kw) -> DataConfig:
    """A data section with small frames and audio-images, for DoFn tests."""
    base = dict(video_root=str(CLIPS_DIR), num_segments=K, representations=("chromagram",),
                frame_short_side=128, crop_size=112,
                audio=AudioImageConfig(image_size=64, max_seconds=3.0))
    base.update(kw)
    return DataConfig(**base)


def video_record(path: str, label_index: int, label: str, split: str = "train") -> VideoRecord:
    """An annotation record whose example id is its path."""
    return VideoRecord(path=path, label_index=label_index, label_string=label, split=split,
                       example_id=make_example_id(path))


def parse_dir(out: Path, reps=REPS) -> dict[str, dict]:
    """example id -> decoded frames, audio-images, label of every example in every shard."""
    got = {}
    for shard in sorted(out.glob("*-*-of-*.tfrecord")):
        for raw in tf.data.TFRecordDataset(str(shard)):
            ex = schema.parse_sequence_example(raw, reps)
            eid = ex[schema.EXAMPLE_ID].numpy().decode()
            assert eid not in got, f"{eid} written twice"
            got[eid] = {
                "shard": shard.name,
                "label": ex[schema.LABEL_STRING].numpy().decode(),
                "split": ex[schema.SPLIT].numpy().decode(),
                "frames": np.stack([tf.io.decode_jpeg(b).numpy()
                                    for b in ex[schema.IMAGE_ENCODED].numpy()]),
                "timestamps": ex[schema.IMAGE_TIMESTAMP].numpy(),
                "images": {r: tf.io.decode_png(ex[schema.audio_image_key(r)][0]).numpy()
                           for r in reps},
            }
    return got


def dead_letters(out: Path) -> list[dict]:
    """Every dead letter in ``out``'s ``failed-*.jsonl`` files."""
    lines = []
    for path in sorted(out.glob("failed-*.jsonl")):
        lines += [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return lines


def refusal(calls: list[str], what: str):
    """``refusal(calls, what)(name)``: a stand-in that records ``name`` in ``calls`` and raises
    ``RuntimeError("test: <what> (<name>)")`` (what the guards patch over Beam's entries)."""
    def refuse(name: str):
        def fn(*args, **kwargs):
            calls.append(name)
            raise RuntimeError(f"test: {what} ({name})")
        return fn
    return refuse

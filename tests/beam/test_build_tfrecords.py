"""Tests of the Beam job's command line and of whole runs on real clips.

The real clips in ``../shared/testdata/clips`` (not in UCF layout) are listed in a generic CSV
next to one bad input of every kind; the job must write every good clip (K frames,
non-constant audio-images) and send every bad one to ``failed-*.jsonl`` with its reason, in
any runner mode. The whole job runs once for the package (the ``built`` fixture) and once per
other runner mode.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import beam.build_tfrecords as job
from beam import transforms
from maivar_tf.config import DataConfig
from maivar_tf.data import schema
from tests.beam.jobdata import (
    BAD_REASONS,
    CLIPS,
    REPS,
    K,
    base_argv,
    dead_letters,
    parse_dir,
)

# ----------------------------------------------------------------------------- config errors


@pytest.mark.parametrize("argv,field", [
    (["--num_segments=0"], "data.num_segments"),
    (["--representations=waveplot,bogus"], "data.representations"),
    (["--dataset=imagenet"], "data.dataset"),
    (["--set", "data.jpeg_quality=101"], "data.jpeg_quality"),
    (["--set", "data.no_such_key=1"], "no_such_key"),
    (["--config=/nonexistent/config.yaml"], "config.yaml"),
    (["--set", "data.class_list=/nonexistent/classes.txt"], "data.class_list"),
])
def test_invalid_config_exits_2_naming_the_field(argv, field, capsys, tmp_path):
    rc = job.main([*argv, f"--output_dir={tmp_path / 'out'}"])
    assert rc == 2
    assert field in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_flags_become_config_overrides(tmp_path):
    args, beam_args = job.build_parser().parse_known_args([
        "--dataset=csv", "--video_root=/v", "--annotations=/a.csv", "--output_dir=/o",
        "--num_shards=3", "--num_segments=5", "--representations=mfcc, chromagram",
        "--split=2", "--set", "data.jpeg_quality=80", "--direct_num_workers=2",
        "--num_workers=3", "--data=x"])
    cfg = job.load_job_config(args).data
    assert (cfg.dataset, cfg.video_root, cfg.annotations, cfg.output_dir) == (
        "csv", "/v", "/a.csv", "/o")
    assert (cfg.num_shards, cfg.num_segments, cfg.split, cfg.jpeg_quality) == (3, 5, 2, 80)
    assert cfg.representations == ("mfcc", "chromagram")
    assert beam_args == ["--direct_num_workers=2", "--num_workers=3", "--data=x"]


def test_job_with_a_class_list_dead_letters_other_labels(job_inputs, tmp_path, capsys):
    """data.class_list on a generic CSV: a label outside it is an unknown_label dead letter."""
    root, _, _ = job_inputs
    stray = root / "bad" / "unknown_label.mp4"
    csv_path = tmp_path / "a.csv"
    csv_path.write_text(f"path,label,split\n{CLIPS[0].name},vas,train\n"
                        f"{stray},zzz_not_a_class,train\n")
    classes = tmp_path / "classes.txt"
    classes.write_text("# two classes\nucf101\nvas\n")
    out = tmp_path / "out"
    assert job.main(base_argv(csv_path, out, "--num_shards=1", "--representations=chromagram",
                              "--num_segments=2", "--set", f"data.class_list={classes}")) == 0
    assert f"  classes (2, from data.class_list {classes}): ucf101, vas\n" in capsys.readouterr().out
    letters = dead_letters(out)
    assert [(d["input"], d["reason"], d["label"]) for d in letters] == [
        (str(stray), "unknown_label", "zzz_not_a_class")]
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["class_names"] == ["ucf101", "vas"]
    assert info["config"]["data"]["class_list"] == str(classes)
    assert info["counts"]["train"]["per_class"] == {"ucf101": 0, "vas": 1}
    got = parse_dir(out, reps=("chromagram",))
    assert [ex["label"] for ex in got.values()] == ["vas"]


# ----------------------------------------------------------------------------- the whole job


@pytest.mark.slow
def test_job_writes_every_good_clip_with_k_frames_and_audio_images(built):
    rc, out, good = built
    assert rc == 0
    got = parse_dir(out)
    assert set(got) == set(good)
    for eid, ex in got.items():
        label, split = good[eid]
        assert (ex["label"], ex["split"]) == (label, split)
        assert ex["shard"].startswith(f"{split}-") and ex["shard"].endswith("-of-00002.tfrecord")
        assert ex["frames"].shape[0] == K and ex["frames"].shape[-1] == 3
        assert min(ex["frames"].shape[1:3]) == 256  # frame_short_side
        assert np.all(np.diff(ex["timestamps"]) > 0)
        assert ex["frames"].std() > 1.0
        for rep, img in ex["images"].items():
            assert img.shape == (299, 299, 3), rep
            assert img.std() > 1.0, f"{eid}: constant {rep} audio-image"
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["dataset_info.json", "failed-00000-of-00001.jsonl", "notes.txt",
         "test-00000-of-00002.tfrecord", "test-00001-of-00002.tfrecord",
         "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]), names


@pytest.mark.slow
def test_job_sends_every_bad_input_to_dead_letters_with_its_reason(built, job_inputs):
    rc, out, _ = built
    root = job_inputs[0]
    letters = dead_letters(out)
    got = {Path(d["input"]).name: d["reason"] for d in letters}
    assert got == BAD_REASONS
    for d in letters:
        assert d["input"] == str(root / "bad" / Path(d["input"]).name)
        assert d["split"] == "train" and d["message"]


@pytest.mark.slow
def test_job_dataset_info_counts(built):
    rc, out, good = built
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["schema_version"] == schema.SCHEMA_VERSION
    assert info["config"]["data"]["num_segments"] == K
    assert info["config"]["data"]["representations"] == list(REPS)
    assert info["class_names"] == sorted({lab for lab, _ in good.values()})
    for split in ("train", "test"):
        want = [lab for lab, s in good.values() if s == split]
        assert info["counts"][split]["total"] == len(want)
        assert sum(info["counts"][split]["per_class"].values()) == len(want)
        for lab in set(want):
            assert info["counts"][split]["per_class"][lab] == want.count(lab)
    assert info["failed"]["total"] == len(BAD_REASONS)
    assert info["failed"]["by_reason"] == {r: 1 for r in BAD_REASONS.values()}
    assert info["shards"]["train"] == ["train-00000-of-00002.tfrecord",
                                       "train-00001-of-00002.tfrecord"]
    assert info["num_records"] == len(good) + len(BAD_REASONS)


@pytest.mark.slow
def test_job_output_reads_back_through_make_dataset(built):
    from maivar_tf.data.input_pipeline import make_dataset

    rc, out, good = built
    cfg = DataConfig(num_segments=K, representations=REPS)
    ds = make_dataset(out, "test", cfg, batch_size=8)
    batch = next(iter(ds))
    n = sum(s == "test" for _, s in good.values())
    assert batch["frames"].shape == (n, K, 224, 224, 3)
    assert batch["audio_images"]["chromagram"].shape == (n, 299, 299, 3)
    ids = {e.decode() for e in batch["example_id"].numpy()}
    assert ids == {e for e, (_, s) in good.items() if s == "test"}


def _assert_same_dataset(out: Path, out2: Path, image_atol: int = 0) -> None:
    first, second = parse_dir(out), parse_dir(out2)
    assert set(first) == set(second)
    for eid in first:
        np.testing.assert_array_equal(first[eid]["frames"], second[eid]["frames"])
        np.testing.assert_array_equal(first[eid]["timestamps"], second[eid]["timestamps"])
        for rep in REPS:
            a = first[eid]["images"][rep].astype(int)
            b = second[eid]["images"][rep].astype(int)
            assert np.abs(a - b).max() <= image_atol, (eid, rep)
            assert (a != b).mean() < 1e-3, (eid, rep)
    assert sorted(map(json.dumps, dead_letters(out))) == sorted(
        map(json.dumps, dead_letters(out2)))
    info1, info2 = (json.loads((d / "dataset_info.json").read_text()) for d in (out, out2))
    assert info1["counts"] == info2["counts"]
    assert info1["failed"]["by_reason"] == info2["failed"]["by_reason"]


@pytest.mark.slow
def test_job_is_deterministic(built, job_inputs):
    """A second run, in 2 worker threads: same ids, identical decoded content, same counts."""
    rc, out, _ = built
    root, csv_path, _ = job_inputs
    out2 = root / "out2"
    assert job.main(base_argv(csv_path, out2, "--direct_running_mode=multi_threading",
                               "--direct_num_workers=2")) == 0
    _assert_same_dataset(out, out2)


@pytest.mark.slow
def test_job_in_worker_processes_writes_the_same_dataset(built, job_inputs):
    """2 worker processes: same ids, frames and counts (metrics summed over processes), and
    byte-identical shards whose SHA-256 digests dataset_info.json records.

    The workers render with 1 TF intra-op thread (the job's default in every mode); this
    test process may have started TF with more, and TF's float reductions then round a few
    audio-image pixels one level differently, so images are compared to within 1 here.
    """
    rc, out, _ = built
    root, csv_path, _ = job_inputs
    out3 = root / "out3"
    assert job.main(base_argv(csv_path, out3, "--direct_running_mode=multi_processing",
                               "--direct_num_workers=2")) == 0
    same_threads = tf.config.threading.get_intra_op_parallelism_threads() == 1
    _assert_same_dataset(out, out3, image_atol=0 if same_threads else 1)
    infos = [json.loads((d / "dataset_info.json").read_text()) for d in (out, out3)]
    for d, info in zip((out, out3), infos, strict=True):
        files = sorted(p.name for p in d.glob("*.tfrecord"))
        assert sorted(info["digests"]) == files
        for name in files:
            assert info["digests"][name] == hashlib.sha256((d / name).read_bytes()).hexdigest()
    if same_threads:  # the whole package's runs render with 1 thread (tests/beam/conftest.py)
        for name in infos[0]["digests"]:
            assert (out / name).read_bytes() == (out3 / name).read_bytes(), name
        assert infos[0]["digests"] == infos[1]["digests"]


@pytest.mark.slow
def test_nothing_succeeded_exits_nonzero_and_keeps_old_shards(job_inputs, tmp_path):
    root, _, _ = job_inputs
    csv_path = tmp_path / "bad_only.csv"
    csv_path.write_text("path,label,split\n"
                        f"{root / 'bad' / 'missing.mp4'},a,train\n"
                        f"{root / 'bad' / 'empty.mp4'},a,test\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "train-00000-of-00001.tfrecord").write_bytes(b"old")
    rc = job.main(base_argv(csv_path, out))
    assert rc != 0
    assert {d["reason"] for d in dead_letters(out)} == {"missing", "empty"}
    assert (out / "train-00000-of-00001.tfrecord").read_bytes() == b"old"
    assert not (out / "dataset_info.json").exists()
    assert not list(out.glob(".staging-*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad_only.csv", "out"]  # no staging


def test_pipeline_failure_leaves_no_staging_and_old_output(job_inputs, tmp_path, monkeypatch):
    _, csv_path, _ = job_inputs

    def broken_setup(self):
        raise RuntimeError("worker set-up failed")

    monkeypatch.setattr(transforms.ProcessVideoDoFn, "setup", broken_setup)
    out = tmp_path / "out"
    out.mkdir()
    (out / "train-00000-of-00001.tfrecord").write_bytes(b"old")
    rc = job.main(base_argv(csv_path, out, "--limit=1"))
    assert rc == 1
    assert sorted(p.name for p in out.iterdir()) == ["train-00000-of-00001.tfrecord"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # its staging beside is gone

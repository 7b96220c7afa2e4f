"""Tests of :mod:`beam.publish`: staging, atomic publish, counts and ``dataset_info.json``."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import tensorflow as tf

from beam import publish
from maivar_tf.artifacts import DATASET_INFO, DatasetInfo
from maivar_tf.config import ExperimentConfig
from maivar_tf.data import schema
from maivar_tf.utils import owner_tag

CLASSES = ("cat", "dog", "owl")


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _fill(folder: Path, names, content: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(content)


def test_publish_replaces_every_old_job_file_and_nothing_else(tmp_path):
    out, staging = tmp_path / "out", tmp_path / "out" / ".staging-x"
    _fill(out, ["train-00000-of-00005.tfrecord", "val-00000-of-00001.tfrecord",
                "failed-00000-of-00003.jsonl", DATASET_INFO, "notes.txt"], b"old")
    new = ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord",
           "test-00000-of-00001.tfrecord", "failed-00000-of-00001.jsonl"]
    _fill(staging, new, b"new")
    moved = publish.publish(str(staging), str(out))
    assert _names(out) == sorted([*new, "notes.txt", ".staging-x"])
    assert all((out / n).read_bytes() == b"new" for n in new)
    assert (out / "notes.txt").read_bytes() == b"old"
    assert _names(staging) == []
    assert sorted(Path(p).name for p in moved["shards"]) == sorted(new[:3])
    assert [Path(p).name for p in moved["failed"]] == ["failed-00000-of-00001.jsonl"]


def test_publish_without_shards_keeps_the_old_dataset(tmp_path):
    out, staging = tmp_path / "out", tmp_path / "staging"
    _fill(out, ["train-00000-of-00001.tfrecord", DATASET_INFO, "failed-00000-of-00002.jsonl"],
          b"old")
    _fill(staging, ["train-00000-of-00001.tfrecord", "failed-00000-of-00001.jsonl"], b"new")
    moved = publish.publish(str(staging), str(out), include_shards=False)
    assert moved["shards"] == []
    assert _names(out) == sorted(["train-00000-of-00001.tfrecord", DATASET_INFO,
                                  "failed-00000-of-00001.jsonl"])
    assert (out / "train-00000-of-00001.tfrecord").read_bytes() == b"old"
    assert (out / "failed-00000-of-00001.jsonl").read_bytes() == b"new"


def test_staging_dir_is_beside_the_output_and_removed_on_success_and_on_error(tmp_path):
    out = tmp_path / "new" / "out"
    root = tmp_path / "new" / ".out.staging"
    with publish.staging_dir(str(out)) as staging:
        assert Path(staging).parent == root
        assert (Path(staging) / publish.OWNER_FILE).read_text() == owner_tag()
        (Path(staging) / "train-00000-of-00001.tfrecord").write_bytes(b"x")
    assert _names(out) == [] and _names(out.parent) == ["out"]
    with pytest.raises(RuntimeError, match="boom"):
        with publish.staging_dir(str(out)) as staging:
            (Path(staging) / "part").write_bytes(b"x")
            raise RuntimeError("boom")
    assert _names(out) == [] and _names(out.parent) == ["out"]


def _reaped_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_leftover_staging_of_killed_runs_is_removed_and_a_running_ones_kept(tmp_path):
    out = tmp_path / "out"
    root = tmp_path / ".out.staging"
    host = owner_tag().rpartition("-")[0]
    owners = {"killed": f"{host}-{_reaped_pid()}", "running": owner_tag(),
              "other_host": f"not-{host}-1"}
    for run, tag in owners.items():
        _fill(root / run / "beam-temp-x", ["part"], b"x")
        (root / run / publish.OWNER_FILE).write_text(tag)
    _fill(out / ".staging-0123456789ab" / "beam-temp-y", ["part"], b"x")  # an older version's
    _fill(out, ["train-00000-of-00001.tfrecord", "notes.txt"], b"old")
    removed = publish.remove_leftover_staging(str(out))
    assert sorted(Path(p).name for p in removed) == [".staging-0123456789ab", "killed"]
    assert _names(root) == ["other_host", "running"]
    assert _names(out) == ["notes.txt", "train-00000-of-00001.tfrecord"]


def test_write_text_atomic_replaces_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "a.json"
    publish.write_text_atomic(str(path), "one\n")
    publish.write_text_atomic(str(path), "two\n")
    assert path.read_text() == "two\n"
    assert _names(tmp_path) == ["a.json"]


def test_summarize_gives_every_split_and_class_an_entry():
    failed = [json.dumps({"reason": r}) for r in ("missing", "empty", "missing")]
    summary = publish.summarize({("train", 0): 2, ("train", 2): 1, ("test", 1): 1}, failed,
                                ["train", "test", "val"], CLASSES)
    assert summary["counts"] == {
        "test": {"total": 1, "per_class": {"cat": 0, "dog": 1, "owl": 0}},
        "train": {"total": 3, "per_class": {"cat": 2, "dog": 0, "owl": 1}},
        "val": {"total": 0, "per_class": {"cat": 0, "dog": 0, "owl": 0}},
    }
    assert summary["failed"] == {"total": 3, "by_reason": {"empty": 1, "missing": 2}}
    assert publish.num_written(summary) == 4


def test_dataset_info_lists_shards_by_split_and_keeps_its_keys(tmp_path):
    exp = ExperimentConfig()
    summary = publish.summarize({("train", 1): 2}, [json.dumps({"reason": "empty"})],
                                ["train"], CLASSES)
    shards = [str(tmp_path / f"train-0000{i}-of-00002.tfrecord") for i in (1, 0)]
    for i, shard in enumerate(shards):
        Path(shard).write_bytes(b"shard %d" % i)
    info = publish.make_dataset_info(exp, CLASSES, summary, shards,
                                     ["gs://b/d/failed-00000-of-00001.jsonl"], 3)
    path = publish.write_dataset_info(info, str(tmp_path))
    data = json.loads(Path(path).read_text())
    assert Path(path) == tmp_path / DATASET_INFO
    assert list(data) == ["schema_version", "config", "class_names", "num_records", "counts",
                          "failed", "shards", "digests"]
    assert data["digests"] == {  # sha256 of b"shard 1" and b"shard 0"
        "train-00000-of-00002.tfrecord": hashlib.sha256(b"shard 1").hexdigest(),
        "train-00001-of-00002.tfrecord": hashlib.sha256(b"shard 0").hexdigest()}
    assert publish.file_digest(shards[1]) == (
        "bcc6bb562b1f8ed22cb90a4c93d9b9d4de1d08bbdf1120d225d684c259336446")
    assert data["schema_version"] == schema.SCHEMA_VERSION
    assert data["config"] == json.loads(json.dumps(exp.to_dict()))
    assert data["class_names"] == list(CLASSES) and data["num_records"] == 3
    assert data["counts"] == summary["counts"]
    assert data["failed"] == {"total": 1, "by_reason": {"empty": 1},
                              "files": ["failed-00000-of-00001.jsonl"]}
    assert data["shards"] == {"train": ["train-00000-of-00002.tfrecord",
                                        "train-00001-of-00002.tfrecord"]}
    assert DatasetInfo.from_json(data) == info


def _shard(path: Path, keys) -> None:
    with tf.io.TFRecordWriter(str(path)) as w:
        for split, label in keys:
            ex = tf.train.SequenceExample()
            ex.context.feature[schema.SPLIT].bytes_list.value.append(split.encode())
            ex.context.feature[schema.LABEL_INDEX].int64_list.value.append(label)
            w.write(ex.SerializeToString())


class _NoMetrics:
    """A pipeline result from a runner without metrics support."""

    def metrics(self):
        raise NotImplementedError("no metrics here")


def test_publish_job_counts_from_the_shards_when_the_runner_has_no_metrics(tmp_path):
    out, staging = tmp_path / "out", tmp_path / "out" / ".staging-x"
    staging.mkdir(parents=True)
    _shard(staging / "train-00000-of-00001.tfrecord", [("train", 0), ("train", 2)])
    _shard(staging / "test-00000-of-00001.tfrecord", [("test", 2)])
    (staging / "failed-00000-of-00001.jsonl").write_text(json.dumps({"reason": "empty"}) + "\n")
    assert publish.success_counts(_NoMetrics()) is None
    done = publish.publish_job(_NoMetrics(), str(staging), str(out), exp=ExperimentConfig(),
                               class_names=CLASSES, splits=["train", "test"], num_records=4)
    assert done.num_ok == 3
    assert done.summary["counts"]["train"]["per_class"] == {"cat": 1, "dog": 0, "owl": 1}
    assert done.info == DatasetInfo.read(out)
    assert done.info_path == str(out / DATASET_INFO)
    assert done.info.failed["by_reason"] == {"empty": 1}


def test_publish_job_with_no_success_writes_no_dataset_info(tmp_path):
    out, staging = tmp_path / "out", tmp_path / "out" / ".staging-x"
    _fill(out, ["train-00000-of-00001.tfrecord"], b"old")
    staging.mkdir()
    (staging / "failed-00000-of-00001.jsonl").write_text(json.dumps({"reason": "empty"}) + "\n")
    done = publish.publish_job(_NoMetrics(), str(staging), str(out), exp=ExperimentConfig(),
                               class_names=CLASSES, splits=["train"], num_records=1)
    assert (done.num_ok, done.info, done.info_path) == (0, None, None)
    assert _names(out) == sorted([".staging-x", "failed-00000-of-00001.jsonl",
                                  "train-00000-of-00001.tfrecord"])


@pytest.mark.slow
def test_counts_from_shards_agree_with_the_metrics(built):
    """The fallback for runners without metrics gives what the metrics gave."""
    _, out, _ = built
    info = json.loads((out / DATASET_INFO).read_text())
    counts, missing = publish.counts_from_shards([str(p) for p in sorted(out.glob("*.tfrecord"))])
    summary = publish.summarize(counts, [], ["train", "test"], info["class_names"], missing)
    assert summary["counts"] == info["counts"]


@pytest.mark.slow
def test_staging_is_gone_after_success(built):
    _, out, _ = built
    assert not [p for p in out.iterdir() if p.name.startswith((".staging", "beam-temp"))]
    assert not (out.parent / f".{out.name}.staging").exists()


def _old_and_staged(tmp_path: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """An output folder holding an old dataset, and a staging folder of a finished run."""
    out, staging = tmp_path / "out", tmp_path / ".out.staging" / "run"
    _fill(out, ["train-00000-of-00003.tfrecord", "failed-00000-of-00001.jsonl", "notes.txt"],
          b"old")
    (out / DATASET_INFO).write_text("{}")
    staging.mkdir(parents=True)
    _shard(staging / "train-00000-of-00001.tfrecord", [("train", 0)])
    (staging / "failed-00000-of-00001.jsonl").write_text(json.dumps({"reason": "empty"}) + "\n")
    return out, staging, {p.name: p.read_bytes() for p in out.iterdir()}


def test_publish_job_touches_the_output_only_once_dataset_info_is_staged(tmp_path, monkeypatch):
    """Hashing the shards (the slow part) happens in staging: a failure there, or a kill,
    leaves the old dataset whole (it used to come after the new shards had replaced it)."""
    out, staging, before = _old_and_staged(tmp_path)

    def digest_fails(path):
        raise OSError(f"cannot read {path}")

    monkeypatch.setattr(publish, "file_digest", digest_fails)
    with pytest.raises(OSError, match="cannot read"):
        publish.publish_job(_NoMetrics(), str(staging), str(out), exp=ExperimentConfig(),
                            class_names=CLASSES, splits=["train"], num_records=2)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_an_interrupted_publish_leaves_no_dataset_info(tmp_path, monkeypatch):
    """Dying between the renames leaves a folder that readers refuse (no dataset_info.json),
    never new shards described by the old dataset_info.json."""
    out, staging, _ = _old_and_staged(tmp_path)

    real_rename = publish.FileSystems.rename

    def rename_fails(src, dst):
        if any(Path(d).parent == out for d in dst):
            raise OSError("killed mid-publish")
        real_rename(src, dst)

    monkeypatch.setattr(publish.FileSystems, "rename", rename_fails)
    with pytest.raises(OSError, match="mid-publish"):
        publish.publish_job(_NoMetrics(), str(staging), str(out), exp=ExperimentConfig(),
                            class_names=CLASSES, splits=["train"], num_records=2)
    assert _names(out) == ["notes.txt"]
    with pytest.raises(FileNotFoundError, match="build the shards first"):
        DatasetInfo.read(out)
    assert (staging / DATASET_INFO).is_file()  # staged complete, with the shard's digest

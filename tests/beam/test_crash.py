"""The Beam job killed by SIGKILL mid-run: nothing of it in the output folder, and a rerun completes.

The job runs in a child process (:func:`tests.crash.run_killed`) that dies right after its first
shard is written; two real clips at tiny sizes (one frame, 32-pixel waveplots) keep it cheap.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import beam.build_tfrecords as job
from maivar_tf.artifacts import DATASET_INFO, DatasetInfo
from maivar_tf.data.annotations import make_example_id
from tests.beam.jobdata import CLIPS, base_argv, dead_letters, parse_dir
from tests.crash import run_killed

#: Two clips (one per split), one frame and 32-pixel waveplots: the cheapest whole job.
TINY = ["--num_segments=1", "--representations=waveplot", "--set", "model.representation=waveplot",
        "--set", "data.audio.image_size=32", "--set", "data.audio.max_seconds=1.0",
        "--set", "data.frame_short_side=64", "--set", "data.crop_size=32"]


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones and subfolders too), path -> bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.slow
def test_killed_job_leaves_the_output_folder_as_it_was_and_a_rerun_completes(tmp_path):
    clips = {"train": CLIPS[0], "test": CLIPS[1]}
    csv_path = tmp_path / "a.csv"
    csv_path.write_text("path,label,split\n" + "".join(
        f"{c.name},{c.name.split('_')[0]},{split}\n" for split, c in clips.items()))
    out = tmp_path / "out"
    out.mkdir()
    old = {"train-00000-of-00003.tfrecord": b"old shard", DATASET_INFO: b"{\"old\": 1}",
           "failed-00000-of-00001.jsonl": b"", "notes.txt": b"not the job's"}
    for name, data in old.items():
        (out / name).write_bytes(data)
    argv = base_argv(csv_path, out, *TINY)

    run_killed(f"""
        import beam.transforms
        kill_on_call(beam.transforms.WriteShardFn, "process", 1, after=True)
        from beam import build_tfrecords
        build_tfrecords.main({argv!r})
        """)
    # No shard, dataset_info, dead letter or staging folder of the killed run inside `out`
    # (its staging folder used to be `out/.staging-*`, holding the shard it had written).
    assert _files(out) == old
    staging = tmp_path / ".out.staging"
    assert list(staging.glob("*/*-of-00002.tfrecord")), "the shard was written beside `out`"

    assert job.main(argv) == 0
    assert not staging.exists(), "the killed run's staging folder was not removed"
    shards = ["test-00000-of-00002.tfrecord", "test-00001-of-00002.tfrecord",
              "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*shards, DATASET_INFO, "failed-00000-of-00001.jsonl", "notes.txt"])
    info = DatasetInfo.read(out)
    assert info.digests == {s: hashlib.sha256((out / s).read_bytes()).hexdigest() for s in shards}
    assert {s: c["total"] for s, c in info.counts.items()} == {"train": 1, "test": 1}
    got = parse_dir(out, reps=("waveplot",))
    assert {eid: ex["split"] for eid, ex in got.items()} == {
        make_example_id(c.name): split for split, c in clips.items()}
    assert dead_letters(out) == []

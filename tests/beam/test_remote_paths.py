"""Videos and outputs on a non-local filesystem: read and written through Beam's FileSystems.

``mockfs://`` (:mod:`tests.beam.mock_fs`) stands in for ``gs://``/``s3://``/``hdfs://``: the
job reads the real clips from ``mockfs://<clips>`` and publishes into ``mockfs://<out>`` and
must write what the local run wrote.
"""

from __future__ import annotations

import json

import pytest

from beam import build_tfrecords
from maivar_tf.data.clips import resolve_video_path
from maivar_tf.data.errors import MediaError
from maivar_tf.data.remote import is_remote, join_path, local_media
from tests.beam import mock_fs
from tests.beam.jobdata import CLIPS, CLIPS_DIR, REPS, K, dead_letters, parse_dir


def test_remote_paths_are_told_apart_and_joined():
    assert is_remote("gs://b/v.mp4") and is_remote("S3://b/v.mp4")
    assert not is_remote("/data/v.mp4") and not is_remote("file:///data/v.mp4")
    assert not is_remote("videos/a:b.mp4")
    assert join_path("gs://b/videos/", "/a/x.mp4") == "gs://b/videos/a/x.mp4"
    assert resolve_video_path("a/x.mp4", "gs://b/videos") == "gs://b/videos/a/x.mp4"
    assert resolve_video_path("s3://o/x.mp4", "gs://b/videos") == "s3://o/x.mp4"
    assert resolve_video_path("a/x.mp4", "/v") == "/v/a/x.mp4"


def test_local_media_copies_a_remote_video_and_removes_the_copy():
    clip = CLIPS[0]
    with local_media(mock_fs.PREFIX + str(clip)) as local:
        assert local != str(clip)
        with open(local, "rb") as f:
            assert f.read() == clip.read_bytes()
    with pytest.raises(FileNotFoundError):
        open(local, "rb")


def test_local_media_names_the_remote_path_in_errors(tmp_path):
    missing = f"{mock_fs.PREFIX}{tmp_path}/gone.mp4"
    with pytest.raises(MediaError) as e, local_media(missing):
        pass
    assert e.value.reason == "missing" and e.value.message == f"{missing}: no such file"
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"x" * 100)
    with pytest.raises(MediaError) as e, local_media(mock_fs.PREFIX + str(bad)) as local:
        raise MediaError("not_a_video", f"{local}: FFmpeg recognises no media container")
    assert e.value.message == f"{mock_fs.PREFIX}{bad}: FFmpeg recognises no media container"


def test_job_reads_remote_videos_and_publishes_to_a_remote_folder(built, job_inputs):
    """Same examples, dead letters and counts as the local run (``built``)."""
    rc, out, good = built
    root, csv_path, _ = job_inputs
    remote_out = root / "remote_out"
    argv = ["--runner=DirectRunner", "--dataset=csv", f"--annotations={csv_path}",
            f"--video_root={mock_fs.PREFIX}{CLIPS_DIR}",
            f"--output_dir={mock_fs.PREFIX}{remote_out}", f"--num_segments={K}",
            f"--representations={','.join(REPS)}", "--num_shards=2"]
    assert build_tfrecords.main(argv) == rc == 0
    local, remote = parse_dir(out), parse_dir(remote_out)
    assert set(remote) == set(local) == set(good)
    for eid, ex in local.items():
        assert remote[eid]["shard"] == ex["shard"]
        assert (remote[eid]["frames"] == ex["frames"]).all()
        for rep in REPS:
            assert (remote[eid]["images"][rep] == ex["images"][rep]).all()
    assert sorted(map(json.dumps, dead_letters(remote_out))) == sorted(
        map(json.dumps, dead_letters(out)))  # the bad inputs have absolute local paths
    info, remote_info = (json.loads((d / "dataset_info.json").read_text())
                         for d in (out, remote_out))
    assert remote_info["counts"] == info["counts"]
    assert remote_info["failed"] == info["failed"]

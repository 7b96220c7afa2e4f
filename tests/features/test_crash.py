"""``maivar extract`` killed by SIGKILL mid-shard: the rerun skips the finished shards and gives
the very bytes of an uninterrupted run.

The extraction runs in a child process (:func:`tests.crash.run_killed`) over the tiny TFRecords
with the tiny backbones, and dies in the middle of its second input shard.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from maivar_tf.artifacts import FEATURE_INFO, FeatureInfo
from maivar_tf.features import FeatureError, audio_shard_name, load_features, video_shard_name
from tests.crash import run_killed
from tests.features.tiny_data import LAYOUT, REPS, extract


def _shard_names(split: str, index: int) -> list[str]:
    return [video_shard_name(split, index), *(audio_shard_name(r, split, index) for r in REPS)]


@pytest.mark.slow
def test_killed_extraction_resumes_skipping_finished_shards_to_identical_features(
        tiny, traced, extracted, tmp_path):
    cfg, _ = tiny
    out = tmp_path / "features"
    first = _shard_names("train", 0)
    # One feature_example call per example and feature shard: shard 0 of train makes
    # 3 examples x 3 shards; the 12th call is in the middle of shard 1.
    calls = len(LAYOUT["train"][0]) * len(first) + 3
    run_killed(f"""
        from pathlib import Path
        import maivar_tf.features.extract as ex
        from tests.features.tiny_data import AUDIO_SIZE, CROP, extract, make_config
        from tests.tiny_models import tiny_audio_backbone, tiny_video_backbone
        kill_on_call(ex, "feature_example", {calls}, after=True)
        cfg = make_config(Path({str(Path(cfg.data.output_dir).parent)!r}), Path({str(out)!r}))
        extract(cfg, (tiny_video_backbone(CROP), tiny_audio_backbone(AUDIO_SIZE)))
        """)
    final = sorted(p.name for p in out.glob("*.tfrecord"))
    assert final == sorted(first), "only the finished shard may be there under its final name"
    for name in first:
        assert (out / name).read_bytes() == (extracted / name).read_bytes(), name
    assert FeatureInfo.read(out).splits == {}
    with pytest.raises(FeatureError, match="no 'train' features"):
        load_features(out, "train", REPS[0])
    kept = {name: ((out / name).stat().st_ino, (out / name).stat().st_mtime_ns)
            for name in first}

    extract(cfg, traced, features_dir=out)
    assert {name: ((out / name).stat().st_ino, (out / name).stat().st_mtime_ns)
            for name in first} == kept, "a finished shard was extracted again"
    names = sorted(p.name for p in extracted.glob("*.tfrecord"))
    assert sorted(p.name for p in out.glob("*.tfrecord")) == names
    for name in names:
        assert (out / name).read_bytes() == (extracted / name).read_bytes(), name
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, FEATURE_INFO])  # no temps
    info, whole = FeatureInfo.read(out), FeatureInfo.read(extracted)
    assert (info.fingerprint, info.splits) == (whole.fingerprint, whole.splits)
    assert len(load_features(out, "train", REPS[1])) == 5

"""Tests of the Beam job: transforms through TestPipeline, then the whole job on real clips.

The real clips in ``../shared/testdata/clips`` (not in UCF layout) are listed in a generic CSV
written into ``tmp_path`` next to one bad input of every kind; the job must write every good
clip (K frames, non-constant audio-images) and send every bad one to ``failed-*.jsonl`` with
its reason. Every test also checks Beam never took the Prism path (which downloads a binary).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import apache_beam
import av
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to, is_not_empty

import beam.build_tfrecords as job
from maivar_tf.config import AudioImageConfig, DataConfig
from maivar_tf.data import schema
from maivar_tf.data.annotations import VideoRecord, make_example_id

CLIPS_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "testdata" / "clips"
CLIPS = sorted(p for p in CLIPS_DIR.glob("*") if p.suffix in (".mp4", ".avi", ".mkv"))
K = 4
REPS = ("chromagram", "waveplot")

# Each bad input kind -> the reason the job must record for it.
BAD_REASONS = {
    "missing.mp4": "missing",
    "empty.mp4": "empty",
    "truncated.mkv": "truncated",
    "not_a_video.mp4": "not_a_video",
    "no_audio.mp4": "no_audio",
    "too_short.mkv": "too_short",
    "unknown_label.mp4": "unknown_label",
}


# ----------------------------------------------------------------------------- Prism guard


@pytest.fixture
def prism_calls(monkeypatch):
    """Every entry into the Prism runner or its binary download, recorded and refused."""
    from apache_beam.runners.portability import prism_runner

    calls: list[str] = []

    def refuse(name):
        def fn(*args, **kwargs):
            calls.append(name)
            raise RuntimeError(f"test: Prism must not be used ({name})")
        return fn

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", refuse("run_pipeline"))
    monkeypatch.setattr(prism_runner.PrismJobServer, "_download_to_local_path",
                        staticmethod(refuse("download")))
    monkeypatch.setattr(prism_runner.PrismJobServer, "local_bin",
                        classmethod(refuse("local_bin")))
    return calls


@pytest.fixture(autouse=True)
def _never_prism(request, prism_calls):
    yield
    if request.node.name != "test_guard_detects_stock_direct_runner_taking_the_prism_path":
        assert prism_calls == [], f"the Prism runner was entered: {prism_calls}"


def _tiny_pipeline(runner) -> list[int]:
    with apache_beam.Pipeline(runner=runner) as p:
        out = p | apache_beam.Create([1, 2, 3]) | apache_beam.Map(lambda x: x * 2)
        assert_that(out, equal_to([2, 4, 6]))
    return []


def test_guard_detects_stock_direct_runner_taking_the_prism_path(prism_calls):
    """Control: Beam's own DirectRunner does enter Prism (so the guard can see it)."""
    _tiny_pipeline("DirectRunner")
    assert "run_pipeline" in prism_calls


def test_our_direct_runner_never_enters_prism(prism_calls):
    _tiny_pipeline(job.PrismFreeDirectRunner())
    assert prism_calls == []
    opts = apache_beam.options.pipeline_options.PipelineOptions(["--runner=DirectRunner"])
    assert isinstance(job.local_runner_if_direct(opts), job.PrismFreeDirectRunner)
    opts = apache_beam.options.pipeline_options.PipelineOptions([])
    assert isinstance(job.local_runner_if_direct(opts), job.PrismFreeDirectRunner)
    opts = apache_beam.options.pipeline_options.PipelineOptions(["--runner=FlinkRunner"])
    assert job.local_runner_if_direct(opts) is None


# ----------------------------------------------------------------------------- bad inputs


def _write_video(path: Path, num_frames: int, audio_seconds: float, size: int = 64,
                 audio_codec: str = "aac") -> None:
    """A small MPEG-4 video of moving gradients, with a tone unless audio_seconds == 0."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("mpeg4", rate=10)
        vs.width, vs.height, vs.pix_fmt = size, size, "yuv420p"
        as_ = None
        if audio_seconds > 0:
            as_ = out.add_stream(audio_codec, rate=22050)
            as_.layout = "mono"
        yy, xx = np.mgrid[0:size, 0:size]
        for i in range(num_frames):
            img = np.stack([(xx * 4 + 9 * i) % 256, yy * 4 % 256, np.full_like(xx, 30 * i % 256)],
                           -1).astype(np.uint8)
            for pkt in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        if as_ is not None:
            n = int(audio_seconds * 22050)
            t = np.arange(n) / 22050
            wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            if audio_codec.startswith("pcm_s16"):
                wave = (wave * 32767).astype(np.int16)
            fmt = "s16" if audio_codec.startswith("pcm_s16") else "fltp"
            frame = av.AudioFrame.from_ndarray(wave, format=fmt, layout="mono")
            frame.sample_rate = 22050
            for pkt in as_.encode(frame):
                out.mux(pkt)
            for pkt in as_.encode():
                out.mux(pkt)


def make_bad_inputs(folder: Path) -> dict[str, Path]:
    """One file per bad-input kind (``missing.mp4`` is only a path)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in BAD_REASONS}
    paths["empty.mp4"].write_bytes(b"")
    mkv = next(p for p in CLIPS if p.suffix == ".mkv")
    data = mkv.read_bytes()
    paths["truncated.mkv"].write_bytes(data[:len(data) // 3])
    paths["not_a_video.mp4"].write_text("this is a text file, not a video\n" * 50)
    _write_video(paths["no_audio.mp4"], num_frames=30, audio_seconds=0.0)
    # 20 ms of PCM: fewer samples than one STFT window (AAC would pad to 2048).
    _write_video(paths["too_short.mkv"], num_frames=2, audio_seconds=0.02,
                 audio_codec="pcm_s16le")
    _write_video(paths["unknown_label.mp4"], num_frames=30, audio_seconds=3.0)
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


def _base_argv(csv_path: Path, out: Path, *extra: str) -> list[str]:
    return ["--runner=DirectRunner", "--dataset=csv", f"--annotations={csv_path}",
            f"--video_root={CLIPS_DIR}", f"--output_dir={out}", f"--num_segments={K}",
            f"--representations={','.join(REPS)}", "--num_shards=2", *extra]


def _parse_dir(out: Path, reps=REPS) -> dict[str, dict]:
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


def _dead_letters(out: Path) -> list[dict]:
    lines = []
    for path in sorted(out.glob("failed-*.jsonl")):
        lines += [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return lines


# ----------------------------------------------------------------------------- DoFn


def _small_cfg(**kw) -> DataConfig:
    base = dict(video_root=str(CLIPS_DIR), num_segments=K, representations=("chromagram",),
                frame_short_side=128, crop_size=112,
                audio=AudioImageConfig(image_size=64, max_seconds=3.0))
    base.update(kw)
    return DataConfig(**base)


def _elem(path: str, label_index: int, label: str, split: str = "train") -> dict:
    return job.record_to_element(VideoRecord(path=path, label_index=label_index,
                                             label_string=label, split=split,
                                             example_id=make_example_id(path)))


def test_process_video_dofn_routes_good_and_bad_records(tmp_path):
    good = CLIPS[0].name
    elements = [
        _elem(good, 0, "a"),
        _elem(str(tmp_path / "nothing_here.mp4"), 0, "a"),
        _elem(CLIPS[1].name, -1, "not_a_class", split="test"),
    ]
    cfg = _small_cfg()

    def check_examples(serialized):
        assert len(serialized) == 1
        ex = schema.parse_sequence_example(serialized[0], cfg.representations)
        assert ex[schema.EXAMPLE_ID].numpy().decode() == good
        assert ex[schema.IMAGE_ENCODED].shape == (K,)
        png = tf.io.decode_png(ex[schema.audio_image_key("chromagram")][0]).numpy()
        assert png.shape == (64, 64, 3) and png.std() > 0

    def check_failures(letters):
        by_reason = {d["reason"]: d for d in letters}
        assert set(by_reason) == {"missing", "unknown_label"}
        assert by_reason["missing"]["input"] == str(tmp_path / "nothing_here.mp4")
        assert by_reason["unknown_label"]["label"] == "not_a_class"
        assert by_reason["unknown_label"]["split"] == "test"
        assert by_reason["unknown_label"]["input"] == str(CLIPS_DIR / CLIPS[1].name)
        for d in letters:
            assert set(d) >= {"input", "split", "label", "reason", "message"}
            assert d["message"]

    p = BeamTestPipeline(runner=job.PrismFreeDirectRunner())
    results = (p | apache_beam.Create(elements)
               | apache_beam.ParDo(job.ProcessVideoDoFn(cfg)).with_outputs(
                   job.FAILED_TAG, "train", "test"))
    assert_that(results["train"], check_examples, label="train examples")
    assert_that(results["test"], equal_to([]), label="no test examples")
    assert_that(results[job.FAILED_TAG], check_failures, label="dead letters")
    assert_that(results[job.FAILED_TAG] | apache_beam.Map(job.dead_letter_to_json),
                is_not_empty(), label="dead letters serialise")
    result = p.run()
    result.wait_until_finish()
    assert job.success_counts(result) == {("train", 0): 1}
    counters = {c.key.metric.name: c.committed for c in result.metrics().query(
        MetricsFilter().with_namespace(job.METRICS_NAMESPACE))["counters"]}
    assert counters == {"videos_ok": 1, "failed_missing": 1, "failed_unknown_label": 1}


def test_dofn_sends_unexpected_exceptions_to_dead_letters(monkeypatch):
    def boom(record, cfg, mode="center"):
        raise ZeroDivisionError("kaboom")

    monkeypatch.setattr(job, "clip_example_from_record", boom)
    cfg = _small_cfg()
    with BeamTestPipeline(runner=job.PrismFreeDirectRunner()) as p:
        results = (p | apache_beam.Create([_elem(CLIPS[0].name, 0, "a")])
                   | apache_beam.ParDo(job.ProcessVideoDoFn(cfg)).with_outputs(
                       job.FAILED_TAG, "train"))
        assert_that(results[job.FAILED_TAG] | apache_beam.Map(
            lambda d: (d["reason"], "ZeroDivisionError: kaboom" in d["message"])),
            equal_to([("decode_error", True)]))


# ----------------------------------------------------------------------------- config errors


@pytest.mark.parametrize("argv,field", [
    (["--num_segments=0"], "data.num_segments"),
    (["--representations=waveplot,bogus"], "data.representations"),
    (["--dataset=imagenet"], "data.dataset"),
    (["--set", "data.jpeg_quality=101"], "data.jpeg_quality"),
    (["--set", "data.no_such_key=1"], "no_such_key"),
    (["--config=/nonexistent/config.yaml"], "config.yaml"),
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


# ----------------------------------------------------------------------------- the whole job


@pytest.fixture(scope="module")
def job_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("job")
    bad = make_bad_inputs(root / "bad")
    csv_path = root / "annotations.csv"
    good = write_csv(csv_path, bad)
    return root, csv_path, good


@pytest.fixture(scope="module")
def built(job_inputs):
    """One full run of the job; stale files from an 'earlier run' sit in the output first."""
    root, csv_path, good = job_inputs
    out = root / "out1"
    out.mkdir()
    for stale in ("train-00000-of-00005.tfrecord", "val-00000-of-00001.tfrecord",
                  "failed-00000-of-00003.jsonl"):
        (out / stale).write_bytes(b"stale")
    (out / "notes.txt").write_text("not ours")
    rc = job.main(_base_argv(csv_path, out))
    return rc, out, good


@pytest.mark.slow
def test_job_writes_every_good_clip_with_k_frames_and_audio_images(built):
    rc, out, good = built
    assert rc == 0
    got = _parse_dir(out)
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
    letters = _dead_letters(out)
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
def test_counts_from_shards_agree_with_the_metrics(built):
    """The fallback for runners without metrics gives what the metrics gave."""
    _, out, _ = built
    info = json.loads((out / "dataset_info.json").read_text())
    counts = job.counts_from_shards([str(p) for p in sorted(out.glob("*.tfrecord"))])
    summary = job.summarize(counts, [], ["train", "test"], info["class_names"])
    assert summary["counts"] == info["counts"]


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
    first, second = _parse_dir(out), _parse_dir(out2)
    assert set(first) == set(second)
    for eid in first:
        np.testing.assert_array_equal(first[eid]["frames"], second[eid]["frames"])
        np.testing.assert_array_equal(first[eid]["timestamps"], second[eid]["timestamps"])
        for rep in REPS:
            a = first[eid]["images"][rep].astype(int)
            b = second[eid]["images"][rep].astype(int)
            assert np.abs(a - b).max() <= image_atol, (eid, rep)
            assert (a != b).mean() < 1e-3, (eid, rep)
    assert sorted(map(json.dumps, _dead_letters(out))) == sorted(
        map(json.dumps, _dead_letters(out2)))
    info1, info2 = (json.loads((d / "dataset_info.json").read_text()) for d in (out, out2))
    assert info1["counts"] == info2["counts"]
    assert info1["failed"]["by_reason"] == info2["failed"]["by_reason"]


@pytest.mark.slow
def test_job_is_deterministic(built, job_inputs):
    """A second run, in 2 worker threads: same ids, identical decoded content, same counts."""
    rc, out, _ = built
    root, csv_path, _ = job_inputs
    out2 = root / "out2"
    assert job.main(_base_argv(csv_path, out2, "--direct_running_mode=multi_threading",
                               "--direct_num_workers=2")) == 0
    _assert_same_dataset(out, out2)


@pytest.mark.slow
def test_job_in_worker_processes_writes_the_same_dataset(built, job_inputs):
    """2 worker processes: same ids, frames and counts (metrics summed over processes).

    The workers render with 1 TF intra-op thread (the job's default in every mode); this
    test process may have started TF with more, and TF's float reductions then round a few
    audio-image pixels one level differently, so images are compared to within 1 here.
    """
    rc, out, _ = built
    root, csv_path, _ = job_inputs
    out3 = root / "out3"
    assert job.main(_base_argv(csv_path, out3, "--direct_running_mode=multi_processing",
                               "--direct_num_workers=2")) == 0
    same_threads = tf.config.threading.get_intra_op_parallelism_threads() == 1
    _assert_same_dataset(out, out3, image_atol=0 if same_threads else 1)


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
    rc = job.main(_base_argv(csv_path, out))
    assert rc != 0
    assert {d["reason"] for d in _dead_letters(out)} == {"missing", "empty"}
    assert (out / "train-00000-of-00001.tfrecord").read_bytes() == b"old"
    assert not (out / "dataset_info.json").exists()
    assert not list(out.glob(".staging-*"))


def test_pipeline_failure_leaves_no_staging_and_old_output(job_inputs, tmp_path, monkeypatch):
    _, csv_path, _ = job_inputs

    def broken_setup(self):
        raise RuntimeError("worker set-up failed")

    monkeypatch.setattr(job.ProcessVideoDoFn, "setup", broken_setup)
    out = tmp_path / "out"
    out.mkdir()
    (out / "train-00000-of-00001.tfrecord").write_bytes(b"old")
    rc = job.main(_base_argv(csv_path, out, "--limit=1"))
    assert rc == 1
    assert sorted(p.name for p in out.iterdir()) == ["train-00000-of-00001.tfrecord"]


@pytest.mark.slow
def test_staging_is_gone_after_success(built):
    _, out, _ = built
    assert not [p for p in out.iterdir() if p.name.startswith((".staging", "beam-temp"))]


def test_record_elements_round_trip():
    rec = VideoRecord(path="a/b.mp4", label_index=3, label_string="b", split="test",
                      start_s=1.5, end_s=4.0, example_id="a/b.mp4#t=1.5,4")
    assert VideoRecord(**job.record_to_element(rec)) == rec
    assert dataclasses.asdict(rec) == job.record_to_element(rec)

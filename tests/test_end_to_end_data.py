"""The end-to-end training input: the TFRecords as a stage input with the in-memory contract.

On the tiny shards of ``tests/features/tiny_data.py`` (train: 5 clips in 2 shards, K = 2
stored frames): every batch is compared with what the one decoder gives for the same record
(centre crops in evaluation; in training the random crop, flip and segment offset of the
example's seeds), epochs are functions of ``(seed, epoch)``, and evaluation passes count every
kept example once. Examples are told apart by their ``audio_features`` row (its position in
``ids``), so each check knows which record a batch row came from.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from maivar_tf.data import schema
from maivar_tf.data.decode import decode_example
from maivar_tf.end_to_end_data import (
    AUDIO_FEATURES,
    AUDIO_IMAGE,
    FRAMES,
    TFRecordInput,
    example_seeds,
)
from tests.features.tiny_data import CROP, make_config, write_tfrecords

TRAIN_IDS = ["v_a", "v_b", "v_c", "v_d", "v_e"]
REP = "mfcc"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """``(cfg.data, {id: serialized record}, {id: label})`` of the tiny shards."""
    cfg = make_config(Path(tmp_path_factory.mktemp("e2e")))
    labels = write_tfrecords(cfg)
    records = {}
    for path in sorted(Path(cfg.data.output_dir).glob("*.tfrecord")):
        for raw in tf.data.TFRecordDataset(str(path)):
            eid = schema.parse_sequence_example(raw, ())[schema.EXAMPLE_ID].numpy().decode()
            records[eid] = raw.numpy()
    return cfg.data, records, labels


def _input(data_cfg, ids=TRAIN_IDS, **kwargs) -> TFRecordInput:
    kwargs.setdefault("frames", True)
    kwargs.setdefault("audio_image", REP)
    feature_ids = np.asarray(ids[::-1])  # another order than ids: rows are looked up by id
    rows = np.asarray([[float(ids.index(i)), 7.0] for i in feature_ids], np.float32)
    return TFRecordInput(data_cfg.output_dir, "train", data_cfg, ids=ids,
                         audio_features=(feature_ids, rows), **kwargs)


def _batches(inp: TFRecordInput, count: int, global_batch=2, **kwargs) -> list:
    it = iter(inp.dataset(global_batch, **kwargs))
    return [tf.nest.map_structure(lambda t: t.numpy(), next(it)) for _ in range(count)]


def _ids_of(batch, ids=TRAIN_IDS) -> list[str]:
    return [ids[int(r)] for r in batch[0][AUDIO_FEATURES][:, 0]]


def _decoded(record: bytes, data_cfg, **options) -> dict:
    out = decode_example(record, representations=(REP,), crop_size=CROP,
                         num_segments=data_cfg.num_segments, stored_segments=2,
                         image_size=299, **options)
    return tf.nest.map_structure(lambda t: t.numpy(), out)


def _assert_equal_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        tf.nest.assert_same_structure(x, y)
        for u, v in zip(tf.nest.flatten(x), tf.nest.flatten(y), strict=True):
            np.testing.assert_array_equal(u, v)


def test_training_epochs_are_functions_of_seed_and_epoch(shards):
    data_cfg, _, labels = shards
    inp = _input(data_cfg)
    assert inp.num_examples == 5
    run = _batches(inp, 6, training=True, seed=3)
    _assert_equal_batches(run, _batches(_input(data_cfg), 6, training=True, seed=3))
    for epoch in (run[:3], run[3:]):  # steps = ceil(5 / 2) = 3; the 6th slot repeats the 1st
        seen = [i for b in epoch for i in _ids_of(b)]
        assert sorted(seen[:5]) == TRAIN_IDS and seen[5] == seen[0]
        for b in epoch:
            inputs, y = b
            assert inputs[FRAMES].shape == (2, 2, CROP, CROP, 3)
            assert inputs[FRAMES].dtype == np.uint8 and inputs[AUDIO_IMAGE].dtype == np.uint8
            assert y.tolist() == [labels[i] for i in _ids_of(b)]
            np.testing.assert_array_equal(inputs[AUDIO_FEATURES][:, 1], [7.0, 7.0])
    first = {i: b[0][FRAMES][j] for b in run[:3] for j, i in enumerate(_ids_of(b))}
    second = {i: b[0][FRAMES][j] for b in run[3:] for j, i in enumerate(_ids_of(b))}
    assert all(not np.array_equal(first[i], second[i]) for i in TRAIN_IDS)  # new crops
    other = _batches(inp, 3, training=True, seed=4)
    assert [_ids_of(b) for b in other] != [_ids_of(b) for b in run[:3]]


def test_a_resumed_dataset_starts_at_its_epoch(shards):
    data_cfg, _, _ = shards
    inp = _input(data_cfg)
    whole = _batches(inp, 9, training=True, seed=5)
    _assert_equal_batches(_batches(inp, 6, training=True, seed=5, first_epoch=1), whole[3:])


def test_training_augmentation_is_the_decoders_with_the_examples_seeds(shards):
    data_cfg, records, _ = shards
    inp = _input(data_cfg)
    batches = _batches(inp, 6, training=True, seed=8)  # epochs 0 and 1
    for epoch in (0, 1):
        for b in batches[3 * epoch:3 * epoch + 3]:
            for j, eid in enumerate(_ids_of(b)):
                crop_seed, _ = example_seeds(8, epoch, eid)
                ref = _decoded(records[eid], data_cfg, crop="random", seed=crop_seed)
                centre = _decoded(records[eid], data_cfg)
                np.testing.assert_array_equal(b[0][FRAMES][j], ref["frames"])
                assert not np.array_equal(b[0][FRAMES][j], centre["frames"])
                np.testing.assert_array_equal(b[0][AUDIO_IMAGE][j],  # never augmented
                                              centre["audio_images"][REP])
    plain = _input(dataclasses.replace(data_cfg, train_augment=False))
    for b in _batches(plain, 3, training=True, seed=8):
        for j, eid in enumerate(_ids_of(b)):
            np.testing.assert_array_equal(b[0][FRAMES][j],
                                          _decoded(records[eid], data_cfg)["frames"])


def test_random_segment_offsets_follow_the_example_seeds(shards):
    data_cfg, records, _ = shards
    one = dataclasses.replace(data_cfg, num_segments=1)  # K = 1 of the 2 stored frames
    inp = _input(one, frames=True, audio_image=None)
    assert inp.random_offsets
    picked = set()
    batches = _batches(inp, 9, training=True, seed=2)  # epochs 0, 1, 2
    for epoch in range(3):
        for b in batches[3 * epoch:3 * epoch + 3]:
            assert set(b[0]) == {FRAMES, AUDIO_FEATURES}
            for j, eid in enumerate(_ids_of(b)):
                crop_seed, segment_seed = example_seeds(2, epoch, eid)
                ref = _decoded(records[eid], one, crop="random", seed=crop_seed,
                               segment_seed=segment_seed)
                np.testing.assert_array_equal(b[0][FRAMES][j], ref["frames"])
                times = _decoded(records[eid], one, segment_seed=segment_seed)["segment_times"]
                picked.add(round(float(times[0]) * 10))  # frame k is at k * 0.1 s
    assert picked == {0, 1}  # both stored frames of the one segment's range [0, 2)


def test_decode_random_offsets_stay_inside_each_segments_range():
    frames = [tf.io.encode_jpeg(np.full((40, 40, 3), 20 * k, np.uint8)).numpy()
              for k in range(7)]
    clip = schema.ClipExample(
        example_id="x", data_path="x.mp4", label_index=0, label_string="c", split="train",
        frames_jpeg=frames, frame_timestamps_us=[k * 1_000_000 for k in range(7)], height=40,
        width=40, frame_rate=1.0, sample_rate=16000, audio_images_png={})
    record = schema.to_sequence_example(clip).SerializeToString()
    ranges = [range(0, 2), range(2, 4), range(4, 7)]  # floor(i * 7 / 3) .. floor((i + 1) * 7 / 3)
    seen = [set(), set(), set()]
    for s in range(40):
        for stored in (7, None):  # a static and a per-example stored count
            out = decode_example(record, representations=(), crop_size=32, num_segments=3,
                                 stored_segments=stored, segment_seed=tf.constant([s, 1]))
            picks = [int(round(t)) for t in out["segment_times"].numpy()]
            for i, k in enumerate(picks):
                assert k in ranges[i]
                assert abs(int(out["frames"].numpy()[i].mean()) - 20 * k) <= 2
                seen[i].add(k)
    assert seen == [set(r) for r in ranges]
    even = decode_example(record, representations=(), crop_size=32, num_segments=3,
                          stored_segments=7)
    np.testing.assert_array_equal(even["segment_times"].numpy(), [1.0, 3.0, 5.0])


def test_evaluation_counts_every_kept_example_once_with_centre_crops(shards):
    data_cfg, records, labels = shards
    ids = ["v_e", "v_a", "v_d"]  # a subset, in another order than the files'
    inp = _input(data_cfg, ids=ids)
    assert inp.num_examples == 3
    dist, steps = inp.distributed(tf.distribute.get_strategy(), 2, training=False, seed=1)
    it = iter(dist)
    passes = [[tf.nest.map_structure(lambda t: t.numpy(), next(it)) for _ in range(steps)]
              for _ in range(2)]
    assert steps == 2
    _assert_equal_batches(passes[0], passes[1])  # repeated, the same each pass
    weights = np.concatenate([b[2] for b in passes[0]])
    seen = [i for b in passes[0] for i in _ids_of(b, ids)]
    np.testing.assert_array_equal(weights, [1, 1, 1, 0])
    assert sorted(seen[:3]) == sorted(ids) and seen[3] == seen[0]  # padded with the first
    for x, y, _ in passes[0]:
        for j, eid in enumerate(_ids_of((x, y), ids)):
            ref = _decoded(records[eid], data_cfg)
            np.testing.assert_array_equal(x[FRAMES][j], ref["frames"])
            np.testing.assert_array_equal(x[AUDIO_IMAGE][j], ref["audio_images"][REP])
            assert y[j] == labels[eid]


def test_pipelines_split_the_same_global_batches(shards):
    data_cfg, _, _ = shards
    inp = _input(data_cfg, frames=False)
    single = _batches(inp, 6, global_batch=4, training=True, seed=6)
    parts = [_batches(inp, 6, global_batch=4, training=True, seed=6,
                      input_context=tf.distribute.InputContext(2, p, 2)) for p in (0, 1)]
    for s in range(6):
        joined = _ids_of(parts[0][s]) + _ids_of(parts[1][s])
        assert parts[0][s][0][AUDIO_IMAGE].shape == (2, 299, 299, 3)
        assert joined == _ids_of(single[s])
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0"])
    dist, steps = inp.distributed(mirrored, 4, training=True, seed=6)
    assert steps == 2
    first = tf.nest.map_structure(lambda t: t.numpy(), next(iter(dist)))
    _assert_equal_batches([first], single[:1])


def test_refusals(shards):
    data_cfg, _, _ = shards
    with pytest.raises(ValueError, match="no row"):
        TFRecordInput(data_cfg.output_dir, "train", data_cfg, ids=TRAIN_IDS, frames=True,
                      audio_features=(np.asarray(TRAIN_IDS[:2]), np.zeros((2, 3))))
    with pytest.raises(ValueError, match="repeated"):
        TFRecordInput(data_cfg.output_dir, "train", data_cfg, ids=["v_a", "v_a"], frames=True)
    with pytest.raises(ValueError, match="representations"):
        TFRecordInput(data_cfg.output_dir, "train", data_cfg, ids=TRAIN_IDS, frames=False,
                      audio_image="spectrogram")
    missing = TFRecordInput(data_cfg.output_dir, "train", data_cfg, ids=["v_a", "v_zz"],
                            frames=False, audio_image=REP)
    with pytest.raises(tf.errors.FailedPreconditionError, match="expected to contain 2"):
        _batches(missing, 2, training=True, seed=0)

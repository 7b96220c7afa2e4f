"""The extraction run (``maivar extract``): TFRecords -> frozen backbone features -> shards.

The paper (Shaikh et al. 2024, Sec. 3.3-3.4) trains its heads on frozen features: BNInception
(TSN) turns each of the K segment frames into a 1024-d vector and InceptionResNetV2 each
audio-image into a 1536-d vector. :func:`extract_features` computes both once, decoding the
TFRecords with :func:`maivar_tf.data.decode.decode_example` and running the backbones through
:mod:`maivar_tf.models.backbones` (the same code as serving), and writes the shards
:mod:`maivar_tf.features.shards` reads.

When the TFRecords hold per-segment audio-images (``data.segment_audio``), the audio backbone
also runs on the K images of each clip (batched like the others) into per-segment audio shards
(``audio-<REP>_SEGMENTS-...``, :func:`~maivar_tf.features.shards.audio_segment_shard_name`),
and the video shards carry each clip's K segment labels and times and its audio-missing flag.
Every run also records the audio backbone's features of each representation's silent
audio-image in ``feature_info.json`` (:mod:`maivar_tf.features.silent`).

One output shard per input shard (``SSSSS`` is the input shard's index). Each output is written
under a temporary name and renamed when complete, so an interrupted run leaves no half-written
shard under a final name; a re-run skips every output that already exists (and computes only
the missing representations of a shard). ``feature_info.json`` records a fingerprint of
everything the values depend on (the video backbone, K, crops, the TFRecords'
``dataset_info.json``) and one per audio backbone: a folder made with other settings is refused,
but an extraction with another ``model.audio_backbone`` adds that backbone's audio shards beside
the others (``audio-<backbone>-<REP>-...``, :func:`~maivar_tf.features.shards.audio_shard_name`)
and skips the video shards that exist. Folders of version 2 (one audio backbone) are read, and
extended, as holding the default backbone's. Extraction is deterministic: no shuffling, no
random crops (the centre crop, or TSN's ten crops with ``extract.ten_crop``).

Example:
    >>> cfg = load_config("configs/synthetic.yaml")                     # doctest: +SKIP
    >>> extract_features(cfg, representations=["chromagram"])           # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from maivar_tf.artifacts import (
    SHARD_NAME_RE,
    BackboneSpec,
    DatasetInfo,
    SplitFeatures,
)
from maivar_tf.config import ExperimentConfig
from maivar_tf.console import progress as progress_bar
from maivar_tf.features.codec import video_extras
from maivar_tf.features.info import (
    extraction_fingerprint,
    new_feature_info,
    record_split,
    start_feature_info,
)
from maivar_tf.features.outputs import (
    TMP_MARK,
    check_finite_features,
    count_records,
    remove_stale_temps,
    shard_ids,
)
from maivar_tf.features.shards import (
    FeatureError,
    audio_segment_shard_name,
    audio_shard_name,
    feature_example,
    video_shard_name,
)
from maivar_tf.features.silent import record_silent_features, tfrecords_audio_config

if TYPE_CHECKING:  # the run imports TensorFlow and Keras only when it starts
    from maivar_tf.data.input_pipeline import ShardLayout
    from maivar_tf.models.backbones import BackboneFeatures



def input_shards(data_dir: str | os.PathLike, split: str) -> list[Path]:
    """The split's TFRecord shards in the order ``make_dataset`` reads them (empty if none)."""
    from maivar_tf.data.input_pipeline import shard_files

    try:
        return [Path(f) for f in shard_files(data_dir, split)]
    except FileNotFoundError:
        return []


def shard_index(path: Path, position: int) -> int:
    """The ``SSSSS`` of ``<split>-SSSSS-of-NNNNN.tfrecord`` (its position when unnamed so)."""
    m = SHARD_NAME_RE.match(path.name)
    return int(m.group("index")) if m else position


# ----------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class _Job:
    """What every input shard of one run is extracted with."""

    out_dir: Path
    representations: tuple[str, ...]
    video: BackboneFeatures
    audio: BackboneFeatures
    audio_backbone: str
    layout: ShardLayout
    num_segments: int
    crop_size: int
    ten_crop: bool
    batch_size: int
    segment_audio: bool = False


def backbone_features(cfg: ExperimentConfig, out_dir: Path, injected: Mapping[str, Any],
                       kinds: Sequence[str] = ("video", "audio")
                       ) -> dict[str, tuple[BackboneFeatures, BackboneSpec]]:
    """``{kind: (BackboneFeatures, BackboneSpec)}`` of ``kinds``: injected models, else the
    configured ones.

    An injected model may be a Keras model or a ready :class:`BackboneFeatures` (whose trace is
    then reused across runs).
    """
    from maivar_tf.models.backbones import BackboneFeatures, init_backbone, injected_spec

    sizes = {"video": int(cfg.data.crop_size), "audio": int(cfg.data.audio.image_size)}
    weights = {"video": cfg.model.video_weights, "audio": cfg.model.audio_weights}
    seeds = {"video": cfg.train.seed, "audio": cfg.train.seed + 1}
    archs = {"video": cfg.model.video_backbone, "audio": cfg.model.audio_backbone}
    out = {}
    for kind in kinds:
        size, given = sizes[kind], injected.get(kind)
        if isinstance(given, BackboneFeatures):
            if given.image_shape != (size, size, 3):
                raise FeatureError(f"the injected {kind} backbone takes {given.image_shape}; "
                                   f"the config asks for {(size, size, 3)}")
            out[kind] = (given, injected_spec(given.model, size))
            continue
        if given is not None:
            model, spec = given, injected_spec(given, size)
        else:
            try:
                model, spec = init_backbone(kind, weights[kind], size, out_dir,
                                            seed=seeds[kind], architecture=archs[kind],
                                            precision=cfg.extract.precision)
            except ValueError as e:  # an image size the backbone does not take
                raise FeatureError(f"{kind} backbone {archs[kind] or ''}: {e}") from e
        try:
            out[kind] = (BackboneFeatures(model, (size, size, 3)), spec)
        except ValueError as e:
            raise FeatureError(str(e)) from e
    return out


def _check_request(cfg: ExperimentConfig, data_dir: Path, splits: Sequence[str],
                   representations: Sequence[str] | None) -> tuple[list[str], dict]:
    """The representations to extract and every split's input shards, checked."""
    reps = list(cfg.data.representations if representations is None else representations)
    for r in reps:
        if r not in cfg.data.representations:
            raise FeatureError(f"representation {r!r} is not in the TFRecords; allowed: "
                               f"{', '.join(cfg.data.representations)} (data.representations)")
    if not splits:
        raise FeatureError("no splits to extract; allowed: train, test, val")
    shards = {s: input_shards(data_dir, s) for s in splits}
    for s, found in shards.items():
        if not found:
            raise FeatureError(f"no {s}-SSSSS-of-NNNNN.tfrecord shards in {data_dir}; run "
                               "`maivar build` first (or check data.output_dir)")
    return reps, shards


def _shard_layout(cfg: ExperimentConfig, data_dir: Path, reps: Sequence[str]) -> ShardLayout:
    """The input folder's :class:`ShardLayout`, checked against K, the crop and ``reps``."""
    from maivar_tf.data.input_pipeline import ShardLayout

    layout = ShardLayout.read(data_dir, cfg.data)
    try:
        layout.check(reps, int(cfg.data.num_segments), int(cfg.data.crop_size))
    except ValueError as e:
        raise FeatureError(f"data.{e}") from e
    return layout


def extract_features(cfg: ExperimentConfig, *, splits: Sequence[str] = ("train", "test"),
                     representations: Sequence[str] | None = None, progress: bool = True,
                     video_backbone=None, audio_backbone=None, preview_backbone=None,
                     data_dir: str | Path | None = None,
                     features_dir: str | Path | None = None) -> Path:
    """Runs the frozen backbones over the TFRecords and writes feature shards.

    With ``model.selection: audio_topk`` it then also extracts the preview backbone's
    (``model.preview_backbone``) clip-level and per-segment audio features into the same
    folder, as an extraction with that ``model.audio_backbone`` would
    (:mod:`maivar_tf.features.preview`).

    Args:
        cfg: the experiment; reads ``cfg.data.output_dir`` (TFRecords), writes
            ``cfg.data.features_dir``; ``cfg.model.audio_backbone`` the audio backbone (whose
            shards are added beside those of other audio backbones),
            ``cfg.model.video_weights``/``audio_weights`` the backbone weights,
            ``cfg.extract.ten_crop`` TSN ten-crop averaging and ``cfg.extract.batch_size`` the
            videos per batch.
        splits: which splits to extract.
        representations: audio-images to extract (default: ``cfg.data.representations``).
        progress: report progress per split (:func:`maivar_tf.console.progress`).
        video_backbone: a Keras model ``[B,crop,crop,3] (0..255 RGB) -> [B,Dv]`` or a
            :class:`~maivar_tf.models.backbones.BackboneFeatures` of one; default: BNInception
            with ``cfg.model.video_weights``. Tests inject tiny ones.
        audio_backbone: the same for ``[B,S,S,3] -> [B,Da]``, standing in for
            ``cfg.model.audio_backbone`` (whose name its shards get); default that backbone.
        preview_backbone: the same, standing in for ``cfg.model.preview_backbone`` (used with
            ``audio_topk`` only).
        data_dir: overrides ``cfg.data.output_dir``.
        features_dir: overrides ``cfg.data.features_dir``.

    Returns:
        The features folder.

    Raises:
        FeatureError: no input shards for a split, a K or representation the shards lack,
            existing shards made with other settings (delete the folder or pick another one),
            or ``audio_topk`` on TFRecords without per-segment audio-images.
    """
    from maivar_tf.features.preview import needs_preview, preview_config

    data_dir = Path(data_dir or cfg.data.output_dir)
    out_dir = Path(features_dir or cfg.data.features_dir)
    reps, shards = _check_request(cfg, data_dir, splits, representations)
    layout = _shard_layout(cfg, data_dir, reps)
    if needs_preview(cfg) and not layout.segment_audio:
        raise FeatureError(f"model.selection: 'audio_topk' previews the per-segment "
                           f"audio-images, which the TFRecords in {data_dir} do not hold; "
                           "rebuild them with data.segment_audio=true")
    backbones = backbone_features(cfg, out_dir, {"video": video_backbone,
                                                  "audio": audio_backbone})
    out_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(cfg, out_dir, tuple(reps), shards, tuple(splits), layout,
               DatasetInfo.read(data_dir), progress)
    _extract_run(run, cfg, backbones["video"], backbones["audio"])
    if needs_preview(cfg):
        preview = preview_config(cfg)
        audio = backbone_features(preview, out_dir, {"audio": preview_backbone},
                                   kinds=("audio",))["audio"]
        _extract_run(run, preview, backbones["video"], audio)
    return out_dir


@dataclass(frozen=True)
class _Run:
    """What every audio backbone's pass of one :func:`extract_features` call shares."""

    cfg: ExperimentConfig  # the caller's config (recorded in feature_info.json)
    out_dir: Path
    representations: tuple[str, ...]
    shards: dict
    splits: tuple[str, ...]
    layout: ShardLayout
    dataset_info: DatasetInfo
    progress: bool


def _extract_run(run: _Run, cfg: ExperimentConfig, video_pair, audio_pair) -> None:
    """One pass: the video shards still missing and ``cfg.model.audio_backbone``'s audio
    shards, recorded in ``feature_info.json``."""
    (video, video_spec), (audio, _) = video_pair, audio_pair
    name, out_dir, dataset_info, reps = (cfg.model.audio_backbone, run.out_dir,
                                         run.dataset_info, run.representations)
    info = start_feature_info(out_dir, new_feature_info(run.cfg, cfg, dataset_info, video_pair,
                                                        audio_pair),
                              name, lambda audio: extraction_fingerprint(
                                  cfg, dataset_info, video_spec, audio, version=2))
    info = record_silent_features(info, out_dir, name, audio, reps,
                                  tfrecords_audio_config(dataset_info, cfg.data.audio))
    job = _Job(out_dir=out_dir, representations=reps, video=video, audio=audio,
               audio_backbone=name, layout=run.layout, num_segments=int(cfg.data.num_segments),
               crop_size=int(cfg.data.crop_size),
               ten_crop=bool(cfg.extract.ten_crop), batch_size=int(cfg.extract.batch_size),
               segment_audio=run.layout.segment_audio)
    for split in run.splits:
        total = (dataset_info.counts.get(split) or {}).get("total")
        with progress_bar(total=total, desc=f"extract {split} ({name})", unit="video",
                          enabled=run.progress) as bar:
            done = _extract_split(job, split, run.shards[split], bar)
        info = record_split(info, name, split, done)
        info.write(out_dir)


# ----------------------------------------------------------------------------- per shard


def _extract_split(job: _Job, split: str, files: Sequence[Path], bar) -> SplitFeatures:
    """Extracts every input shard of ``split`` (skipping finished outputs)."""
    count = 0
    for position, shard in enumerate(files):
        index = shard_index(shard, position)
        video_name = video_shard_name(split, index)
        audio_names = {r: audio_shard_name(r, split, index, job.audio_backbone)
                       for r in job.representations}
        segment_names = {r: audio_segment_shard_name(r, split, index, job.audio_backbone)
                         for r in (job.representations if job.segment_audio else ())}
        remove_stale_temps(job.out_dir, [video_name, *audio_names.values(),
                                          *segment_names.values()])
        todo_video = not (job.out_dir / video_name).exists()
        todo = {r: n for r, n in audio_names.items() if not (job.out_dir / n).exists()}
        todo_segments = {r: n for r, n in segment_names.items()
                         if not (job.out_dir / n).exists()}
        if not todo_video and not todo and not todo_segments:
            n = count_records(job.out_dir / video_name)
            bar.update(n)
        else:
            n = _extract_shard(job, shard, video_name if todo_video else None, todo,
                               todo_segments, bar)
        count += n
    return SplitFeatures(count=count, num_shards=len(files),
                         representations=job.representations,
                         segment_representations=job.representations if job.segment_audio
                         else ())


def _shard_dataset(job: _Job, shard: Path, frames: bool, reps: Sequence[str],
                   segment_reps: Sequence[str] = ()):
    """One input shard decoded in file order, only the parts still to extract: batches of
    clips (single clips for ten crops, whose whole frames may differ in size between clips)."""
    import tensorflow as tf

    from maivar_tf.data.input_pipeline import pipeline_options

    decode = job.layout.decoder(reps, job.num_segments, job.crop_size,
                                crop="none" if job.ten_crop else "center", include_frames=frames,
                                segment_representations=segment_reps)
    batch = 1 if (frames and job.ten_crop) else job.batch_size
    ds = tf.data.TFRecordDataset(str(shard)).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch).with_options(pipeline_options()).prefetch(tf.data.AUTOTUNE)


def _batch_rows(job: _Job, batch, video_name: str | None, audio_names: dict[str, str],
                segment_names: dict[str, str]) -> dict[str, tuple[np.ndarray, str]]:
    """``{shard name: (features, kind)}`` of one decoded batch; kind ``video``, ``audio`` or
    ``segments`` (per-segment audio, ``[B, K, Da]``)."""
    import tensorflow as tf

    from maivar_tf.models.backbones import MAX_IMAGES_PER_CALL, video_features

    rows: dict[str, tuple[np.ndarray, str]] = {}
    if video_name is not None:
        rows[video_name] = (video_features(
            job.video, batch["frames"], job.crop_size, job.ten_crop,
            max_images=MAX_IMAGES_PER_CALL).numpy(), "video")
    for rep, name in audio_names.items():
        rows[name] = (job.audio(batch["audio_images"][rep],
                                max_images=MAX_IMAGES_PER_CALL).numpy(), "audio")
    for rep, name in segment_names.items():
        images = batch["audio_segments"][rep]  # [B, K, S, S, 3]
        flat = tf.reshape(images, [-1, *images.shape[2:]])
        feats = job.audio(flat, max_images=MAX_IMAGES_PER_CALL).numpy()
        rows[name] = (feats.reshape(int(images.shape[0]), int(images.shape[1]), -1),
                      "segments")
    return rows


def _extract_shard(job: _Job, shard: Path, video_name: str | None, audio_names: dict[str, str],
                   segment_names: dict[str, str], bar) -> int:
    """Extracts one input shard into temp files and renames them when all are complete.

    Returns:
        The number of examples in the shard.

    Raises:
        FeatureError: the pipeline yielded other examples than the shard holds, or a
            backbone gave non-finite features (:func:`check_finite_features`).
    """
    import tensorflow as tf

    expected = shard_ids(shard)
    names = (([video_name] if video_name else []) + list(audio_names.values())
             + list(segment_names.values()))
    tmps = {name: job.out_dir / f".{name}{TMP_MARK}{os.getpid()}" for name in names}
    writers = {name: tf.io.TFRecordWriter(str(path)) for name, path in tmps.items()}
    seen: list[bytes] = []
    try:
        for batch in _shard_dataset(job, shard, video_name is not None, list(audio_names),
                                    list(segment_names)):
            ids, labels = batch["example_id"].numpy(), batch["label"].numpy()
            rows = _batch_rows(job, batch, video_name, audio_names, segment_names)
            extras = [video_extras(*row) for row in zip(
                batch["segment_labels"].numpy(), batch["segment_times"].numpy(),
                batch["has_spans"].numpy(), batch["audio_missing"].numpy(), strict=True)]
            for name, (feats, kind) in rows.items():
                check_finite_features(shard, name, ids, feats)
                for i, label, row, extra in zip(ids, labels, feats, extras, strict=True):
                    writers[name].write(feature_example(
                        i, label, row, video=kind == "video", segments=kind == "segments",
                        extras=extra if kind == "video" else None))
            seen.extend(ids.tolist())
            bar.update(len(ids))
        if seen != expected:
            raise FeatureError(
                f"{shard}: the input pipeline yielded {len(seen)} examples, the shard holds "
                f"{len(expected)} (or in another order); refusing to write its features")
    except BaseException:
        for w in writers.values():
            w.close()
        for path in tmps.values():
            path.unlink(missing_ok=True)
        raise
    for w in writers.values():
        w.close()
    for name, path in tmps.items():
        os.replace(path, job.out_dir / name)
    return len(expected)

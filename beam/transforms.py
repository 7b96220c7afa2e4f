"""The Beam transforms of the TFRecord job: one video in, one SequenceExample or dead letter out.

The pipeline :func:`build_pipeline` adds reads as a sentence::

    Create(annotation records) -> Reshuffle -> ProcessVideoDoFn
        -> per split: WriteShards       <staging>/<split>-SSSSS-of-NNNNN.tfrecord
        -> dead letters: WriteToText    <staging>/failed-SSSSS-of-NNNNN.jsonl

Shards are byte-identical for the same input in every runner mode: each example is
serialized deterministically (map keys sorted), goes to the shard a stable hash of its
example id names (:func:`shard_of`), and each shard holds its examples sorted by example id,
so nothing in a shard depends on scheduling.

:class:`ProcessVideoDoFn` turns one annotation record into one ``tf.train.SequenceExample``
(schema in :mod:`maivar_tf.data.schema`) through the one per-video function,
:func:`maivar_tf.data.clips.clip_example_from_record`: K TSN segment frames as JPEG and the
configured audio-images as PNG (the paper's Sec. 3.2). Every failure becomes a dead letter on the
:data:`FAILED_TAG` output with its reason, and Beam metrics count successes per
(split, class) and failures per reason; nothing is held in a mutable closure, and the
per-worker set-up (TF thread pools, renderer tracing) happens in ``DoFn.setup``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import apache_beam
from apache_beam.metrics import Metrics

from maivar_tf.artifacts import FAILED_PREFIX, SHARD_TEMPLATE, shard_glob, shard_name
from maivar_tf.config import DataConfig
from maivar_tf.data.annotations import VideoRecord
from maivar_tf.data.clips import clip_example_from_record, resolve_video_path
from maivar_tf.data.errors import MediaError
from maivar_tf.data.remote import local_output
from maivar_tf.data.schema import to_sequence_example

#: The job's logger: the driver and every worker log under this one name.
LOGGER = logging.getLogger("beam.build_tfrecords")

#: Tag of the dead-letter output of :class:`ProcessVideoDoFn`.
FAILED_TAG = "failed"
#: Glob of every shard file this job writes (any split).
SHARD_GLOB = shard_glob()
#: Glob of every dead-letter file this job writes (prefix :data:`artifacts.FAILED_PREFIX`).
FAILED_GLOB = f"{FAILED_PREFIX}-*.jsonl"
#: Namespace of the ``videos_ok`` and ``failed_<reason>`` counters.
METRICS_NAMESPACE = "maivar_tf"
#: Namespace of the per-(split, class) success counters, named ``<split>/<label_index>``.
COUNTS_NAMESPACE = "maivar_tf.counts"
#: Namespace of the per-split counters of clips kept with silent audio
#: (``data.on_missing_audio: silence``), named ``<split>``.
AUDIO_MISSING_NAMESPACE = "maivar_tf.audio_missing"
#: With ``data.num_shards: 0``, a split gets one shard per this many videos (at least one).
VIDEOS_PER_SHARD = 256


def limit_tf_threads(threads: int) -> int:
    """Sets TF's intra-op threads in this worker process; returns the count in force.

    A no-op once TF has run an op in this process (then TF keeps its pools). The count
    matters beyond speed: TF's float reductions sum in a thread-dependent order, so
    audio-images rendered with different counts can differ by one level in a few pixels.
    The job therefore uses the same count (1) in every runner mode.

    Args:
        threads: intra-op threads (inter-op gets ``max(2, threads)``); 0 leaves TF's default.

    Returns:
        TF's intra-op thread count now in force (0: TF decides, i.e. all cores).
    """
    import tensorflow as tf

    if threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(2, threads))
        except RuntimeError:  # the TF runtime is already initialised in this process
            pass
    return tf.config.threading.get_intra_op_parallelism_threads()


def _worker_name() -> str:
    """``pid/thread`` of this DoFn instance, for progress lines."""
    return f"{os.getpid()}/{threading.get_native_id()}"


def warm_up_renderers(cfg: DataConfig) -> None:
    """Traces the one audio-image function :meth:`ProcessVideoDoFn.process` calls.

    ``audio_image.warm_up`` also traces one function per single representation, which this
    job never calls; only the combined function the job renders with is traced here, once
    per worker process.

    Args:
        cfg: the data section (its representations and audio config pick the function).
    """
    import numpy as np

    from maivar_tf.data.audio_image import render_audio_images

    render_audio_images(np.zeros(2 * cfg.audio.n_fft, np.float32), cfg.representations,
                        cfg.audio)
    if cfg.segment_audio:  # the per-segment audio-images render a [K, L] batch
        render_audio_images(np.zeros((2, 2 * cfg.audio.n_fft), np.float32),
                            cfg.representations, cfg.audio)


def record_to_element(record: VideoRecord) -> dict[str, Any]:
    """A :class:`VideoRecord` as a plain dict (what flows through ``Create``).

    ``VideoRecord(**record_to_element(r)) == r`` for every record.
    """
    return dataclasses.asdict(record)


def dead_letter(record: VideoRecord, cfg: DataConfig, error: Exception) -> dict[str, Any]:
    """The dead letter of ``record``, which failed with ``error``.

    Args:
        record: the annotation record.
        cfg: the data section (``video_root`` resolves the input path).
        error: a :class:`MediaError` (its reason and message are kept) or any other
            exception (reason ``decode_error``, message ``<path>: <type>: <error>``).

    Returns:
        ``{"input", "split", "label", "reason", "message", "example_id"}``.
    """
    if isinstance(error, MediaError):
        reason, message = error.reason, error.message
    else:
        reason = "decode_error"
        message = f"{record.path}: {type(error).__name__}: {error}"
    return {
        "input": resolve_video_path(record.path, cfg.video_root),
        "split": record.split,
        "label": record.label_string,
        "reason": reason,
        "message": message,
        "example_id": record.example_id,
    }


class ProcessVideoDoFn(apache_beam.DoFn):
    """Decodes one video into a serialized SequenceExample, or a dead letter.

    Each split's ``(example id, serialized example)`` pairs go to the tagged output named after the split, and every
    rejected video to :data:`FAILED_TAG` as :func:`dead_letter` describes. Beam metrics count
    successes (``videos_ok``) and failures per reason (``failed_<reason>``) in
    :data:`METRICS_NAMESPACE`, successes per split and class (``<split>/<label_index>``)
    in :data:`COUNTS_NAMESPACE`, and clips kept with silent audio per split in
    :data:`AUDIO_MISSING_NAMESPACE` (each also logged on one line); ``dataset_info.json`` is made from those (a counting branch
    of transforms would cost more than the metrics).

    Args:
        cfg: the data section (K, frame size, JPEG quality, representations, audio config).
        mode: TSN sampling mode, ``center`` (deterministic) or ``random``.
        tf_threads: TF intra-op threads per worker process (0 leaves TF's default); keep it
            equal across runs for bit-identical audio-images.
        log_every: log a progress line every this many videos per worker (0: never).
        count_success: count successes (and clips with silent audio) here; ``False`` when a
            later stage may still reject the video (``--with_features``, which counts them).
    """

    def __init__(self, cfg: DataConfig, mode: str = "center", tf_threads: int = 1,
                 log_every: int = 25, count_success: bool = True):
        super().__init__()
        self._count = count_success
        self._cfg = cfg
        self._mode = mode
        self._tf_threads = tf_threads
        self._log_every = log_every

    def setup(self) -> None:
        """Once per worker: small TF thread pools, warmed-up audio-image renderers."""
        t0 = time.monotonic()
        threads = limit_tf_threads(self._tf_threads)
        warm_up_renderers(self._cfg)
        LOGGER.info("worker %s: set up in %.1fs (TF intra-op threads: %s)", _worker_name(),
                    time.monotonic() - t0, threads or "all cores")
        self._ok = Metrics.counter(METRICS_NAMESPACE, "videos_ok")
        self._failed = {}
        self._per_class = {}
        self._missing = {}
        self._processed = 0
        self._t0 = time.monotonic()

    def _count_failure(self, reason: str) -> None:
        if reason not in self._failed:
            self._failed[reason] = Metrics.counter(METRICS_NAMESPACE, f"failed_{reason}")
        self._failed[reason].inc()

    def _count_success(self, split: str, label_index: int) -> None:
        if not self._count:
            return
        key = f"{split}/{label_index}"
        if key not in self._per_class:
            self._per_class[key] = Metrics.counter(COUNTS_NAMESPACE, key)
        self._per_class[key].inc()
        self._ok.inc()

    def _count_audio_missing(self, record: VideoRecord) -> None:
        if self._count and record.split not in self._missing:
            self._missing[record.split] = Metrics.counter(AUDIO_MISSING_NAMESPACE, record.split)
        if self._count:
            self._missing[record.split].inc()
        LOGGER.warning("%s: no audio; kept with silent audio (data.on_missing_audio: silence, "
                       "audio/missing = 1)", resolve_video_path(record.path, self._cfg.video_root))

    def _log_progress(self) -> None:
        self._processed += 1
        if self._log_every and self._processed % self._log_every == 0:
            elapsed = time.monotonic() - self._t0
            LOGGER.info("worker %s: %d videos processed (%.2f videos/s)", _worker_name(),
                        self._processed, self._processed / max(elapsed, 1e-9))

    def process(self, element: Mapping[str, Any]) -> Iterator[Any]:
        """One record (:func:`record_to_element`) -> its split's example or a dead letter."""
        record = VideoRecord(**element)
        try:
            clip = clip_example_from_record(record, self._cfg, mode=self._mode)
            serialized = to_sequence_example(clip).SerializeToString(deterministic=True)
        except Exception as e:  # noqa: BLE001 - every failure becomes a dead letter
            letter = dead_letter(record, self._cfg, e)
            self._count_failure(letter["reason"])
            yield apache_beam.pvalue.TaggedOutput(FAILED_TAG, letter)
        else:
            self._count_success(record.split, int(record.label_index))
            if clip.audio_missing:
                self._count_audio_missing(record)
            yield apache_beam.pvalue.TaggedOutput(record.split, (record.example_id, serialized))
        self._log_progress()


def dead_letter_to_json(letter: Mapping[str, Any]) -> str:
    """One ``failed-*.jsonl`` line (keys sorted, so runs compare equal)."""
    return json.dumps(dict(letter), sort_keys=True)


def shard_of(example_id: str, num_shards: int) -> int:
    """The shard of an example: a stable hash of its id (equal in every process and run)."""
    digest = hashlib.sha256(example_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def shard_count(num_shards: int, num_videos: int) -> int:
    """``data.num_shards``, or for 0 one shard per :data:`VIDEOS_PER_SHARD` videos (>= 1)."""
    return num_shards or max(1, math.ceil(num_videos / VIDEOS_PER_SHARD))


def _key_by_shard(pair: tuple[str, bytes], num_shards: int) -> tuple[int, tuple[str, bytes]]:
    return shard_of(pair[0], num_shards), pair


class WriteShardFn(apache_beam.DoFn):
    """Writes one shard: its examples sorted by example id, as a TFRecord file.

    Its input is ``(shard index, pairs)`` after a ``GroupByKey``; a ``None`` pair is the
    placeholder that makes every shard index present, so an empty shard is written too.

    Args:
        prefix: ``<staging>/<split>``; the file is ``shard_name(split, index, total)`` beside it.
        total: the split's shard count.
    """

    def __init__(self, prefix: str, total: int):
        super().__init__()
        self._prefix = prefix
        self._total = total

    def process(self, element: tuple[int, Iterable[tuple[str, bytes] | None]]) -> Iterator[str]:
        """Writes the shard; yields its path."""
        import tensorflow as tf

        index, pairs = element
        folder, split = self._prefix.rstrip("/").rsplit("/", 1)
        path = f"{folder}/{shard_name(split, index, self._total)}"
        with local_output(path) as local:  # TF writes local files; Beam copies the rest
            with tf.io.TFRecordWriter(local) as writer:
                for _, serialized in sorted(p for p in pairs if p is not None):
                    writer.write(serialized)
        yield path


class WriteShards(apache_beam.PTransform):
    """One split's ``(example id, serialized example)`` pairs -> ``total`` TFRecord shards.

    Each pair goes to shard :func:`shard_of` of its id; a ``GroupByKey`` gathers each shard
    and :class:`WriteShardFn` writes it sorted by id, so the files do not depend on the
    order or the workers the pairs came from. Every shard is written, empty ones too.

    Args:
        prefix: ``<folder>/<split>``, as for ``WriteToTFRecord``.
        total: the shard count (:func:`shard_count`).
    """

    def __init__(self, prefix: str, total: int):
        super().__init__()
        self._prefix = prefix
        self._total = total

    def expand(self, pairs):
        keyed = pairs | "Key by shard" >> apache_beam.Map(_key_by_shard, num_shards=self._total)
        every = pairs.pipeline | "Shard indices" >> apache_beam.Create(
            [(i, None) for i in range(self._total)], reshuffle=False)
        return ((keyed, every)
                | "With every shard" >> apache_beam.Flatten()
                | "Group by shard" >> apache_beam.GroupByKey()
                | "Write sorted" >> apache_beam.ParDo(WriteShardFn(self._prefix, self._total)))


def build_pipeline(pipeline: apache_beam.Pipeline, elements: Sequence[Mapping[str, Any]],
                   cfg: DataConfig, staging_dir: str, splits: Iterable[str],
                   mode: str = "center", tf_threads: int = 1, features=None) -> None:
    """Adds the whole job to ``pipeline``, writing every file under ``staging_dir``.

    Args:
        pipeline: the Beam pipeline to extend.
        elements: the annotation records as dicts (:func:`record_to_element`).
        cfg: the data section (``num_shards`` shards per split, :func:`shard_count`).
        staging_dir: where shards (:data:`SHARD_TEMPLATE`) and the one dead-letter file
            (:data:`FAILED_GLOB`) are written.
        splits: the split names present in ``elements`` (one shard set each).
        mode: TSN sampling mode.
        tf_threads: TF intra-op threads per worker (0: TF's default).
        features: a :class:`beam.feature_plan.FeaturePlan`: the backbones run between decoding
            and the writers (:func:`beam.features.add_feature_stage`), whose dead letters join
            the others; ``None``: no features.
    """
    splits = sorted(set(splits))
    results = (
        pipeline
        | "Read records" >> apache_beam.Create(list(elements), reshuffle=False)
        | "Spread over workers" >> apache_beam.Reshuffle()
        | "Decode and render" >> apache_beam.ParDo(
            ProcessVideoDoFn(cfg, mode=mode, tf_threads=tf_threads,
                             count_success=features is None)).with_outputs(FAILED_TAG, *splits)
    )
    pairs, failed = {s: results[s] for s in splits}, results[FAILED_TAG]
    if features is not None:
        from beam.features import add_feature_stage

        pairs, more = add_feature_stage(pipeline, pairs, features)
        failed = (failed, more) | "All dead letters" >> apache_beam.Flatten()
    for split in splits:
        total = shard_count(cfg.num_shards, sum(e["split"] == split for e in elements))
        _ = pairs[split] | f"Write {split}" >> WriteShards(os.path.join(staging_dir, split),
                                                           total)
    _ = (failed
         | "Dead letters to JSON" >> apache_beam.Map(dead_letter_to_json)
         | "Write dead letters" >> apache_beam.io.WriteToText(
             os.path.join(staging_dir, FAILED_PREFIX), file_name_suffix=".jsonl",
             num_shards=1, shard_name_template=SHARD_TEMPLATE))

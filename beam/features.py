"""The Beam job's backbone stage (``--with_features``): RunInference writes the feature shards.

The paper's heads (Shaikh et al. 2024, Sec. 3.3-3.4) train on frozen BNInception features of the
K segment frames and audio-backbone features of each audio-image. ``maivar extract`` computes
them on one machine from finished TFRecords; with ``--with_features`` the TFRecord job computes
them itself, on its workers, through Beam's ``RunInference``::

    per split (example id, SequenceExample) -> DecodeForInferenceFn   (the one decoder)
        -> video images -> RunInference(video BackboneModelHandler)
        -> audio images -> RunInference(audio BackboneModelHandler)
        -> CoGroupByKey(example id) -> AssembleFeaturesFn -> dead letters | TFRecords | rows
        -> GroupByKey(split, shard) -> WriteFeatureShardFn   <features staging>/video-...

Every example is decoded by :meth:`maivar_tf.data.input_pipeline.ShardLayout.decoder` (the
centre crop, or whole frames cut into TSN's ten crops with ``extract.ten_crop``) and runs
through :class:`~maivar_tf.models.backbones.BackboneFeatures`, as in ``maivar extract``.
An example goes to the feature shard of the TFRecord shard it is written to
(:func:`beam.transforms.shard_of`), rows sorted by example id, encoded by
:func:`maivar_tf.features.codec.feature_example`: the files ``maivar extract`` writes from the
job's TFRecords. Examples whose inference raised (reason ``inference_failed``) or gave NaN/Inf
(``non_finite_features``) become dead letters and leave the TFRecords too, so both outputs hold
the same examples; the success counts are then taken after this stage.

:class:`BackboneModelHandler` is a small ``ModelHandler`` rather than Beam's
``TFModelHandlerNumpy``: Beam 2.77's ``tensorflow_inference`` imports ``tensorflow_hub`` at
module level (which pulls Keras 2 in as ``tf-keras``; this project is Keras 3), and its
``SAVED_WEIGHTS`` loader is ``create_model_fn()`` + ``load_weights(path)``, which
:meth:`beam.feature_plan.BackboneSource.build` is. Batching is RunInference's own (``BatchElements``, 1 to
``extract.batch_size`` videos per batch). A batch that raises is retried one video at a time,
so only the videos that fail themselves become dead letters (``with_exception_handling`` would
reject the whole batch).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import apache_beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, RunInference

from beam.feature_plan import BackboneSource, FeaturePlan
from beam.transforms import (
    AUDIO_MISSING_NAMESPACE,
    COUNTS_NAMESPACE,
    FAILED_TAG,
    LOGGER,
    METRICS_NAMESPACE,
    shard_of,
)
from maivar_tf.features.codec import feature_example, video_extras

#: Tags of :class:`DecodeForInferenceFn`'s outputs (the main output carries the metadata).
VIDEO_TAG, AUDIO_TAG = "video_images", "audio_images"
#: A backbone logs a progress line every this many videos per worker.
LOG_EVERY = 50
#: The feature shard rows of :class:`AssembleFeaturesFn` (its other outputs: splits, dead letters).
ROWS_TAG = "feature_rows"


class InferenceFailure(NamedTuple):
    """The result of a video whose inference raised (its message names the error)."""

    message: str


class BackboneModelHandler(ModelHandler):
    """A backbone for RunInference: ``(key, uint8 [..., S, S, 3])`` -> ``(key, float32 [..., D])``.

    Each element holds one video's images under any leading shape (``[K]`` frames, ``[10, K]``
    ten crops, ``[R + R*K]`` audio-images); a batch runs as one call of the backbone's
    :class:`~maivar_tf.models.backbones.BackboneFeatures` and its features come back in the
    element's leading shape. The model is :meth:`~beam.feature_plan.BackboneSource.build` wrapped in
    ``BackboneFeatures`` (the traced callable ``maivar extract`` and serving use).

    Args:
        source: the backbone.
        max_batch_size: the most elements (videos) per batch.
    """

    def __init__(self, source: BackboneSource, max_batch_size: int):
        super().__init__(min_batch_size=1, max_batch_size=int(max_batch_size))
        self._source = source

    def load_model(self):
        """The backbone's ``BackboneFeatures``, weights loaded from ``source.weights_path``."""
        from maivar_tf.models.backbones import BackboneFeatures

        size = self._source.image_size
        return BackboneFeatures(self._source.build(), (size, size, 3))

    def infer(self, model, keys: Sequence[str], arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The features of a batch, one array per element (``keys`` name the elements)."""
        from maivar_tf.models.backbones import MAX_IMAGES_PER_CALL

        side = model.image_shape
        flat = np.concatenate([np.asarray(a).reshape(-1, *side) for a in arrays])
        feats = model(flat, max_images=MAX_IMAGES_PER_CALL).numpy()
        counts = np.cumsum([int(np.prod(a.shape[:-3])) for a in arrays])[:-1]
        return [f.reshape(*a.shape[:-3], -1) for f, a in zip(np.split(feats, counts), arrays,
                                                                 strict=True)]

    def run_inference(self, batch: Sequence[tuple[str, np.ndarray]], model,
                      inference_args: dict[str, Any] | None = None
                      ) -> list[tuple[str, np.ndarray | InferenceFailure]]:
        """``(key, features)`` per element; a batch that raises is retried element by element,
        and an element that raises alone gets an :class:`InferenceFailure`. Logs a progress
        line every :data:`LOG_EVERY` videos per worker."""
        results = self._run_batch(batch, model)
        self._log_progress(len(batch))
        return results

    def _log_progress(self, n: int) -> None:
        if not hasattr(self, "_t0"):  # per worker: the handler is unpickled there
            self._t0, self._done, self._logged = time.monotonic(), 0, 0
        self._done += n
        if self._done - self._logged >= LOG_EVERY:
            self._logged = self._done
            elapsed = time.monotonic() - self._t0
            LOGGER.info("worker %s: %s backbone: %d videos (%.2f videos/s)", os.getpid(),
                        self._source.kind, self._done, self._done / max(elapsed, 1e-9))

    def _run_batch(self, batch: Sequence[tuple[str, np.ndarray]], model
                   ) -> list[tuple[str, np.ndarray | InferenceFailure]]:
        keys = [k for k, _ in batch]
        try:
            return list(zip(keys, self.infer(model, keys, [a for _, a in batch]), strict=True))
        except Exception as e:  # noqa: BLE001 - isolated below, one video at a time
            if len(batch) == 1:
                return [(keys[0], InferenceFailure(f"{type(e).__name__}: {e}"))]
        return [r for element in batch for r in self._run_batch([element], model)]

    def get_num_bytes(self, batch: Sequence[tuple[str, np.ndarray]]) -> int:
        """The bytes of a batch's images."""
        return int(sum(np.asarray(a).nbytes for _, a in batch))

    def get_metrics_namespace(self) -> str:
        """RunInference's metrics namespace."""
        return f"{METRICS_NAMESPACE}.inference.{self._source.kind}"


def _dead_letter(meta: Mapping[str, Any], reason: str, message: str) -> dict[str, Any]:
    """The job's dead letter (:func:`beam.transforms.dead_letter`'s keys) of a decoded video."""
    return {"input": meta["input"], "split": meta["split"], "label": meta["label_string"],
            "reason": reason, "message": f"{meta['input']}: {message}",
            "example_id": meta["example_id"]}


def _context(serialized: bytes) -> dict[str, str]:
    import tensorflow as tf

    from maivar_tf.data import schema

    ctx = tf.train.SequenceExample.FromString(serialized).context.feature
    return {k: ctx[key].bytes_list.value[0].decode() if key in ctx else ""
            for k, key in (("input", schema.DATA_PATH), ("label_string", schema.LABEL_STRING))}


class DecodeForInferenceFn(apache_beam.DoFn):
    """``(split, (example id, serialized))`` -> metadata, video images and audio images.

    Main output ``(id, meta)`` (split, label, the video extras, the serialized example);
    :data:`VIDEO_TAG` ``(id, uint8 [K, c, c, 3])`` (``[10, K, c, c, 3]`` with ten crops);
    :data:`AUDIO_TAG` ``(id, uint8 [R + R*K, S, S, 3])``: every representation's audio-image,
    then its K per-segment ones; a video that cannot be decoded: a dead letter.
    """

    def __init__(self, plan: FeaturePlan):
        super().__init__()
        self._plan = plan

    def setup(self) -> None:
        """Once per worker: the one decoder of the TFRecords, traced."""
        import tensorflow as tf

        from maivar_tf.data.input_pipeline import ShardLayout

        p = self._plan
        layout = ShardLayout(data_dir=p.staging, representations=p.representations,
                             num_segments=p.num_segments, frame_short_side=p.frame_short_side,
                             image_size=p.image_size, segment_audio=p.segment_audio)
        decode = layout.decoder(p.representations, p.num_segments, p.crop_size,
                                crop="none" if p.ten_crop else "center",
                                segment_representations=p.representations if p.segment_audio
                                else ())
        # One trace for every example: a string tensor, never the Python bytes.
        self._decode = tf.function(decode, input_signature=[tf.TensorSpec([], tf.string)])

    def _images(self, decoded) -> tuple[np.ndarray, np.ndarray]:
        from maivar_tf import ops

        p = self._plan
        frames = decoded["frames"]
        video = (ops.ten_crop(frames[None], p.crop_size)[:, 0] if p.ten_crop else frames)
        audio = [decoded["audio_images"][r][None] for r in p.representations]
        audio += [decoded["audio_segments"][r] for r in p.representations if p.segment_audio]
        return np.asarray(video), np.concatenate([np.asarray(a) for a in audio])

    def process(self, element) -> Iterator[Any]:
        """One example -> its three outputs, or a dead letter."""
        split, (example_id, serialized) = element
        meta = {"split": split, "example_id": example_id, "serialized": serialized,
                **_context(serialized)}
        try:
            decoded = self._decode(serialized)
            video, audio = self._images(decoded)
            meta["label"] = int(decoded["label"])
            meta["extras"] = video_extras(decoded["segment_labels"].numpy(),
                                          decoded["segment_times"].numpy(),
                                          bool(decoded["has_spans"]),
                                          bool(decoded["audio_missing"]))
        except Exception as e:  # noqa: BLE001 - every failure becomes a dead letter
            Metrics.counter(METRICS_NAMESPACE, "failed_feature_decode_failed").inc()
            yield apache_beam.pvalue.TaggedOutput(FAILED_TAG, _dead_letter(
                meta, "feature_decode_failed", f"{type(e).__name__}: {e}"))
            return
        yield (example_id, meta)
        yield apache_beam.pvalue.TaggedOutput(VIDEO_TAG, (example_id, video))
        yield apache_beam.pvalue.TaggedOutput(AUDIO_TAG, (example_id, audio))


class AssembleFeaturesFn(apache_beam.DoFn):
    """One video's metadata and backbone results -> feature rows, or a dead letter.

    Yields the serialized example on its split's tag (for the TFRecords), and
    ``((split, shard index), (id, {part: feature Example bytes}))`` on :data:`ROWS_TAG`;
    counts successes per (split, class) and clips with silent audio as
    :class:`beam.transforms.ProcessVideoDoFn` does without this stage.
    """

    def __init__(self, plan: FeaturePlan):
        super().__init__()
        self._plan = plan

    def _rows(self, meta, video, audio) -> dict[str, np.ndarray]:
        p = self._plan
        rows = {"video": video.mean(axis=0) if p.ten_crop else video}
        n = len(p.representations)
        for i, rep in enumerate(p.representations):
            rows[rep] = audio[i]
            if p.segment_audio:
                rows[f"{rep}/segments"] = audio[n + i * p.num_segments:
                                                n + (i + 1) * p.num_segments]
        return rows

    def _fail(self, meta, reason: str, message: str):
        Metrics.counter(METRICS_NAMESPACE, f"failed_{reason}").inc()
        return apache_beam.pvalue.TaggedOutput(FAILED_TAG, _dead_letter(meta, reason, message))

    def process(self, element) -> Iterator[Any]:
        """``(id, {"meta": [meta], "video": [features], "audio": [features]})`` -> outputs."""
        _, grouped = element
        meta, video, audio = (next(iter(grouped[k])) for k in ("meta", "video", "audio"))
        for kind, result in (("video", video), ("audio", audio)):
            if isinstance(result, InferenceFailure):
                yield self._fail(meta, "inference_failed",
                                 f"the {kind} backbone failed: {result.message}")
                return
        split, index = meta["split"], shard_of(meta["example_id"], self._plan.totals[meta["split"]])
        names = self._plan.shard_names(split, index)
        rows = self._rows(meta, np.asarray(video, np.float32), np.asarray(audio, np.float32))
        bad = [names[part] for part, row in rows.items() if not np.isfinite(row).all()]
        if bad:
            yield self._fail(meta, "non_finite_features",
                             f"non-finite features (NaN or Inf) in {', '.join(bad)}")
            return
        encoded = {part: feature_example(
            meta["example_id"], meta["label"], row, video=part == "video",
            segments=part.endswith("/segments"),
            extras=meta["extras"] if part == "video" else None) for part, row in rows.items()}
        Metrics.counter(COUNTS_NAMESPACE, f"{split}/{meta['label']}").inc()
        if int(meta["extras"]["audio/missing"][0]):
            Metrics.counter(AUDIO_MISSING_NAMESPACE, split).inc()
        yield apache_beam.pvalue.TaggedOutput(split, (meta["example_id"], meta["serialized"]))
        yield apache_beam.pvalue.TaggedOutput(ROWS_TAG, ((split, index),
                                                         (meta["example_id"], encoded)))


class WriteFeatureShardFn(apache_beam.DoFn):
    """Writes one TFRecord shard's feature shards, rows sorted by example id (empty ones too).

    Input ``((split, index), rows)`` after a ``GroupByKey``; ``None`` rows are placeholders.
    """

    def __init__(self, plan: FeaturePlan):
        super().__init__()
        self._plan = plan

    def process(self, element) -> Iterator[str]:
        """Writes the shard set into ``plan.staging``; yields the file names."""
        import tensorflow as tf

        (split, index), rows = element
        ordered = sorted(r for r in rows if r is not None)
        for part, name in self._plan.shard_names(split, index).items():
            with tf.io.TFRecordWriter(os.path.join(self._plan.staging, name)) as writer:
                for _, encoded in ordered:
                    writer.write(encoded[part])
            yield name


def add_feature_stage(pipeline, pairs: Mapping[str, Any], plan: FeaturePlan
                      ) -> tuple[dict[str, Any], Any]:
    """Adds the stage between the decoded examples and the TFRecord writers.

    Args:
        pipeline: the Beam pipeline.
        pairs: ``{split: PCollection of (example id, serialized SequenceExample)}``.
        plan: the stage's settings (:func:`beam.feature_plan.prepare_features`).

    Returns:
        ``({split: the pairs whose features were written}, PCollection of dead letters)``.
    """
    splits = sorted(pairs)
    tagged = [pairs[s] | f"Tag {s} for features" >> apache_beam.Map(lambda p, s=s: (s, p))
              for s in splits]
    decoded = (tagged | "All splits" >> apache_beam.Flatten()
               | "Decode for inference" >> apache_beam.ParDo(
                   DecodeForInferenceFn(plan)).with_outputs(VIDEO_TAG, AUDIO_TAG, FAILED_TAG,
                                                            main="meta"))
    video = decoded[VIDEO_TAG] | "Video backbone" >> RunInference(
        BackboneModelHandler(plan.video, plan.batch_size))
    audio = decoded[AUDIO_TAG] | "Audio backbone" >> RunInference(
        BackboneModelHandler(plan.audio, plan.batch_size))
    assembled = ({"meta": decoded.meta, "video": video, "audio": audio}
                 | "Join by example id" >> apache_beam.CoGroupByKey()
                 | "Assemble features" >> apache_beam.ParDo(
                     AssembleFeaturesFn(plan)).with_outputs(ROWS_TAG, FAILED_TAG, *splits))
    every = pipeline | "Feature shard indices" >> apache_beam.Create(
        [((s, i), None) for s in splits for i in range(plan.totals[s])], reshuffle=False)
    _ = ((assembled[ROWS_TAG], every) | "With every feature shard" >> apache_beam.Flatten()
         | "Group feature rows" >> apache_beam.GroupByKey()
         | "Write feature shards" >> apache_beam.ParDo(WriteFeatureShardFn(plan)))
    failed = ((decoded[FAILED_TAG], assembled[FAILED_TAG])
              | "Feature dead letters" >> apache_beam.Flatten())
    return {s: assembled[s] for s in splits}, failed

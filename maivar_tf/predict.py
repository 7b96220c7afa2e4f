"""``maivar predict VIDEO [VIDEO ...]``: raw video files -> top-k action classes.

A video goes through exactly what a training example went through, so the classifier sees the
same pixels it was trained on:

1. :func:`maivar_tf.data.clips.clip_example_from_record` — the Beam job's per-video function:
   :func:`maivar_tf.data.video.load_clip` decodes the K TSN segment frames and the waveform,
   frames become JPEG and the run's audio-image is rendered (the shared TF renderer) to PNG;
2. the record is serialised and read back through
   :func:`maivar_tf.data.input_pipeline.make_dataset` (evaluation mode: parse, JPEG decode with
   the centre crop, PNG decode);
3. the frozen backbones (with the weights the run's features were extracted with) and the fusion
   MLP — in memory from a trained run (``--run-dir``), or the ``serve_media`` signature of an
   exported SavedModel (``--saved-model``), which runs the same graph.

A file that cannot be decoded is reported on one line, ``maivar: <file>: <reason>: <message>``
(the reason is one of :data:`maivar_tf.data.errors.REASONS`), and the other files are still
classified. The exit status is 0 when every file was classified, 1 otherwise.

Example:
    $ maivar predict clip.mp4 other.avi --run-dir runs/synthetic
    $ maivar predict clip.mp4 --saved-model export/synthetic/1 --json
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maivar_tf.config import ExperimentConfig
from maivar_tf.data.errors import MediaError

#: The label a prediction record carries (the Beam function needs one; it is never used).
UNLABELLED = "<unlabelled>"
DEFAULT_CONFIG = "configs/synthetic.yaml"


@dataclass
class Prediction:
    """One classified file.

    Args:
        file: the path as given.
        classes: the top-k class names, best first.
        scores: their probabilities.
        probabilities: all class probabilities ``[C]``.
        timings_ms: milliseconds per stage (``prepare``, ``pipeline``, ``backbones``, ``head``
            or ``model`` for a SavedModel).
    """

    file: str
    classes: list[str]
    scores: list[float]
    probabilities: np.ndarray | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file,
                "top_k": [{"class": c, "probability": round(float(s), 6)}
                          for c, s in zip(self.classes, self.scores, strict=True)],
                "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()}}


@dataclass
class Failure:
    """One file that could not be classified (``reason`` from :data:`REASONS`)."""

    file: str
    reason: str
    message: str

    def line(self) -> str:
        """``maivar: <file>: <reason>: <message>`` on one line."""
        msg = " ".join(str(self.message).split())
        return f"maivar: {self.file}: {self.reason}: {msg}"

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file, "reason": self.reason, "message": self.message}


@dataclass
class PreparedClip:
    """A decoded clip as the model takes it."""

    file: str
    frames: np.ndarray  # uint8 [K, c, c, 3] (or [K, H, W, 3] uncropped with ten-crop)
    audio_image: np.ndarray  # uint8 [S, S, 3]
    timings_ms: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- preprocessing


def _no_bar(progress: bool, n: int) -> bool | None:
    """tqdm's ``disable``: off when not asked or for one file; ``None`` = only on a terminal."""
    return True if not progress or n < 2 else None


def _strip_path(message: str, path: str) -> str:
    for p in (path, str(Path(path).resolve())):
        if message.startswith(p + ": "):
            return message[len(p) + 2:]
    return message


def prepare_clips(paths: Sequence[str], cfg: ExperimentConfig, representation: str, *,
                  ten_crop: bool = False, progress: bool = False,
                  clip_fn: Callable | None = None) -> tuple[list[PreparedClip], list[Failure]]:
    """Decodes and renders each file exactly as the Beam job and the input pipeline do.

    Args:
        paths: video files.
        cfg: the experiment whose ``data`` section (K, frame size, JPEG quality, audio-image
            settings) the model was trained with.
        representation: the audio-image the model takes.
        ten_crop: keep the frames uncropped (the model takes TSN's ten crops itself).
        progress: a tqdm bar over the files.
        clip_fn: the per-video function (default
            :func:`maivar_tf.data.clips.clip_example_from_record`); benchmarks wrap it.

    Returns:
        ``(prepared clips in input order, failures)``.
    """
    from tqdm.auto import tqdm

    from maivar_tf.data import schema
    from maivar_tf.data.annotations import VideoRecord
    from maivar_tf.data.clips import clip_example_from_record

    clip_fn = clip_fn or clip_example_from_record
    data_cfg = dataclasses.replace(cfg.data, representations=(representation,),
                                   store_waveform=False, video_root="")
    failures: list[Failure] = []
    serialized: dict[str, bytes] = {}
    timings: dict[str, dict[str, float]] = {}
    for i, path in enumerate(tqdm(paths, desc="decode", unit="video",
                                  disable=_no_bar(progress, len(paths)))):
        eid = f"{i:06d}"  # unique even when a file is given twice
        record = VideoRecord(path=os.path.abspath(path), label_index=0, label_string=UNLABELLED,
                             split="test", example_id=eid)
        t0 = time.perf_counter()
        try:
            clip = clip_fn(record, data_cfg)
        except MediaError as e:
            failures.append(Failure(path, e.reason, _strip_path(e.message, record.path)))
            continue
        except Exception as e:  # one bad file must not stop the others
            failures.append(Failure(path, "decode_error", f"{type(e).__name__}: {e}"))
            continue
        serialized[eid] = schema.to_sequence_example(clip).SerializeToString()
        timings[eid] = {"prepare": 1000 * (time.perf_counter() - t0)}
    if not serialized:
        return [], failures

    prepared = {}
    for eid, frames, image, ms in _read_back(serialized, cfg, data_cfg, representation,
                                             ten_crop):
        timings[eid]["pipeline"] = ms
        prepared[eid] = PreparedClip(paths[int(eid)], frames, image, timings[eid])
    return [prepared[eid] for eid in sorted(prepared)], failures


class _EvalReader:
    """The evaluation input pipeline (:func:`make_dataset`) over one reusable temporary shard.

    The dataset is built (and its parse/decode functions traced) once per process and
    settings; each read rewrites the shard and iterates the same dataset again, so a
    prediction pays only for parsing and decoding its own records.
    """

    def __init__(self, cfg: ExperimentConfig, data_cfg, representation: str, ten_crop: bool):
        import tensorflow as tf

        from maivar_tf.config import to_dict
        from maivar_tf.data import schema
        from maivar_tf.data.input_pipeline import DATASET_INFO, make_dataset

        self._tf = tf
        self._tmp = tempfile.TemporaryDirectory(prefix="maivar-predict-")
        self.shard = os.path.join(self._tmp.name, "test-00000-of-00001.tfrecord")
        self.representation = representation
        self._write([])
        stored = cfg.to_dict()
        stored["data"] = to_dict(data_cfg)
        info = {"schema_version": schema.SCHEMA_VERSION, "config": stored, "class_names": [],
                "counts": {}}
        Path(self._tmp.name, DATASET_INFO).write_text(json.dumps(info))
        self.ten_crop = ten_crop
        # TSN's ten crops take the corners of the whole frame: with ten_crop the frames are
        # decoded whole (as feature extraction does) and the model crops them itself.
        self.dataset = make_dataset(self._tmp.name, "test", data_cfg, batch_size=1,
                                    representations=[representation], training=False,
                                    include_frames=not ten_crop)

    def _write(self, blobs: Sequence[bytes]) -> None:
        with self._tf.io.TFRecordWriter(self.shard) as w:
            for blob in blobs:
                w.write(blob)

    def _whole_frames(self, blob: bytes):
        """uint8 ``[K, H, W, 3]``: every stored JPEG decoded whole (the ten-crop input)."""
        from maivar_tf.data import schema

        tf = self._tf
        parsed = schema.parse_sequence_example(blob, ())
        return np.stack([tf.io.decode_jpeg(b, channels=3).numpy()
                         for b in parsed[schema.IMAGE_ENCODED].numpy()])

    def read(self, serialized: Mapping[str, bytes]):
        """Yields ``(example_id, frames, audio_image, ms)`` per record, in order."""
        t0 = time.perf_counter()
        self._write(list(serialized.values()))
        it = iter(self.dataset)
        overhead = 1000 * (time.perf_counter() - t0) / max(len(serialized), 1)
        while True:
            t0 = time.perf_counter()
            try:
                el = next(it)
            except StopIteration:
                break
            eid = el["example_id"][0].numpy().decode()
            frames = (self._whole_frames(serialized[eid]) if self.ten_crop
                      else el["frames"][0].numpy())
            image = el["audio_images"][self.representation][0].numpy()
            ms = overhead + 1000 * (time.perf_counter() - t0)
            yield eid, frames, image, ms


_READERS: dict[tuple, _EvalReader] = {}


def _read_back(serialized: Mapping[str, bytes], cfg: ExperimentConfig, data_cfg,
               representation: str, ten_crop: bool):
    """Reads the records back with the evaluation pipeline (one reader per settings)."""
    key = (data_cfg, representation, ten_crop)
    if key not in _READERS:
        _READERS[key] = _EvalReader(cfg, data_cfg, representation, ten_crop)
    yield from _READERS[key].read(serialized)


# ----------------------------------------------------------------------------- predictors


class RunPredictor:
    """A trained run in memory: backbones then head, timed separately.

    Args:
        model: the run's :class:`~maivar_tf.export.ServingModel`.
    """

    def __init__(self, model):
        self.model = model
        self.cfg = model.cfg
        self.class_names = tuple(model.class_names)
        self.representation = model.representation
        self.num_segments = model.num_segments
        self.ten_crop = model.ten_crop
        self._fns = model.tf_functions()
        self.source = {"run_dir": model.provenance.get("run_dir")}

    def __call__(self, frames: np.ndarray, audio_image: np.ndarray
                 ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        from maivar_tf.export import SIGNATURE_FEATURES, SIGNATURE_MEDIA, as_numpy_outputs

        check_inputs({"frames": frames, "audio_image": audio_image},
                     _spec_dict(self.model.input_signatures()[SIGNATURE_MEDIA]),
                     SIGNATURE_MEDIA)
        t0 = time.perf_counter()
        v, a = self._fns["media_features"](frames, audio_image)
        v, a = v.numpy(), a.numpy()
        t1 = time.perf_counter()
        out = as_numpy_outputs(self._fns[SIGNATURE_FEATURES](v, a))
        t2 = time.perf_counter()
        return out, {"backbones": 1000 * (t1 - t0), "head": 1000 * (t2 - t1)}


class SavedModelPredictor:
    """An exported SavedModel's ``serve_media`` signature.

    Args:
        path: the version folder (or the model folder: its highest version).
    """

    def __init__(self, path: str | Path):
        import tensorflow as tf

        from maivar_tf.export import (
            SIGNATURE_MEDIA,
            export_config,
            read_export_info,
            resolve_saved_model_dir,
        )

        self.path = resolve_saved_model_dir(path)
        info = read_export_info(self.path)
        self.cfg = export_config(self.path)
        self.class_names = tuple(info["class_names"])
        self.representation = info["representation"]
        self.num_segments = int(info["num_segments"])
        self.ten_crop = bool(info.get("ten_crop", False))
        loaded = tf.saved_model.load(str(self.path))
        if SIGNATURE_MEDIA not in loaded.signatures:
            raise RuntimeError(f"{self.path} has no {SIGNATURE_MEDIA!r} signature; it has "
                               f"{', '.join(loaded.signatures)}")
        self._loaded = loaded
        self._fn = loaded.signatures[SIGNATURE_MEDIA]
        self._specs = dict(self._fn.structured_input_signature[1])
        self.source = {"saved_model": str(self.path)}

    def __call__(self, frames: np.ndarray, audio_image: np.ndarray
                 ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        import tensorflow as tf

        from maivar_tf.export import SIGNATURE_MEDIA, as_numpy_outputs

        inputs = {"frames": frames, "audio_image": audio_image}
        check_inputs(inputs, self._specs, SIGNATURE_MEDIA)
        t0 = time.perf_counter()
        out = as_numpy_outputs(self._fn(**{k: tf.constant(v) for k, v in inputs.items()}))
        return out, {"model": 1000 * (time.perf_counter() - t0)}


def _spec_dict(specs) -> dict[str, Any]:
    return {s.name: s for s in specs}


def check_inputs(inputs: Mapping[str, np.ndarray], specs: Mapping[str, Any],
                 signature: str) -> None:
    """Python-side check of a request against a signature's ``tf.TensorSpec`` s.

    Args:
        inputs: input name -> array (with the batch axis).
        specs: input name -> ``tf.TensorSpec`` (``concrete_fn.structured_input_signature[1]``).
        signature: the signature's name, for messages.

    Raises:
        ValueError: a missing or unknown input, a wrong dtype, rank or dimension, or inputs
            with different batch sizes; the message names the input, what it got and what the
            signature allows.
    """
    missing = sorted(set(specs) - set(inputs))
    unknown = sorted(set(inputs) - set(specs))
    if missing or unknown:
        raise ValueError(f"{signature}: inputs {sorted(inputs)} do not match the signature's "
                         f"{sorted(specs)} (missing {missing}, unknown {unknown})")
    batch = {}
    for name, spec in specs.items():
        a = np.asarray(inputs[name])
        want = [d for d in spec.shape]
        want_str = "[" + ", ".join("?" if d is None else str(d) for d in want) + "]"
        if a.dtype != spec.dtype.as_numpy_dtype:
            raise ValueError(f"{signature}: input {name!r} must be {spec.dtype.name} "
                             f"{want_str}; got {a.dtype}")
        if a.ndim != len(want) or any(w is not None and w != g for w, g in zip(want, a.shape,
                                                                              strict=False)):
            raise ValueError(f"{signature}: input {name!r} must have shape {want_str}; got "
                             f"{list(a.shape)}")
        batch[name] = a.shape[0] if a.ndim else None
    if len(set(batch.values())) > 1:
        raise ValueError(f"{signature}: inputs have different batch sizes {batch}")


# ----------------------------------------------------------------------------- prediction


def top_k(probabilities: np.ndarray, class_names: Sequence[str], k: int
          ) -> tuple[list[str], list[float]]:
    """The ``k`` best classes of one probability vector (ties: lower index first)."""
    order = np.argsort(-np.asarray(probabilities), kind="stable")[:k]
    return [class_names[i] for i in order], [float(probabilities[i]) for i in order]


def predict_files(paths: Sequence[str], predictor, *, k: int = 5, progress: bool = False,
                  clip_fn: Callable | None = None) -> tuple[list[Prediction], list[Failure]]:
    """Classifies each file; files that cannot be decoded become :class:`Failure` s.

    Args:
        paths: video files.
        predictor: a :class:`RunPredictor` or :class:`SavedModelPredictor`.
        k: how many classes to name per file (at most the number of classes).
        progress: tqdm bars.
        clip_fn: see :func:`prepare_clips`.

    Returns:
        ``(predictions in input order, failures)``.
    """
    from tqdm.auto import tqdm

    paths = [str(p) for p in paths]
    k = max(1, min(int(k), len(predictor.class_names)))
    prepared, failures = prepare_clips(paths, predictor.cfg, predictor.representation,
                                       ten_crop=predictor.ten_crop, progress=progress,
                                       clip_fn=clip_fn)
    predictions = []
    for clip in tqdm(prepared, desc="classify", unit="video",
                     disable=_no_bar(progress, len(prepared))):
        try:
            out, ms = predictor(clip.frames[None], clip.audio_image[None])
        except ValueError as e:
            failures.append(Failure(clip.file, "decode_error", str(e)))
            continue
        probs = out["probabilities"][0]
        classes, scores = top_k(probs, predictor.class_names, k)
        predictions.append(Prediction(clip.file, classes, scores, probs,
                                      {**clip.timings_ms, **ms}))
    return predictions, failures


def load_predictor(args, cfg: ExperimentConfig | None = None):
    """A :class:`SavedModelPredictor` (``--saved-model``) or a :class:`RunPredictor`."""
    if getattr(args, "saved_model", None):
        return SavedModelPredictor(args.saved_model)
    from maivar_tf.export import load_serving_model

    cfg = cfg or _load_config(args)
    run_dir = Path(getattr(args, "run_dir", None) or cfg.train.output_dir)
    return RunPredictor(load_serving_model(cfg, run_dir))


def _load_config(args) -> ExperimentConfig:
    from maivar_tf.config import load_config

    path = getattr(args, "config", None)
    if path is None and Path(DEFAULT_CONFIG).exists():
        path = DEFAULT_CONFIG
    return load_config(path, overrides=getattr(args, "set", None) or ())


def format_text(predictions: Sequence[Prediction]) -> str:
    """Human-readable top-k lists, one block per file."""
    lines = []
    for p in predictions:
        lines.append(p.file)
        width = max(len(c) for c in p.classes)
        for rank, (c, s) in enumerate(zip(p.classes, p.scores, strict=True), 1):
            lines.append(f"  {rank}. {c:<{width}}  {100 * s:6.2f}%")
    return "\n".join(lines)


def main(args) -> int:
    """``maivar predict``: prints top-k classes per file; 0 if all were classified, else 1.

    Args:
        args: ``videos``, ``run_dir`` or ``saved_model``, ``top_k``, ``json``, ``config``,
            ``set`` (as parsed by :mod:`maivar_tf.cli`).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from maivar_tf.export import ExportError
    from maivar_tf.models.weights import WeightsError

    if args.top_k < 1:
        print(f"maivar: --top-k {args.top_k}: allowed: an integer >= 1", file=sys.stderr)
        return 2
    try:
        predictor = load_predictor(args)
    except (ExportError, WeightsError, RuntimeError) as e:
        print(f"maivar: cannot load the model: {e}", file=sys.stderr)
        return 1
    as_json = bool(getattr(args, "json", False))
    predictions, failures = predict_files(args.videos, predictor, k=args.top_k,
                                          progress=not as_json)
    for f in failures:
        print(f.line(), file=sys.stderr)
    if as_json:
        doc = {"model": {**predictor.source, "representation": predictor.representation,
                         "num_segments": predictor.num_segments,
                         "num_classes": len(predictor.class_names)},
               "predictions": [p.to_dict() for p in predictions],
               "errors": [f.to_dict() for f in failures]}
        print(json.dumps(doc, indent=2))
    elif predictions:
        print(format_text(predictions))
    return 1 if failures else 0

"""``maivar predict VIDEO [VIDEO ...]``: raw video files -> top-k action classes.

A video goes through exactly what a training example went through, so MAiVAR's fusion head
sees the features it was trained on:

1. :func:`maivar_tf.data.clips.clip_example_from_record`, the Beam job's per-video function:
   the K TSN segment frames become JPEG and the run's audio-image is rendered to PNG;
2. the record is serialised and decoded in memory by :func:`maivar_tf.data.decode.decode_example`
   (the decoder of the input pipeline and of extraction: centre crop, or whole frames when the
   run's features average TSN's ten crops), traced once per predictor
   (:class:`~maivar_tf.serving.predictors.ClipDecoder`);
3. the backbones and the fusion MLP: in memory from a trained run (``--run-dir``, a
   :class:`~maivar_tf.serving.module.ServingModule` of :func:`maivar_tf.runs.load_servable_run`)
   or the ``serve_media`` signature of an exported SavedModel (``--saved-model``), which runs
   the same graph.

A file without an audio track is a ``no_audio`` failure under the run's
``data.on_missing_audio: reject``; under ``silence`` it is classified with the silent audio
and its prediction says so (``(no audio track: classified with silent audio)``, JSON
``"audio_missing": true``). ``--segments`` (a temporal-binding run with a localiser) adds the
time spans where the action is present (:func:`maivar_tf.serving.segments.event_spans`).
A run or export that selects segments (``model.selection``, ``model.budget``; for a run
``--set model.selection=audio_topk --set model.budget=4`` overrides the run's) runs the
backbones on the selected segments only and says which (``  selected segments: 1.20 s, ...``;
JSON ``selected_segments``, their indices, and ``selected_times_s``).

A file that cannot be decoded is reported on one line, ``maivar: <file>: <reason>: <message>``
(the reason is one of :data:`maivar_tf.data.errors.REASONS`), and the other files are still
classified. :func:`predict_command` returns 0 when every file was classified, 1 otherwise, 2
for a bad ``top_k`` or ``--segments`` without a localiser.

Example:
    $ maivar predict clip.mp4 other.avi --run-dir runs/synthetic
    $ maivar predict clip.mp4 --saved-model export/synthetic/1 --json
    $ maivar predict clip.mp4 --run-dir runs/untrimmed --segments
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maivar_tf.console import progress as progress_bar
from maivar_tf.data.errors import MediaError
from maivar_tf.serving.reports import (  # noqa: F401  (re-exported: predict's public names)
    SELECTION_KEYS,
    clip_duration,
    segment_report,
    selected_report,
    selection_overrides,
)

#: The label a prediction record carries (the Beam function needs one; it is never used).
UNLABELLED = "<unlabelled>"


@dataclass(frozen=True)
class Prediction:
    """One classified file.

    Args:
        file: the path as given.
        classes: the top-k class names, best first.
        scores: their probabilities.
        probabilities: all class probabilities ``[C]``.
        timings_ms: milliseconds per stage (``prepare``, ``pipeline``, then ``backbones`` and
            ``head`` for a run, or ``model`` for a SavedModel).
        audio_missing: the file has no audio track; it was classified with the silent audio
            (``data.on_missing_audio: silence``).
        segments: with ``--segments``: ``{"spans": [{"start_s", "end_s", "class",
            "event_probability"}], "segment_times_s": [K], "segment_event": [K]}``
            (:func:`maivar_tf.serving.segments.event_spans`).
        selected: the segments the backbones ran on (a model that selects segments), their
            indices in time order; None: all K.
        selected_times_s: their times in seconds (None when the record does not say).
    """

    file: str
    classes: list[str]
    scores: list[float]
    probabilities: np.ndarray | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    audio_missing: bool = False
    segments: Mapping[str, Any] | None = None
    selected: list[int] | None = None
    selected_times_s: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON record ``maivar predict --json`` prints."""
        out = {"file": self.file,
               "top_k": [{"class": c, "probability": round(float(s), 6)}
                         for c, s in zip(self.classes, self.scores, strict=True)],
               "audio_missing": bool(self.audio_missing),
               "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()}}
        if self.segments is not None:
            out["segments"] = list(self.segments["spans"])
            out["segment_times_s"] = [round(float(t), 6) for t in self.segments["segment_times_s"]]
            out["segment_event"] = [round(float(e), 6) for e in self.segments["segment_event"]]
        if self.selected is not None:
            out["selected_segments"] = [int(i) for i in self.selected]
            out["selected_times_s"] = (None if self.selected_times_s is None else
                                       [round(float(t), 6) for t in self.selected_times_s])
        return out


@dataclass(frozen=True)
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
        """The JSON record ``maivar predict --json`` prints."""
        return {"file": self.file, "reason": self.reason, "message": self.message}


@dataclass(frozen=True)
class PreparedClip:
    """A decoded clip as the model takes it.

    Args:
        file: the path as given.
        frames: uint8 ``[K, c, c, 3]`` (whole frames ``[K, H, W, 3]`` with ten crop).
        audio_image: uint8 ``[S, S, 3]``; for a temporal-binding model the K per-segment
            audio-images ``[K, S, S, 3]``.
        timings_ms: ``prepare`` (decode + render) and ``pipeline`` (decode of the record).
        segment_times: float32 ``[K]`` the segments' times in seconds (None when the record
            does not say).
        audio_missing: the record's ``audio/missing`` (None when the decoder does not say).
    """

    file: str
    frames: np.ndarray
    audio_image: np.ndarray
    timings_ms: dict[str, float] = field(default_factory=dict)
    segment_times: np.ndarray | None = None
    audio_missing: bool | None = None


# ----------------------------------------------------------------------------- preprocessing


def message_without_path(message: str, path: str) -> str:
    """``message`` without a leading ``<path>: `` (the failure line names the file already)."""
    for p in (path, str(Path(path).resolve())):
        if message.startswith(p + ": "):
            return message[len(p) + 2:]
    return message


def serialize_clips(paths: Sequence[str], data_cfg, *, progress: bool = False,
                    clip_fn: Callable | None = None
                    ) -> tuple[dict[str, bytes], dict[str, float], list[Failure]]:
    """Each file through the Beam job's per-video function, as a serialised record.

    Args:
        paths: video files.
        data_cfg: the data section to decode and render with.
        progress: report progress over the files.
        clip_fn: the per-video function (default
            :func:`maivar_tf.data.clips.clip_example_from_record`); benchmarks wrap it.

    Returns:
        ``(records by example id, prepare ms by example id, failures)``; the example id of
        ``paths[i]`` is ``f"{i:06d}"`` (unique even when a file is given twice).
    """
    from maivar_tf.data import schema
    from maivar_tf.data.annotations import VideoRecord
    from maivar_tf.data.clips import clip_example_from_record

    clip_fn = clip_fn or clip_example_from_record
    failures: list[Failure] = []
    serialized: dict[str, bytes] = {}
    prepare_ms: dict[str, float] = {}
    bar = progress_bar(paths, total=len(paths), desc="decode", unit="video",
                       enabled=progress and len(paths) > 1)
    for i, path in enumerate(bar):
        eid = f"{i:06d}"
        record = VideoRecord(path=os.path.abspath(path), label_index=0,
                             label_string=UNLABELLED, split="test", example_id=eid)
        t0 = time.perf_counter()
        try:
            clip = clip_fn(record, data_cfg)
        except MediaError as e:
            failures.append(Failure(path, e.reason, message_without_path(e.message,
                                                                         record.path)))
            continue
        except Exception as e:  # one bad file must not stop the others
            failures.append(Failure(path, "decode_error", f"{type(e).__name__}: {e}"))
            continue
        serialized[eid] = schema.to_sequence_example(clip).SerializeToString()
        prepare_ms[eid] = 1000 * (time.perf_counter() - t0)
    return serialized, prepare_ms, failures


def prepare_clips(paths: Sequence[str], cfg, representation: str, *, ten_crop: bool = False,
                  progress: bool = False, clip_fn: Callable | None = None,
                  decoder=None, segment_audio: bool = False
                  ) -> tuple[list[PreparedClip], list[Failure]]:
    """Decodes and renders each file exactly as the Beam job and the input pipeline do.

    Args:
        paths: video files.
        cfg: the experiment whose ``data`` section (K, frame size, JPEG quality, audio-image
            settings) the model was trained with.
        representation: the audio-image the model takes.
        ten_crop: keep the frames whole (the model takes TSN's ten crops itself).
        progress: report progress over the files.
        clip_fn: see :func:`serialize_clips`.
        decoder: the :class:`~maivar_tf.serving.predictors.ClipDecoder` of these settings
            (default: a new one).
        segment_audio: the model takes the K per-segment audio-images (temporal binding).

    Returns:
        ``(prepared clips in input order, failures)``.
    """
    paths = [str(p) for p in paths]
    data_cfg = dataclasses.replace(cfg.data, representations=(representation,),
                                   store_waveform=False, video_root="",
                                   segment_audio=bool(segment_audio))
    serialized, prepare_ms, failures = serialize_clips(paths, data_cfg, progress=progress,
                                                       clip_fn=clip_fn)
    if decoder is None:
        from maivar_tf.serving.predictors import ClipDecoder

        decoder = ClipDecoder(data_cfg, representation, ten_crop, segment_audio=segment_audio)
    prepared = []
    for eid, record in serialized.items():
        t0 = time.perf_counter()
        out = decoder(record)
        prepared.append(PreparedClip(
            paths[int(eid)], out["frames"], out["audio"],
            {"prepare": prepare_ms[eid], "pipeline": 1000 * (time.perf_counter() - t0)},
            segment_times=out.get("segment_times"), audio_missing=out.get("audio_missing")))
    return prepared, failures


def load_predictor(*, run_dir: str | Path | None = None, saved_model: str | Path | None = None,
                   cfg=None, selection: Mapping[str, Any] | None = None):
    """A :class:`~maivar_tf.serving.predictors.SavedModelPredictor` or ``RunPredictor``.

    Args:
        run_dir: the trained run (default ``cfg.train.output_dir``).
        saved_model: an export's version (or model) folder; wins over ``run_dir``.
        cfg: the experiment for a run (default: the default config, see
            :func:`maivar_tf.config.resolve_config_path`); the run's own config wins for the
            preprocessing. Not used for a SavedModel, which records its own.
        selection: ``{"selection": ..., "budget": ...}`` (either key) instead of the run's
            ``model.selection`` / ``model.budget``; not used for a SavedModel.
    """
    from maivar_tf.serving.predictors import RunPredictor, SavedModelPredictor

    if saved_model:
        return SavedModelPredictor(saved_model)
    from maivar_tf.config import load_config, resolve_config_path
    from maivar_tf.runs import load_servable_run

    cfg = cfg if cfg is not None else load_config(resolve_config_path(None))
    return RunPredictor(load_servable_run(cfg, Path(run_dir or cfg.train.output_dir),
                                          **dict(selection or {})))


# ----------------------------------------------------------------------------- prediction


def top_k(probabilities: np.ndarray, class_names: Sequence[str], k: int
          ) -> tuple[list[str], list[float]]:
    """The ``k`` best classes of one probability vector (ties: lower index first)."""
    order = np.argsort(-np.asarray(probabilities), kind="stable")[:k]
    return [class_names[i] for i in order], [float(probabilities[i]) for i in order]


def predict_files(paths: Sequence[str], predictor, *, k: int = 5, progress: bool = False,
                  clip_fn: Callable | None = None, segments: bool = False
                  ) -> tuple[list[Prediction], list[Failure]]:
    """Classifies each file; files that cannot be decoded become :class:`Failure` s.

    Args:
        paths: video files.
        predictor: a :mod:`maivar_tf.serving.predictors` predictor (its ``decoder`` decodes
            the records).
        k: how many classes to name per file (at most the number of classes).
        progress: report progress.
        clip_fn: see :func:`serialize_clips`.
        segments: also find the action's time spans (a predictor with a localiser).

    Returns:
        ``(predictions in input order, failures)``.
    """
    paths = [str(p) for p in paths]
    k = max(1, min(int(k), len(predictor.class_names)))
    prepared, failures = prepare_clips(paths, predictor.cfg, predictor.representation,
                                       ten_crop=predictor.ten_crop, progress=progress,
                                       clip_fn=clip_fn, decoder=predictor.decoder,
                                       segment_audio=getattr(predictor, "temporal", False))
    predictions = []
    for clip in progress_bar(prepared, total=len(prepared), desc="classify", unit="video",
                             enabled=progress and len(prepared) > 1):
        try:
            out, ms = predictor(clip.frames[None], clip.audio_image[None])
            report = segment_report(out, clip, predictor.class_names) if segments else None
        except ValueError as e:
            failures.append(Failure(clip.file, "decode_error", str(e)))
            continue
        probs = out["probabilities"][0]
        classes, scores = top_k(probs, predictor.class_names, k)
        missing = (clip.audio_missing if clip.audio_missing is not None
                   else bool(np.asarray(out.get("audio_missing", [False]))[0]))
        selected, times = selected_report(out, clip)
        predictions.append(Prediction(clip.file, classes, scores, probs,
                                      {**clip.timings_ms, **ms}, audio_missing=bool(missing),
                                      segments=report, selected=selected,
                                      selected_times_s=times))
    return predictions, failures


#: The line under a prediction of a file without an audio track.
NO_AUDIO_LINE = "  (no audio track: classified with silent audio)"


def format_text(predictions: Sequence[Prediction]) -> str:
    """Human-readable top-k lists, one block per file (then, with ``--segments``, the spans)."""
    lines = []
    for p in predictions:
        lines.append(p.file)
        width = max(len(c) for c in p.classes)
        for rank, (c, s) in enumerate(zip(p.classes, p.scores, strict=True), 1):
            lines.append(f"  {rank}. {c:<{width}}  {100 * s:6.2f}%")
        if p.audio_missing:
            lines.append(NO_AUDIO_LINE)
        if p.selected is not None:
            where = ([f"{t:.2f} s" for t in p.selected_times_s] if p.selected_times_s
                     is not None else [f"#{i}" for i in p.selected])
            lines.append("  selected segments: " + ", ".join(where))
        if p.segments is not None:
            spans = p.segments["spans"]
            lines.append("  action spans:" + ("" if spans else " none found"))
            for span in spans:
                lines.append(f"    {span['start_s']:7.2f} s - {span['end_s']:7.2f} s  "
                             f"{span['class']}  (event {100 * span['event_probability']:.1f}%)")
    return "\n".join(lines)


def format_json(predictions: Sequence[Prediction], failures: Sequence[Failure],
                predictor) -> str:
    """The ``--json`` document: the model, the predictions and the errors."""
    doc: Mapping[str, Any] = {
        "model": {**predictor.source, "representation": predictor.representation,
                  "num_segments": predictor.num_segments,
                  "num_classes": len(predictor.class_names),
                  **selection_of(predictor)},
        "predictions": [p.to_dict() for p in predictions],
        "errors": [f.to_dict() for f in failures]}
    return json.dumps(doc, indent=2)


def selection_of(predictor) -> dict[str, Any]:
    """``{"selection", "budget"}`` of a predictor that selects segments, else ``{}`` (the
    JSON of a model without selection is unchanged)."""
    sel = dict(getattr(predictor, "selection", None) or {})
    return sel if sel.get("budget") else {}


def predict_command(videos: Sequence[str], *, cfg_path: str | None = None,
                    overrides: Sequence[str] = (), run_dir: str | None = None,
                    saved_model: str | None = None, top_k: int = 5,
                    as_json: bool = False, segments: bool = False) -> int:
    """``maivar predict``: prints the top-k classes per file.

    Args:
        videos: the files to classify.
        cfg_path: the experiment config for a run (default: see
            :func:`maivar_tf.config.resolve_config_path`); not read for a SavedModel.
        overrides: ``--set`` items for that config (``model.selection`` and ``model.budget``
            among them override the run's segment selection).
        run_dir: the trained run (default ``train.output_dir``).
        saved_model: an exported SavedModel folder (instead of a run).
        top_k: classes per file (>= 1).
        as_json: print one JSON document instead of text (and no progress).
        segments: also print the time spans where the action is present (a model with a
            localiser: ``model.fusion=temporal_binding`` and ``model.localisation``).

    Returns:
        0 when every file was classified, 1 when a file failed or the model cannot be
        loaded, 2 for ``top_k < 1`` or ``segments`` with a model that has no localiser. Failures go to stderr, one
        ``maivar: <file>: <reason>: <message>`` line each.

    Raises:
        ConfigError: the config is invalid.
        FileNotFoundError: the run, its features or the SavedModel do not exist.
    """
    from maivar_tf.artifacts import ArtifactError
    from maivar_tf.models.weights import WeightsError

    if top_k < 1:
        print(f"maivar: --top-k {top_k}: allowed: an integer >= 1", file=sys.stderr)
        return 2
    try:
        cfg, selection = None, {}
        if not saved_model:
            from maivar_tf.config import load_config, resolve_config_path

            cfg = load_config(resolve_config_path(cfg_path), overrides=overrides)
            selection = selection_overrides(cfg, overrides)
        predictor = load_predictor(run_dir=run_dir, saved_model=saved_model, cfg=cfg,
                                   selection=selection)
    except (ArtifactError, WeightsError, RuntimeError) as e:
        print(f"maivar: cannot load the model: {e}", file=sys.stderr)
        return 1
    if segments and not predictor.has_localiser:
        where = predictor.source.get("saved_model") or predictor.source.get("run_dir")
        print(f"maivar: --segments: {where} has no localiser (no segment_scores output); "
              "train with model.fusion=temporal_binding and model.localisation=true",
              file=sys.stderr)
        return 2
    predictions, failures = predict_files(videos, predictor, k=top_k, progress=not as_json,
                                          segments=segments)
    for f in failures:
        print(f.line(), file=sys.stderr)
    if as_json:
        print(format_json(predictions, failures, predictor))
    elif predictions:
        print(format_text(predictions))
    return 1 if failures else 0

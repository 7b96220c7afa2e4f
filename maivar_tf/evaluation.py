"""Metrics and report artefacts of trained heads (``maivar evaluate``); nothing here trains.

Pure metric functions (:func:`top_k_accuracy`, :func:`confusion_matrix`,
:func:`per_class_accuracy`, :func:`mean_class_accuracy`) are kept apart from plotting so they can
be checked against hand-computed values. :func:`evaluate_models` runs trained heads over a
:class:`~maivar_tf.features.FeatureSet` and writes ``report.json``, one confusion-matrix PNG per
model and a three-panel t-SNE of the video, audio and fused embeddings (Shaikh et al. 2024,
Fig. 8), plus, for a head with a temperature, ECE before and after it and a reliability
diagram (:mod:`maivar_tf.calibration`). :func:`evaluate_arrays` is the exact accuracy and cross-entropy that training records
per stage. Experiments that train and then evaluate (the paper's Table 3 sweep) live in
:mod:`maivar_tf.experiments`.

Tie rule: a prediction is the class with the highest logit, ties going to the lowest class index
(``numpy.argmax``); top-k takes the first k classes of that same order, so top-1 always equals the
confusion matrix's trace divided by N. A constant model therefore scores the frequency of class 0,
never 100%.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from maivar_tf.calibration import calibration_report
from maivar_tf.evaluation_plots import (  # noqa: F401  (re-exported)
    plot_confusion_matrix,
    plot_tsne,
    stratified_subset,
    tsne_embed,
)
from maivar_tf.localisation import (
    SILENT,
    load_split,
    localisation_metrics,
    needs_segments,
    segment_audio,
    silent_features,
)
from maivar_tf.models.heads import AUDIO_INPUT, AUDIO_SEGMENTS_INPUT, VIDEO_INPUT
from maivar_tf.utils import write_json_atomic

logger = logging.getLogger(__name__)

#: The penultimate layers whose activations the t-SNE plot embeds.
HIDDEN_LAYER = "hidden"
FUSION_HIDDEN_LAYER = "fusion_hidden"
#: The report :func:`evaluate_models` writes into its output folder.
REPORT_JSON = "report.json"
#: Where :func:`evaluate_run` writes a run's report (inside the run folder).
EVAL_SUBDIR = "eval"
#: Where :func:`evaluate_run` writes the report of the run on clips without sound.
SILENT_EVAL_SUBDIR = "eval-silent"
#: The report's model names, in print order: the VMLP, the audio MLP and the fusion MLP.
STREAMS: tuple[str, ...] = ("video", "audio", "fusion")


# ----------------------------------------------------------------------------- pure metrics


def _check_scores(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[0] != labels.shape[0]:
        raise ValueError(f"scores must be [N, num_classes] with N = len(labels) = "
                         f"{labels.shape[0]}; got shape {scores.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"labels must lie in [0, {scores.shape[1]}); got "
                         f"[{labels.min()}, {labels.max()}]")
    return labels, scores


def ranked_classes(scores: np.ndarray) -> np.ndarray:
    """Classes by decreasing score, ties in increasing class index: ``[N, C]`` int64."""
    # A stable sort of -scores keeps equal scores in index order.
    return np.argsort(-np.asarray(scores, np.float64), axis=1, kind="stable")


def predictions(scores: np.ndarray) -> np.ndarray:
    """The top-1 class per row (``argmax``; ties go to the lowest index)."""
    return np.argmax(np.asarray(scores), axis=1).astype(np.int64)


def top_k_accuracy(labels: np.ndarray, scores: np.ndarray, k: int = 1) -> float:
    """Fraction of rows whose true class is among the k highest scores.

    Args:
        labels: int ``[N]`` true classes.
        scores: ``[N, C]`` logits or probabilities.
        k: how many top classes count; clipped to C.

    Returns:
        Accuracy in [0, 1] (0.0 for N = 0). Ties rank the lower class index first.
    """
    labels, scores = _check_scores(labels, scores)
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    if labels.size == 0:
        return 0.0
    top = ranked_classes(scores)[:, :min(k, scores.shape[1])]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``cm[true, predicted]`` as int64 ``[C, C]``."""
    labels = np.asarray(labels, np.int64).reshape(-1)
    preds = np.asarray(preds, np.int64).reshape(-1)
    if labels.shape != preds.shape:
        raise ValueError(f"labels and predictions differ in length: {labels.shape[0]} vs "
                         f"{preds.shape[0]}")
    for name, v in (("labels", labels), ("predictions", preds)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes}); got "
                             f"[{v.min()}, {v.max()}]")
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall of each class from a confusion matrix; NaN for classes with no examples."""
    cm = np.asarray(cm, np.float64)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.where(support > 0, support, 1), np.nan)


def mean_class_accuracy(cm: np.ndarray) -> float:
    """Mean of the per-class accuracies over classes that have examples (balanced accuracy)."""
    acc = per_class_accuracy(cm)
    present = ~np.isnan(acc)
    return float(acc[present].mean()) if present.any() else 0.0


def classification_metrics(labels: np.ndarray, scores: np.ndarray,
                           class_names: Sequence[str]) -> dict[str, Any]:
    """Top-1, top-5, mean class accuracy, per-class accuracy and the confusion matrix.

    Args:
        labels: int ``[N]`` true classes.
        scores: ``[N, C]`` logits.
        class_names: the C class names.

    Returns:
        A JSON-serialisable dict: ``top1``, ``top5``, ``mean_class_accuracy``,
        ``per_class_accuracy`` (name -> accuracy or None when the class has no examples),
        ``confusion_matrix`` (lists, rows = true class), ``num_examples``.
    """
    labels, scores = _check_scores(labels, scores)
    c = len(class_names)
    if scores.shape[1] != c:
        raise ValueError(f"scores have {scores.shape[1]} classes but {c} class names are given")
    cm = confusion_matrix(labels, predictions(scores), c)
    pca = per_class_accuracy(cm)
    return {
        "num_examples": int(labels.shape[0]),
        "top1": top_k_accuracy(labels, scores, 1),
        "top5": top_k_accuracy(labels, scores, 5),
        "mean_class_accuracy": mean_class_accuracy(cm),
        "per_class_accuracy": {name: (None if np.isnan(a) else float(a))
                               for name, a in zip(class_names, pca, strict=True)},
        "confusion_matrix": cm.tolist(),
    }


# ----------------------------------------------------------------------------- models


def _input_names(model) -> list[str]:
    return [t.name.split(":")[0] for t in model.inputs]


def model_inputs(model, features) -> dict[str, np.ndarray]:
    """The feature arrays a head takes, keyed by its input names."""
    arrays = {VIDEO_INPUT: features.video, AUDIO_INPUT: features.audio}
    names = _input_names(model)
    if AUDIO_SEGMENTS_INPUT in names:
        arrays[AUDIO_SEGMENTS_INPUT] = segment_audio(features)
    unknown = [n for n in names if n not in arrays]
    if unknown:
        raise ValueError(f"model {model.name!r} has input(s) {unknown}; allowed: "
                         f"{VIDEO_INPUT}, {AUDIO_INPUT}, {AUDIO_SEGMENTS_INPUT}")
    return {n: arrays[n] for n in names}


def _pack(model, arrays: Mapping[str, np.ndarray]):
    """``arrays`` (by input name) in the structure the model was built with."""
    struct = model.input
    if isinstance(struct, Mapping):
        return {k: arrays[t.name.split(":")[0]] for k, t in struct.items()}
    if isinstance(struct, (list, tuple)):
        return [arrays[t.name.split(":")[0]] for t in struct]
    return arrays[struct.name.split(":")[0]]


def model_outputs(model, inputs: Any, batch_size: int = 256) -> np.ndarray:
    """``model(inputs, training=False)`` batch by batch, eagerly, as one array ``[N, ...]``.

    Args:
        model: a Keras model.
        inputs: an array (single-input models) or arrays keyed by the model's input names.
        batch_size: rows per call.
    """
    if isinstance(inputs, Mapping):
        n = len(next(iter(inputs.values())))

        def rows(sl):
            return _pack(model, {k: v[sl] for k, v in inputs.items()})
    else:
        n = len(inputs)

        def rows(sl):
            return inputs[sl]
    outs = [np.asarray(model(rows(slice(i, i + batch_size)), training=False))
            for i in range(0, n, batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def evaluate_arrays(model, inputs: Any, labels: np.ndarray,
                    batch_size: int = 1024) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` (logits) on in-memory data, in this process.

    Runs the model eagerly in inference mode batch by batch, outside any strategy, so it is
    exact (no padding) and needs no other worker.

    Returns:
        ``{"accuracy", "cross_entropy", "num_examples"}``.
    """
    labels = np.asarray(labels, np.int64)
    logits = model_outputs(model, inputs, batch_size).astype(np.float64)
    logits = logits - logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    n = len(labels)
    return {"accuracy": int((logits.argmax(axis=1) == labels).sum()) / n,
            "cross_entropy": float(-log_p[np.arange(n), labels].sum()) / n, "num_examples": n}


def embedding_kind(model) -> str | None:
    """``fused``, ``video`` or ``audio`` from a head's layers and inputs (None if no hidden)."""
    layer_names = {layer.name for layer in model.layers}
    names = set(_input_names(model))
    if FUSION_HIDDEN_LAYER in layer_names:
        return "fused"
    if HIDDEN_LAYER in layer_names:
        if names == {VIDEO_INPUT}:
            return "video"
        if names == {AUDIO_INPUT}:
            return "audio"
    return None


def hidden_activations(model, features) -> np.ndarray:
    """The penultimate ``hidden``/``fusion_hidden`` layer's activations ``[N, units]`` (per
    segment ``[N, K, units]`` for temporal binding: averaged over the K segments)."""
    import keras

    layer_name = FUSION_HIDDEN_LAYER if embedding_kind(model) == "fused" else HIDDEN_LAYER
    sub = keras.Model(model.inputs, model.get_layer(layer_name).output)
    out = model_outputs(sub, model_inputs(model, features))
    return out.mean(axis=1) if out.ndim == 3 else out


def localisation_report(localiser, features) -> dict[str, Any]:
    """:func:`maivar_tf.localisation.localisation_metrics` of a localiser on ``features``, or a
    note when the split has no segment labels."""
    if getattr(features, "segment_labels", None) is None:
        return {"note": "the split has no segment labels (no spans in its TFRecords)"}
    logits = model_outputs(localiser, model_inputs(localiser, features))
    return localisation_metrics(features.segment_labels, logits)


def evaluate_models(models: Mapping[str, Any], features, out_dir: str | Path, *,
                    tsne: bool = True, tsne_max_points: int = 2000, seed: int = 0,
                    calibration: Mapping[str, Mapping[str, Any]] | None = None,
                    localiser: Any = None, audio: str | None = None) -> dict[str, Any]:
    """Evaluates trained heads on a feature set and writes the report artefacts.

    Args:
        models: name -> Keras head taking ``video_features`` and/or ``audio_features`` and
            returning logits (e.g. ``{"video": vmlp, "audio": audio_mlp, "fusion": fusion}``).
        features: the :class:`~maivar_tf.features.FeatureSet` to evaluate on.
        out_dir: where :data:`REPORT_JSON`, ``confusion_<name>.png`` and ``tsne.png`` go.
        tsne: also embed the hidden activations with t-SNE (the paper's Fig. 8).
        tsne_max_points: a class-stratified subset of at most this many rows is embedded.
        seed: t-SNE / subsampling seed.
        calibration: name -> a run's calibration record (its ``temperature``): that head's
            report gets ``calibration[name]`` and ``reliability_<name>.png``.
        localiser: a run's localisation head: the report gets ``localisation`` (see
            :func:`localisation_report`).
        audio: ``"silent"``: every clip's audio (clip-level and per segment) is first replaced
            by the silent audio-image's features (:func:`maivar_tf.localisation.silent_features`).

    Returns:
        The report: ``{"num_examples", "representation", "class_names", "audio"
        (``"original"`` or ``"silent"``), "models": {name: metrics (see
        :func:`classification_metrics`) + "confusion_png"}, "tsne_png", "calibration": {name:
        see :func:`maivar_tf.calibration.calibration_report`}, "localisation"}``.
    """
    if audio not in (None, "original", SILENT):
        raise ValueError(f"audio: invalid value {audio!r}; allowed: original, {SILENT}")
    if audio == SILENT:
        features = silent_features(features)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    class_names = tuple(features.class_names)
    report: dict[str, Any] = {
        "num_examples": len(features.ids),
        "representation": features.representation,
        "num_segments": int(features.video.shape[1]) if features.video.ndim == 3 else None,
        "class_names": list(class_names),
        "audio": audio or "original",
        "models": {},
    }
    embeddings: dict[str, np.ndarray] = {}
    for name, model in models.items():
        logits = model_outputs(model, model_inputs(model, features))
        metrics = classification_metrics(features.labels, logits, class_names)
        png = plot_confusion_matrix(np.array(metrics["confusion_matrix"]), class_names,
                                    out_dir / f"confusion_{name}.png",
                                    title=f"{name}: top-1 {100 * metrics['top1']:.2f}%")
        metrics["confusion_png"] = png.name
        report["models"][name] = metrics
        if name in (calibration or {}):
            report.setdefault("calibration", {})[name] = calibration_report(
                logits, features.labels, calibration[name], out_dir / f"reliability_{name}.png")
        kind = embedding_kind(model)
        if tsne and kind is not None and kind not in embeddings:
            embeddings[kind] = hidden_activations(model, features)
    if tsne and embeddings and len(features.ids) >= 3:
        order = [k for k in ("video", "audio", "fused") if k in embeddings]
        rows = stratified_subset(features.labels, tsne_max_points, seed)
        png = plot_tsne({k: embeddings[k][rows] for k in order}, features.labels[rows],
                        class_names, out_dir / "tsne.png", seed=seed)
        report["tsne_png"] = png.name
        report["tsne_embeddings"] = order
        report["tsne_points"] = int(len(rows))
    if localiser is not None:
        report["localisation"] = localisation_report(localiser, features)
    write_json_atomic(out_dir / REPORT_JSON, report)
    return report


def run_heads(run: Any) -> dict[str, Any]:
    """A trained run's heads by report name: ``{"video": vmlp, "audio": audio_mlp, "fusion"}``."""
    return {"video": run.vmlp, "audio": run.audio_mlp, "fusion": run.fusion}


def evaluate_run(run_dir: str | Path, features_dir: str | Path, representation: str, *,
                 split: str = "test", out_dir: str | Path | None = None,
                 tsne: bool = True, audio: str | None = None) -> dict[str, Any]:
    """``maivar evaluate``: a trained run's three heads on one split, with the report artefacts.

    A temporal-binding run is evaluated on the split's per-segment audio features; a run with a
    localiser also reports ``localisation`` (segment accuracy against the spans).

    Args:
        run_dir: the run folder (:func:`maivar_tf.runs.load_run`).
        features_dir: the extracted features to evaluate on.
        representation: the audio-image whose audio features to use.
        split: the split to evaluate.
        out_dir: where the report goes (default ``run_dir/eval``; ``run_dir/eval-silent``
            with ``audio="silent"``).
        tsne: also draw the t-SNE panels.
        audio: ``"silent"``: evaluate on clips without sound (see :func:`evaluate_models`).

    Returns:
        The report of :func:`evaluate_models` (models ``video``, ``audio``, ``fusion``; the
        fusion head's ECE before and after the run's temperature).

    Raises:
        FileNotFoundError: the run is incomplete.
        maivar_tf.features.FeatureError: the split or representation was not extracted.
    """
    from maivar_tf.runs import load_run

    run = load_run(run_dir)
    segments = needs_segments(run.info.config) or run.localiser is not None
    features = load_split(features_dir, split, representation, run.info.audio_backbone,
                          segments=segments)
    default_dir = SILENT_EVAL_SUBDIR if audio == SILENT else EVAL_SUBDIR
    return evaluate_models(run_heads(run), features, out_dir or Path(run_dir) / default_dir,
                           tsne=tsne, calibration={"fusion": run.info.calibration},
                           localiser=run.localiser, audio=audio)

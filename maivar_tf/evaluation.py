"""Metrics and report artefacts (``maivar evaluate``, ``maivar sweep``).

Pure metric functions (:func:`top_k_accuracy`, :func:`confusion_matrix`,
:func:`per_class_accuracy`, :func:`mean_class_accuracy`) are kept apart from plotting so they can
be checked against hand-computed values. :func:`evaluate_models` runs trained heads over a
:class:`~maivar_tf.features.FeatureSet` and writes ``report.json``, one confusion-matrix PNG per
model and a three-panel t-SNE of the video, audio and fused embeddings (the paper's Fig. 8).
:func:`representation_sweep` trains and evaluates every audio-image representation and writes the
paper's Table 3 (Shaikh et al. 2024) as Markdown.

Tie rule: a prediction is the class with the highest logit, ties going to the lowest class index
(``numpy.argmax``); top-k takes the first k classes of that same order, so top-1 always equals the
confusion matrix's trace divided by N. A constant model therefore scores the frequency of class 0,
never 100%.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from maivar_tf.config import REPRESENTATIONS

logger = logging.getLogger(__name__)

#: The penultimate layers whose activations the t-SNE plot embeds.
HIDDEN_LAYER = "hidden"
FUSION_HIDDEN_LAYER = "fusion_hidden"
VIDEO_INPUT = "video_features"
AUDIO_INPUT = "audio_features"


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


# ----------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path: str | Path, dpi: int) -> Path:
    """Writes a figure (creating the folder) and frees it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: str | Path,
                          title: str = "") -> Path:
    """Saves a row-normalised confusion matrix with class names on both axes as a PNG."""
    plt = _pyplot()
    cm = np.asarray(cm, np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    c = len(class_names)
    side = max(4.0, 0.35 * c + 2.5)
    fig, ax = plt.subplots(figsize=(side, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(c))
    ax.set_yticks(range(c))
    fs = 8 if c <= 20 else max(3, int(160 / c))
    ax.set_xticklabels(class_names, rotation=90, fontsize=fs)
    ax.set_yticklabels(class_names, fontsize=fs)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if c <= 20:
        for i in range(c):
            for j in range(c):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=fs,
                            color="white" if norm[i, j] > 0.5 else "black")
    if title:
        ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    return _save_figure(fig, path, dpi=120)


def tsne_embed(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of ``x`` ``[N, D]`` (PCA to 50 dims first when D > 50); deterministic."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.asarray(x, np.float64).reshape(len(x), -1)
    n = len(x)
    if n < 3:
        return np.zeros((n, 2))
    if x.shape[1] > 50 and n > 50:
        x = PCA(n_components=50, random_state=seed).fit_transform(x)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
    # Exact gradients are faster than Barnes-Hut below a few hundred points.
    method = "exact" if n <= 500 else "barnes_hut"
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                learning_rate="auto", method=method).fit_transform(x)


def plot_tsne(embeddings: Mapping[str, np.ndarray], labels: np.ndarray,
              class_names: Sequence[str], path: str | Path, seed: int = 0) -> Path:
    """One PNG with a t-SNE panel per embedding (e.g. video, audio, fused), coloured by class."""
    plt = _pyplot()
    names = list(embeddings)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 5), squeeze=False)
    cmap = plt.get_cmap("tab20" if len(class_names) > 10 else "tab10")
    labels = np.asarray(labels)
    for ax, name in zip(axes[0], names, strict=True):
        xy = tsne_embed(embeddings[name], seed=seed)
        for c in np.unique(labels):
            m = labels == c
            ax.scatter(xy[m, 0], xy[m, 1], s=10, color=cmap(int(c) % cmap.N),
                       label=class_names[int(c)])
        ax.set_title(f"{name} embedding")
        ax.set_xticks([])
        ax.set_yticks([])
    if len(class_names) <= 20:
        axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    return _save_figure(fig, path, dpi=110)


# ----------------------------------------------------------------------------- models


def _input_names(model) -> list[str]:
    return [t.name.split(":")[0] for t in model.inputs]


def model_inputs(model, features) -> dict[str, np.ndarray]:
    """The feature arrays a head takes, keyed by its input names."""
    arrays = {VIDEO_INPUT: features.video, AUDIO_INPUT: features.audio}
    names = _input_names(model)
    unknown = [n for n in names if n not in arrays]
    if unknown:
        raise ValueError(f"model {model.name!r} has input(s) {unknown}; allowed: "
                         f"{VIDEO_INPUT}, {AUDIO_INPUT}")
    return {n: arrays[n] for n in names}


def _pack(model, arrays: Mapping[str, np.ndarray]):
    """``arrays`` (by input name) in the structure the model was built with."""
    struct = model.input
    if isinstance(struct, Mapping):
        return {k: arrays[t.name.split(":")[0]] for k, t in struct.items()}
    if isinstance(struct, (list, tuple)):
        return [arrays[t.name.split(":")[0]] for t in struct]
    return arrays[struct.name.split(":")[0]]


def _call(model, inputs: Mapping[str, np.ndarray], batch_size: int = 256) -> np.ndarray:
    n = len(next(iter(inputs.values())))
    outs = []
    for i in range(0, n, batch_size):
        chunk = {k: v[i:i + batch_size] for k, v in inputs.items()}
        outs.append(np.asarray(model(_pack(model, chunk), training=False)))
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


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
    """The penultimate ``hidden``/``fusion_hidden`` layer's activations ``[N, units]``."""
    import keras

    layer_name = FUSION_HIDDEN_LAYER if embedding_kind(model) == "fused" else HIDDEN_LAYER
    sub = keras.Model(model.inputs, model.get_layer(layer_name).output)
    return _call(sub, model_inputs(model, features))


def _stratified_subset(labels: np.ndarray, max_points: int, seed: int) -> np.ndarray:
    """At most ``max_points`` row indices, sampled per class in proportion; sorted."""
    n = len(labels)
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        take = max(1, int(round(max_points * len(rows) / n)))
        keep.append(rng.choice(rows, size=min(take, len(rows)), replace=False))
    return np.sort(np.concatenate(keep))


def evaluate_models(models: Mapping[str, Any], features, out_dir: str | Path, *,
                    tsne: bool = True, tsne_max_points: int = 2000, seed: int = 0
                    ) -> dict[str, Any]:
    """Evaluates trained heads on a feature set and writes the report artefacts.

    Args:
        models: name -> Keras head taking ``video_features`` and/or ``audio_features`` and
            returning logits (e.g. ``{"video": vmlp, "audio": audio_mlp, "fusion": fusion}``).
        features: the :class:`~maivar_tf.features.FeatureSet` to evaluate on.
        out_dir: where ``report.json``, ``confusion_<name>.png`` and ``tsne.png`` go.
        tsne: also embed the hidden activations with t-SNE (the paper's Fig. 8).
        tsne_max_points: a class-stratified subset of at most this many rows is embedded.
        seed: t-SNE / subsampling seed.

    Returns:
        The report: ``{"num_examples", "representation", "class_names", "models": {name:
        metrics (see :func:`classification_metrics`) + "confusion_png"}, "tsne_png"}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    class_names = tuple(features.class_names)
    report: dict[str, Any] = {
        "num_examples": len(features.ids),
        "representation": features.representation,
        "num_segments": int(features.video.shape[1]) if features.video.ndim == 3 else None,
        "class_names": list(class_names),
        "models": {},
    }
    embeddings: dict[str, np.ndarray] = {}
    for name, model in models.items():
        logits = _call(model, model_inputs(model, features))
        metrics = classification_metrics(features.labels, logits, class_names)
        png = plot_confusion_matrix(np.array(metrics["confusion_matrix"]), class_names,
                                    out_dir / f"confusion_{name}.png",
                                    title=f"{name}: top-1 {100 * metrics['top1']:.2f}%")
        metrics["confusion_png"] = png.name
        report["models"][name] = metrics
        kind = embedding_kind(model)
        if tsne and kind is not None and kind not in embeddings:
            embeddings[kind] = hidden_activations(model, features)
    if tsne and embeddings and len(features.ids) >= 3:
        order = [k for k in ("video", "audio", "fused") if k in embeddings]
        rows = _stratified_subset(features.labels, tsne_max_points, seed)
        png = plot_tsne({k: embeddings[k][rows] for k in order}, features.labels[rows],
                        class_names, out_dir / "tsne.png", seed=seed)
        report["tsne_png"] = png.name
        report["tsne_embeddings"] = order
        report["tsne_points"] = int(len(rows))
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


# ----------------------------------------------------------------------------- Table 3


def format_representation_table(results: Mapping[str, Mapping[str, float]],
                                video_top1: float | None = None, title: str = "") -> str:
    """The paper's Table 3 as Markdown: representation | audio-only top-1 | fusion top-1.

    Args:
        results: representation -> ``{"audio_top1": float, "fusion_top1": float}`` in [0, 1],
            listed in the paper's order (others after them).
        video_top1: the shared VMLP's top-1, noted under the table when given.
        title: an optional heading line.

    Returns:
        Markdown; the best fusion accuracy (every tie) is bold.
    """
    if not results:
        raise ValueError("no representation results to tabulate")
    order = [r for r in REPRESENTATIONS if r in results] + \
        [r for r in results if r not in REPRESENTATIONS]
    best = max(round(100 * results[r]["fusion_top1"], 2) for r in order)
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines += ["| Representation | Audio-only top-1 (%) | Fusion top-1 (%) |",
              "|---|---:|---:|"]
    for r in order:
        a = f"{100 * results[r]['audio_top1']:.2f}"
        f = f"{100 * results[r]['fusion_top1']:.2f}"
        if round(100 * results[r]["fusion_top1"], 2) == best:
            f = f"**{f}**"
        lines.append(f"| {r} | {a} | {f} |")
    if video_top1 is not None:
        lines += ["", f"Video-only (VMLP, shared by every row) top-1: {100 * video_top1:.2f}%"]
    return "\n".join(lines) + "\n"


def representation_sweep(cfg, representations: Sequence[str] | None = None, *,
                         features_dir: str | Path | None = None,
                         out_dir: str | Path | None = None,
                         train_fn: Callable | None = None, extract_missing: bool = True) -> str:
    """Trains and evaluates every audio-image representation; writes the paper's Table 3.

    One VMLP is trained once (with the first representation) and reused for every other one,
    since it never sees audio; for each representation an audio MLP and a fusion MLP
    (initialised from that VMLP, Algorithm 1) are trained on the train split and evaluated on
    the test split. Each representation's run lives in ``out_dir/<rep>/`` (resumable like any
    :func:`~maivar_tf.training.run_algorithm1` run) with its evaluation in ``eval/``.

    Args:
        cfg: the experiment (features from ``cfg.data.features_dir``).
        representations: which to sweep (default: ``cfg.data.representations``).
        features_dir: overrides ``cfg.data.features_dir``.
        out_dir: where the runs and ``representation_sweep.md`` / ``.json`` go (default:
            ``<cfg.train.output_dir>/sweep``).
        train_fn: ``train_fn(cfg, train_set, run_dir, vmlp_from) -> result`` with attributes
            ``audio_mlp``, ``vmlp``, ``fusion`` and ``run_dir``; ``vmlp_from`` is the first
            representation's run folder (None for the first). Default:
            :func:`train_representation` (Algorithm 1 via :mod:`maivar_tf.training`).
        extract_missing: first extract the audio features of representations that
            ``features_dir`` lacks (:func:`~maivar_tf.features.extract_features` is resumable,
            so only the missing audio-images go through the backbone).

    Returns:
        The Markdown table (also written to ``out_dir/representation_sweep.md``).
    """
    from maivar_tf.features import extract_features, load_features, read_feature_info

    reps = list(representations) if representations is not None else \
        list(cfg.data.representations)
    if not reps:
        raise ValueError("no representations to sweep; allowed: " + ", ".join(REPRESENTATIONS))
    for r in reps:
        if r not in REPRESENTATIONS:
            raise ValueError(f"unknown representation {r!r}; allowed: {', '.join(REPRESENTATIONS)}")
    features_dir = Path(features_dir or cfg.data.features_dir)
    out_dir = Path(out_dir or Path(cfg.train.output_dir) / "sweep")
    out_dir.mkdir(parents=True, exist_ok=True)
    if extract_missing:
        splits = read_feature_info(features_dir).get("splits", {}) \
            if (features_dir / "feature_info.json").exists() else {}
        if any(r not in splits.get(s, {}).get("representations", [])
               for s in ("train", "test") for r in reps):
            logger.info("extracting the missing audio features of %s", ", ".join(reps))
            extract_features(cfg, splits=("train", "test"), representations=reps,
                             features_dir=features_dir)
    train_fn = train_fn or train_representation
    results: dict[str, dict[str, float]] = {}
    first_run: Path | None = None
    video_top1 = None
    for rep in reps:
        train = load_features(features_dir, "train", rep)
        test = load_features(features_dir, "test", rep)
        result = train_fn(cfg, train, out_dir / rep, first_run)
        models = {"video": result.vmlp, "audio": result.audio_mlp, "fusion": result.fusion}
        report = evaluate_models(models, test, out_dir / rep / "eval", tsne=False)
        a = report["models"]["audio"]["top1"]
        f = report["models"]["fusion"]["top1"]
        if video_top1 is None:
            video_top1 = report["models"]["video"]["top1"]
            first_run = Path(result.run_dir)
        results[rep] = {"audio_top1": a, "fusion_top1": f,
                        "audio_mean_class_accuracy": report["models"]["audio"][
                            "mean_class_accuracy"],
                        "fusion_mean_class_accuracy": report["models"]["fusion"][
                            "mean_class_accuracy"]}
        logger.info("%s: audio-only %.2f%%, fusion %.2f%%", rep, 100 * a, 100 * f)
    table = format_representation_table(
        results, video_top1=video_top1,
        title=f"{cfg.name}: audio-image representations (test top-1)")
    (out_dir / "representation_sweep.md").write_text(table)
    (out_dir / "representation_sweep.json").write_text(json.dumps(
        {"results": results, "video_top1": video_top1, "representations": reps},
        indent=2) + "\n")
    return table


def train_representation(cfg, train, run_dir: str | Path, vmlp_from: str | Path | None = None):
    """Algorithm 1 for one representation, reusing the VMLP of ``vmlp_from`` when given.

    The VMLP depends on the video features only, so copying ``vmlp_from/vmlp.keras`` into
    ``run_dir`` makes :func:`~maivar_tf.training.run_algorithm1` load it instead of training
    it again; the audio MLP and the fusion MLP (initialised from that VMLP) are trained.

    Args:
        cfg: the experiment; ``model.representation`` is set to ``train.representation``.
        train: the representation's training :class:`~maivar_tf.features.FeatureSet`.
        run_dir: this representation's run folder.
        vmlp_from: a finished run folder whose ``vmlp.keras`` to reuse (None: train one).

    Returns:
        The :class:`~maivar_tf.training.Algorithm1Result`.
    """
    import dataclasses
    import shutil

    from maivar_tf.training import run_algorithm1

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if vmlp_from is not None and Path(vmlp_from) != run_dir:
        source = Path(vmlp_from) / "vmlp.keras"
        if not source.exists():
            raise FileNotFoundError(f"{source}: no trained VMLP to reuse")
        if not (run_dir / "vmlp.keras").exists():
            shutil.copy2(source, run_dir / "vmlp.keras")
    rep_cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, representation=train.representation))
    return run_algorithm1(rep_cfg, train, val=None, run_dir=run_dir)

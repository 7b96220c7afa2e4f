"""The figures of ``maivar evaluate``: the confusion matrix and the t-SNE panels.

Shaikh et al. 2024 show a t-SNE of the video, audio and fused embeddings (Fig. 8); the metric
functions they illustrate are in :mod:`maivar_tf.evaluation`, which re-exports these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from maivar_tf.plotting import pyplot, save_figure


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: str | Path,
                          title: str = "") -> Path:
    """Saves a row-normalised confusion matrix with class names on both axes as a PNG."""
    plt = pyplot()
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
    return save_figure(fig, path, dpi=120)


def tsne_embed(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of ``x`` ``[N, D]`` (PCA to 50 dims first when D > 50); deterministic.

    Fewer than 3 points, or points that are all the same (e.g. the audio MLP's embedding when
    every clip's audio is the silent one), sit at the origin: t-SNE's gradient is NaN there.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.asarray(x, np.float64).reshape(len(x), -1)
    n = len(x)
    if n < 3 or np.ptp(x, axis=0).max() <= 1e-12 * (1.0 + np.abs(x).max()):
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
    plt = pyplot()
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
    return save_figure(fig, path, dpi=110)


def stratified_subset(labels: np.ndarray, max_points: int, seed: int) -> np.ndarray:
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


__all__ = ["plot_confusion_matrix", "plot_tsne", "stratified_subset", "tsne_embed"]

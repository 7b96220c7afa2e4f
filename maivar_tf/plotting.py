"""Matplotlib for the report figures: the headless (Agg) backend, and saving a figure.

Shared by the evaluation plots (confusion matrices, t-SNE), the reliability diagram
(:mod:`maivar_tf.calibration`) and the ablation's convergence figure
(:mod:`maivar_tf.ablation_report`). Matplotlib is imported on first use, never at start-up.
"""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int) -> Path:
    """Lays out ``fig``, writes it to ``path`` (creating the folder), frees it; returns the path."""
    plt = pyplot()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


__all__ = ["pyplot", "save_figure"]

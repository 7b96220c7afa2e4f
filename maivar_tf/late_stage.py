"""Late fusion's stage of Algorithm 1: no fit, the audio weight chosen on held-out data.

Kept apart from :mod:`maivar_tf.training` (which re-exports :func:`choose_late_stage`) so the
stage loop stays short.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from maivar_tf.evaluation import model_outputs
from maivar_tf.models.fusion import choose_late_weight
from maivar_tf.runs import load_head

logger = logging.getLogger(__name__)


def save_model_atomic(model: keras.Model, path: Path) -> None:
    """Saves ``model`` to ``path`` through a temporary file (never a half-written model)."""
    tmp = path.with_name(path.stem + ".partial.keras")
    model.save(tmp)
    os.replace(tmp, path)



def choose_late_stage(plan: Any, build: Callable[..., keras.Model], heads: dict[str, Any],
                      train: Any, val: Any, strategy: tf.distribute.Strategy, run_dir: Path
                      ) -> tuple[keras.Model, dict[str, Any]]:
    """``late`` fusion's stage: no fit; ``w`` chosen on val (else train); saves ``fusion.keras``.

    Returns:
        ``(model, stage_info)`` like :func:`train_stage`; the info records ``audio_weight``,
        ``chosen_on`` (``val`` or ``train``), the criterion and the NLL of every grid value.
    """
    final = run_dir / f"{plan.name}.keras"
    if final.exists():
        logger.info("stage %s: %s exists, skipping", plan.name, final)
        return load_head(final), {"skipped": True}
    split, data = ("val", val) if val is not None else ("train", train)
    if val is None:
        logger.warning("late fusion: no validation split; choosing its weight on the training "
                       "split (set train.val_fraction > 0 to hold one out)")
    t0 = time.time()
    choice = choose_late_weight(model_outputs(heads["audio_mlp"], np.asarray(data.audio, np.float32)),
                                model_outputs(heads["vmlp"], np.asarray(data.video, np.float32)),
                                data.labels)
    with strategy.scope():
        model = build(late_weight=choice["audio_weight"])
    save_model_atomic(model, final)
    logger.info("stage %s: audio weight %.2f chosen on %s (NLL %.4f)", plan.name,
                choice["audio_weight"], split, choice["nll"])
    return model, {"skipped": False, "fitted": False, "chosen_on": split, **choice,
                   "seconds": round(time.time() - t0, 3)}



__all__ = ["choose_late_stage", "save_model_atomic"]

"""The features an end-to-end run is evaluated on: extracted through its own backbones.

A run that fine-tuned a backbone (``train.finetune``, :mod:`maivar_tf.end_to_end`) no longer
matches the features folder it started from, so ``maivar evaluate`` would score its heads on
features of other weights. :func:`evaluation_features_dir` extracts the split once more, into
``run_dir/features``, with ``model.video_weights`` / ``model.audio_weights`` set to the run's
backbones (the fine-tuned files, else the initial ones), through ``maivar extract``'s code
(:func:`maivar_tf.features.extract_features`): the same decoding, centre crops and shards, and
a ``feature_info.json`` that names those weights files. When a file changes (the run was
retrained), the folder is stale and made again.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

from maivar_tf.artifacts import FeatureInfo, RunInfo
from maivar_tf.config import ExperimentConfig
from maivar_tf.run_backbones import trained_backbone_path

logger = logging.getLogger(__name__)

#: The run's own features folder, relative to the run folder.
RUN_FEATURES_SUBDIR = "features"


def finetuned_kinds(run_dir: str | Path) -> tuple[str, ...]:
    """The backbones the run in ``run_dir`` fine-tuned (``()`` for a frozen or feature run)."""
    return tuple(k for k in ("video", "audio") if trained_backbone_path(run_dir, k))


def _fresh(out: Path, split: str) -> bool:
    """``out`` holds features of ``split`` whose weights files are unchanged."""
    if not FeatureInfo.exists(out):
        return False
    info = FeatureInfo.read(out)
    if split not in info.splits:
        return False
    specs = [info.backbone("video"), *[info.backbone("audio", n) for n in info.audio_names]]
    return all(s.weights in ("none", "imagenet") or s.weights_file_unchanged() for s in specs)


def evaluation_features_dir(cfg: ExperimentConfig, run_dir: str | Path,
                            split: str = "test") -> Path:
    """The features folder to evaluate the run in ``run_dir`` on.

    ``cfg.data.features_dir`` for a run that fine-tuned nothing; else ``run_dir/features``,
    extracted (when missing or stale) through the run's backbones.

    Args:
        cfg: the experiment (the run's recorded config wins, :func:`maivar_tf.runs.run_config`).
        run_dir: the run folder.
        split: the split to extract.
    """
    from maivar_tf.end_to_end import initial_backbones
    from maivar_tf.features import extract_features
    from maivar_tf.runs import run_config

    run_dir = Path(run_dir)
    kinds = finetuned_kinds(run_dir)
    if not kinds:
        return Path(cfg.data.features_dir)
    info = RunInfo.read(run_dir)
    run_cfg = run_config(cfg, info, run_dir)
    start = initial_backbones(info.features_dir or run_cfg.data.features_dir,
                              info.audio_backbone)
    weights = {k: str(trained_backbone_path(run_dir, k) or start[k].weights)
               for k in ("video", "audio")}
    out = run_dir / RUN_FEATURES_SUBDIR
    if _fresh(out, split):
        return out
    shutil.rmtree(out, ignore_errors=True)
    model = dataclasses.replace(run_cfg.model, video_weights=weights["video"],
                                audio_weights=weights["audio"])
    logger.info("extracting the %s split through the run's fine-tuned %s backbone(s) into %s",
                split, " and ".join(kinds), out)
    extract_features(dataclasses.replace(run_cfg, model=model), splits=(split,),
                     representations=[info.representation], features_dir=out)
    return out


__all__ = ["RUN_FEATURES_SUBDIR", "evaluation_features_dir", "finetuned_kinds"]

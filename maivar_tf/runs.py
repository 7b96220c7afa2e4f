"""A trained run on disk: its three heads, its run info and (for serving) its backbones.

MAiVAR (Shaikh et al. 2024) trains three heads in turn (Algorithm 1) on frozen backbone
features.

``maivar train`` (:func:`maivar_tf.training.run_algorithm1`) writes a run folder::

    run_info.json                  RunInfo: classes, K, feature widths, config, stages, metrics,
                                   the fusion head's calibration (temperature)
    audio_mlp.keras, vmlp.keras, fusion.keras    the heads of Algorithm 1's three stages
    localiser.keras                the per-segment localisation head (only with
                                   ``model.localisation``: a fourth, optional stage)
    saliency.keras                 the saliency scorer on the preview features (only with
                                   ``model.selection: audio_topk``: optional, trained last)
    <stage>/log.csv, <stage>/logs/  per-epoch metrics (CSVLogger) and TensorBoard events

This module reads it back (:func:`load_run`); nothing else parses those files. For serving,
:func:`load_servable_run` adds the backbones the run's features were extracted with, rebuilt
from ``feature_info.json``'s :class:`~maivar_tf.artifacts.BackboneSpec` s, and the config the
run was trained with (MAiVAR's fusion head only makes sense on the features it was trained on).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maivar_tf.artifacts import DEFAULT_AUDIO_BACKBONE, RUN_INFO, FeatureInfo, RunInfo

if TYPE_CHECKING:  # pragma: no cover
    from maivar_tf.config import ExperimentConfig
    from maivar_tf.models.backbones import BackboneFeatures

#: Algorithm 1's stages, in training order; each is saved as ``run_dir/<stage>.keras``.
STAGES: tuple[str, ...] = ("audio_mlp", "vmlp", "fusion")
#: The optional fourth stage (``model.localisation``), saved as ``run_dir/localiser.keras``.
LOCALISER_STAGE = "localiser"
#: The optional saliency scorer's stage (``model.selection: audio_topk``):
#: ``run_dir/saliency.keras``.
SALIENCY_STAGE = "saliency"
#: The per-epoch CSV log of a stage, relative to the run folder.
LOG_CSV = "log.csv"

logger = logging.getLogger(__name__)


@dataclass
class TrainedRun:
    """The three trained heads of one run.

    Args:
        audio_mlp: the audio MLP (input ``audio_features``).
        vmlp: the VMLP (input ``video_features``).
        fusion: the fusion MLP (inputs ``video_features``, ``audio_features``).
        histories: per stage, the CSV log as ``{column: [values per epoch]}`` (all epochs,
            including those before a resume).
        run_dir: where the run lives.
        info: the run's :class:`~maivar_tf.artifacts.RunInfo` (None while it is being written).
        localiser: the localisation head (inputs ``video_features``,
            ``audio_segment_features``; logits ``[B, K, C + 1]``, class C = background), or
            None when the run has none.
        saliency: the saliency scorer (input ``preview_features [B, K, Dp]``,
            :mod:`maivar_tf.models.saliency`), or None when the run has none.
    """

    audio_mlp: Any
    vmlp: Any
    fusion: Any
    histories: dict[str, dict[str, list[float]]]
    run_dir: Path
    info: RunInfo | None = field(default=None)
    localiser: Any = None
    saliency: Any = None

    @property
    def temperature(self) -> float:
        """The fusion logits' temperature (:attr:`RunInfo.temperature`; 1.0 without info)."""
        return self.info.temperature if self.info is not None else 1.0


def stage_log_path(run_dir: str | Path, stage: str) -> Path:
    """``run_dir/<stage>/log.csv``."""
    return Path(run_dir) / stage / LOG_CSV


def read_csv_log(path: str | Path) -> dict[str, list[float]]:
    """A ``CSVLogger`` file as ``{column: [float per row]}`` (empty when missing)."""
    path = Path(path)
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    out: dict[str, list[float]] = {k: [] for k in rows[0]}
    for row in rows:
        for k in out:
            try:
                out[k].append(float(row[k]))
            except (TypeError, ValueError):
                out[k].append(float("nan"))
    return out


def load_run(run_dir: str | Path, compile: bool = False) -> TrainedRun:
    """Loads a finished run: the three heads (and ``localiser.keras`` / ``saliency.keras`` when
    present), their logs and the run info.

    Args:
        run_dir: the run folder.
        compile: also restore the training configuration and optimizer state.

    Raises:
        FileNotFoundError: naming every missing file.
        RunError: a head that Keras' safe mode refuses, or that is not a Keras model file.
    """
    run_dir = Path(run_dir)
    needed = [run_dir / RUN_INFO] + [run_dir / f"{s}.keras" for s in STAGES]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise FileNotFoundError(f"incomplete run in {run_dir}: missing {', '.join(missing)} "
                                "(train it with `maivar train`)")
    info = RunInfo.read(run_dir)
    models = {s: load_head(run_dir / f"{s}.keras", compile=compile) for s in STAGES}
    for optional in (LOCALISER_STAGE, SALIENCY_STAGE):
        path = run_dir / f"{optional}.keras"
        if path.exists():
            models[optional] = load_head(path, compile=compile)
    histories = {s: read_csv_log(stage_log_path(run_dir, s)) for s in models}
    return TrainedRun(models["audio_mlp"], models["vmlp"], models["fusion"], histories,
                      run_dir, info, localiser=models.get(LOCALISER_STAGE),
                      saliency=models.get(SALIENCY_STAGE))


class RunError(RuntimeError):
    """A run that cannot be loaded (for serving) as asked; the message says why and what to do."""


def _first_sentence(message: str) -> str:
    return " ".join(message.split()).split(". ")[0].rstrip(".")


def load_head(path: str | Path, compile: bool = False) -> Any:
    """One saved head, loaded in Keras' safe mode (which is never turned off).

    Raises:
        RunError: one line naming the file and why it cannot be loaded: what safe mode
            refused (a ``Lambda`` layer's Python lambda could run any code when loaded), or
            Keras' reason for a file that is not a readable ``.keras`` model.
    """
    import keras

    import maivar_tf.models  # noqa: F401  (registers the custom objects)

    if Path(path).is_file() and not zipfile.is_zipfile(path):
        raise RunError(f"{path}: not a Keras model file (a .keras file is a zip archive); "
                       "retrain with `maivar train`")
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except ValueError as e:
        reason = _first_sentence(str(e))
        if "safe_mode=False" in str(e):
            what = reason.replace("Requested the deserialization of ", "it holds ")
            raise RunError(f"{path}: refused by Keras' safe mode: {what}, which could run "
                           "arbitrary code when loaded; maivar loads only safe model files "
                           "(save the model without it, e.g. retrain with `maivar train`)"
                           ) from None
        raise RunError(f"{path}: cannot be loaded as a Keras model: {reason}") from None


# ----------------------------------------------------------------------------- serving a run


#: The data settings that decide what pixels and audio-images a model sees.
PREPROCESSING_FIELDS: tuple[str, ...] = ("num_segments", "frame_short_side", "crop_size",
                                         "jpeg_quality", "audio")


@dataclass(frozen=True)
class ServableRun:
    """What a trained run needs to classify a clip: the fusion head and the exact backbones.

    Args:
        fusion: the fusion MLP (Algorithm 1's last model).
        video: BNInception's :class:`~maivar_tf.models.backbones.BackboneFeatures`.
        audio: the audio backbone's :class:`~maivar_tf.models.backbones.BackboneFeatures`
            (the run's ``model.audio_backbone``; InceptionResNetV2 by default).
        class_names: the classes the fusion logits index.
        cfg: the experiment the run was trained with (its ``data`` section is the
            preprocessing).
        num_segments: K.
        representation: the audio-image the audio features come from.
        ten_crop: whether the video features average TSN's ten crops (as extracted).
        provenance: where the run and its backbones came from.
        temperature: the fusion logits are divided by it before the softmax (the run's
            calibration, :mod:`maivar_tf.calibration`; 1.0 for older runs).
        silent_audio: float32 ``[Da]``, the audio backbone's features of the silent
            audio-image (from the features folder; None for older folders).
        localiser: the localisation head (:attr:`TrainedRun.localiser`; None without one).
        selection, budget: which segments the visual backbone runs on (``model.selection``,
            ``model.budget``: the run's, or the caller's where it overrides them;
            :mod:`maivar_tf.serving.selector`).
        preview: the preview backbone's ``BackboneFeatures`` (``model.preview_backbone``;
            ``audio_topk`` only, else None).
        saliency: the saliency scorer (:attr:`TrainedRun.saliency`; ``audio_topk`` only).
    """

    fusion: Any
    video: BackboneFeatures
    audio: BackboneFeatures
    class_names: tuple[str, ...]
    cfg: ExperimentConfig
    num_segments: int
    representation: str
    ten_crop: bool = False
    provenance: Mapping[str, Any] = field(default_factory=dict)
    temperature: float = 1.0
    silent_audio: Any = None
    localiser: Any = None
    selection: str = "uniform"
    budget: int = 0
    preview: Any = None
    saliency: Any = None


def run_config(cfg: ExperimentConfig, info: RunInfo, run_dir: str | Path) -> ExperimentConfig:
    """The config the run was trained with (``run_info.json``), else ``cfg``.

    The preprocessing must be the training one, whatever ``--config`` says: a mismatch in
    :data:`PREPROCESSING_FIELDS` is logged and the run's settings win.
    """
    from maivar_tf.config import config_from_json_dict

    if not info.config:
        return cfg
    try:
        recorded = config_from_json_dict(info.config)
    except Exception as e:  # an older or hand-edited record: fall back to the given config
        logger.warning("%s: cannot read the recorded config (%s); using the given one",
                       Path(run_dir) / RUN_INFO, e)
        return cfg
    diff = [f for f in PREPROCESSING_FIELDS if getattr(recorded.data, f) != getattr(cfg.data, f)]
    if diff:
        logger.warning("the given config's data.%s differ from the run's (%s); using the "
                       "settings the run was trained with", ", data.".join(diff),
                       Path(run_dir) / RUN_INFO)
    return recorded


def selection_config(run_cfg: ExperimentConfig, selection: str | None = None,
                     budget: int | None = None) -> ExperimentConfig:
    """``run_cfg`` with ``model.selection`` / ``model.budget`` replaced where given.

    Raises:
        ConfigError: the combination is not valid (a budget above K, ``audio_topk`` without
            per-segment audio).
    """
    changes = {k: v for k, v in (("selection", selection), ("budget", budget)) if v is not None}
    if not changes:
        return run_cfg
    return dataclasses.replace(run_cfg, model=dataclasses.replace(run_cfg.model, **changes))


def _features_dir(cfg: ExperimentConfig, run_cfg: ExperimentConfig, info: RunInfo) -> Path:
    """The run's features folder: the recorded one, else the run's config's, else ``cfg``'s."""
    candidates = [Path(p) for p in (info.features_dir, run_cfg.data.features_dir,
                                    cfg.data.features_dir) if p]
    return next((p for p in candidates if FeatureInfo.exists(p)), candidates[0])


def load_servable_run(cfg: ExperimentConfig, run_dir: str | Path, *,
                      features_dir: str | Path | None = None,
                      backbones: tuple[Any, Any] | None = None,
                      selection: str | None = None, budget: int | None = None,
                      preview: Any = None) -> ServableRun:
    """A trained run with the backbones its features came from, ready to serve.

    Args:
        cfg: the experiment. The run's own ``run_info.json`` wins for the class list, K, the
            representation and the preprocessing (the config the run was trained with).
        run_dir: the folder ``maivar train`` wrote.
        features_dir: where the run's features (and their backbones) are; default: the one
            the run recorded when it holds ``feature_info.json``, else the configs'.
        backbones: ``(video, audio)`` Keras models to use instead of loading them.
        selection, budget: ``model.selection`` / ``model.budget`` instead of the run's
            (``maivar predict --set``); None: the run's.
        preview: the preview backbone (a Keras model) to use instead of loading it
            (``audio_topk``).

    Raises:
        FileNotFoundError: ``run_dir`` does not exist or the run is incomplete.
        RunError: the run names no classes, or its features do not fit it, or
            ``audio_topk`` with a run that has no saliency scorer.
    """
    from maivar_tf.models.backbones import BackboneFeatures

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {str(run_dir)!r} does not exist; train first "
                                "(`maivar train`) or pass --run-dir")
    run = load_run(run_dir)
    info = run.info
    if not info.class_names:
        raise RunError(f"{run_dir / RUN_INFO} names no classes; retrain with `maivar train`")
    run_cfg = run_config(cfg, info, run_dir)
    k = int(info.num_segments)
    features_dir = Path(features_dir) if features_dir else _features_dir(cfg, run_cfg, info)
    ten_crop = bool(run_cfg.extract.ten_crop)
    if FeatureInfo.exists(features_dir):
        feature_info = FeatureInfo.read(features_dir)
        ten_crop = bool(feature_info.ten_crop)
        if int(feature_info.num_segments) != k:
            raise RunError(f"{FeatureInfo.path(features_dir)} has K={feature_info.num_segments}"
                           f" but the run was trained with K={k}; pass the features the run "
                           "was trained on")
    provenance: dict[str, Any] = {"run_dir": str(run_dir.resolve())}
    if backbones is None:
        video, audio, loaded_from = load_backbones(features_dir, info.audio_backbone,
                                                   run_dir=run_dir)
        provenance.update(loaded_from)
    else:
        (video, audio), provenance["backbones"] = backbones, "injected"
    if run_cfg.data.num_segments != k:
        run_cfg = dataclasses.replace(run_cfg, data=dataclasses.replace(run_cfg.data,
                                                                        num_segments=k))
    run_cfg = selection_config(run_cfg, selection, budget)
    crop, size = int(run_cfg.data.crop_size), int(run_cfg.data.audio.image_size)
    audio_fn = BackboneFeatures(audio, (size, size, 3))
    scorer, preview_fn = None, None
    if run_cfg.model.selection == "audio_topk":
        scorer = run.saliency
        if scorer is None:
            raise RunError(f"{run_dir} has no saliency scorer (saliency.keras), which "
                           "model.selection=audio_topk needs; train the run with it, or "
                           "--set model.selection=uniform")
        if preview is None:
            preview, provenance["preview_backbone"] = load_preview_backbone(
                features_dir, run_cfg.model.preview_backbone)
        preview_fn = BackboneFeatures(preview, (size, size, 3))
    return ServableRun(
        fusion=run.fusion, video=BackboneFeatures(video, (crop, crop, 3)),
        audio=audio_fn, class_names=tuple(info.class_names),
        cfg=run_cfg, num_segments=k, representation=str(info.representation),
        ten_crop=ten_crop, provenance=provenance, temperature=run.temperature,
        silent_audio=silent_audio_of(
            features_dir, str(info.representation), info.audio_backbone, fusion=run.fusion,
            audio=audio_fn if trained_backbone_path(run_dir, "audio") else None,
            audio_cfg=run_cfg.data.audio),
        localiser=run.localiser, selection=run_cfg.model.selection,
        budget=int(run_cfg.model.budget), preview=preview_fn, saliency=scorer)


def silent_audio_of(features_dir: str | Path, representation: str,
                    audio_backbone: str | None = None, *, fusion: Any = None,
                    audio: Any = None, audio_cfg: Any = None) -> Any:
    """The audio backbone's features ``[Da]`` of the silent audio-image, or None.

    Computed by ``audio`` (a BackboneFeatures, with ``audio_cfg`` the data's audio-image
    section) when given: a fine-tuned audio backbone's. Else from ``feature_info.json``
    (``AudioFeatures.silent``, recorded by ``maivar extract``), else from the fusion model's modality dropout layer (the features it was trained to
    substitute), else None (an older features folder and no modality dropout).
    """
    import numpy as np

    if audio is not None:
        from maivar_tf.features.silent import silent_features

        return silent_features(audio, [representation], audio_cfg)[representation]
    if FeatureInfo.exists(features_dir):
        entry = FeatureInfo.read(features_dir).audio(audio_backbone or DEFAULT_AUDIO_BACKBONE)
        silent = None if entry is None else entry.silent.get(representation)
        if silent:
            return np.asarray(silent, np.float32)
    layers = {layer.name: layer for layer in getattr(fusion, "layers", ())}
    from maivar_tf.models.modality import MODALITY_DROPOUT_LAYER

    if MODALITY_DROPOUT_LAYER in layers:
        return np.asarray(layers[MODALITY_DROPOUT_LAYER].silent.numpy(), np.float32)
    return None


# re-exported: the backbones of a run live in their own module (imported last: it reads
# RunError from here)
from maivar_tf.run_backbones import (  # noqa: E402
    load_backbones,
    load_preview_backbone,
    trained_backbone_path,
)

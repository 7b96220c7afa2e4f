"""The backbones a trained run serves with: the features folder's, or the ones it fine-tuned.

A run on precomputed features serves with the backbones its features were extracted with,
rebuilt from ``feature_info.json``'s :class:`~maivar_tf.artifacts.BackboneSpec` s. An
end-to-end run that fine-tuned a backbone (``train.finetune``, :mod:`maivar_tf.end_to_end`)
serves with the weights its last training stage saved, ``run_dir/<stage>/<kind>.weights.h5``,
in the same architecture, input size and precision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maivar_tf.artifacts import FeatureInfo, backbone_weights_name


def backbone_weights_path(run_dir: str | Path, stage: str, kind: str) -> Path:
    """Where an end-to-end stage ``stage`` saves the ``kind`` backbone it trained."""
    return Path(run_dir) / stage / backbone_weights_name(kind)


def trained_backbone_path(run_dir: str | Path | None, kind: str,
                          before: str | None = None) -> Path | None:
    """The ``kind`` backbone a run fine-tuned (its last stage's that trained it), or None
    (frozen, or a run on precomputed features: the features folder's backbone serves).

    Args:
        run_dir: the run folder (None: no run, None returned).
        kind: ``video`` or ``audio``.
        before: only the stages trained before this one (what stage ``before`` starts from).
    """
    from maivar_tf.runs import STAGES  # runs re-exports this module: imported late

    if run_dir is None:
        return None
    stages = STAGES if before is None else STAGES[:STAGES.index(before)]
    for stage in reversed(stages):
        path = backbone_weights_path(run_dir, stage, kind)
        if path.is_file():
            return path
    return None


def load_backbones(features_dir: str | Path, audio_backbone: str | None = None, *,
                   run_dir: str | Path | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """The video and audio backbones exactly as they were when the features were extracted,
    or as the end-to-end run in ``run_dir`` fine-tuned them.

    Each is rebuilt from its :class:`~maivar_tf.artifacts.BackboneSpec` in
    ``feature_info.json`` (:func:`maivar_tf.models.backbones.restore_backbone`): the weights
    ``maivar extract`` saved beside the features, else an unchanged weights file, else
    ``imagenet``, at the input size and in the ``extract.precision`` the features had.

    Args:
        features_dir: the features folder of the run.
        audio_backbone: which of the folder's audio backbones (``model.audio_backbone``; the
            run's, :attr:`RunInfo.audio_backbone`); default the folder's first.
        run_dir: a run whose fine-tuned backbones (:func:`trained_backbone_path`) replace
            the folder's weights.

    Returns:
        ``(video_backbone, audio_backbone, provenance)``: Keras models, and the features
        folder, their precision and the weights each backbone was loaded from.

    Raises:
        FileNotFoundError: ``features_dir`` holds no ``feature_info.json``.
        WeightsError: a backbone the features came from cannot be recovered (random weights
            that were not saved, a changed weights file, a backbone handed in by code), or the
            folder has no features of ``audio_backbone``.
        RunError: bfloat16 features on a machine without native bfloat16.
    """
    from maivar_tf.models.precision import recorded_precision
    from maivar_tf.models.weights import WeightsError

    info = FeatureInfo.read(features_dir)
    provenance: dict[str, Any] = {"features_dir": str(features_dir),
                                  "precision": recorded_precision(info.config)}
    models = {}
    for kind in ("video", "audio"):
        try:
            spec = info.backbone(kind, audio_backbone if kind == "audio" else None)
        except ValueError as e:
            raise WeightsError(f"{FeatureInfo.path(features_dir)}: {e}") from e
        trained = trained_backbone_path(run_dir, kind)
        models[kind] = _restore(spec, kind, features_dir, info, trained)
        provenance[f"{kind}_backbone"] = (str(trained) if trained
                                          else spec.weights_to_load(features_dir))
    provenance["audio_architecture"] = info.backbone("audio", audio_backbone).architecture
    return models["video"], models["audio"], provenance


def load_preview_backbone(features_dir: str | Path, name: str) -> tuple[Any, str]:
    """The preview backbone ``name`` (``model.preview_backbone``) as it was when its
    per-segment features were extracted: ``(Keras model, the weights it was loaded from)``.

    Raises:
        WeightsError: the folder has no features of ``name`` or its weights are gone.
    """
    from maivar_tf.models.weights import WeightsError

    try:
        spec = (info := FeatureInfo.read(features_dir)).backbone("audio", name)
    except ValueError as e:
        raise WeightsError(f"{FeatureInfo.path(features_dir)}: {e} (the preview features of "
                           "model.selection=audio_topk: `maivar extract --set "
                           f"model.audio_backbone={name}`)") from e
    return _restore(spec, "audio", features_dir, info), str(spec.weights_to_load(features_dir))


def _restore(spec: Any, kind: str, features_dir: str | Path, info: FeatureInfo,
             weights: Path | None = None) -> Any:
    """``restore_backbone`` in the folder's recorded precision (from ``weights`` when given:
    a fine-tuned backbone); PrecisionError -> RunError."""
    from maivar_tf.models.backbones import build_backbone, restore_backbone
    from maivar_tf.models.precision import PrecisionError, recorded_precision
    from maivar_tf.runs import RunError

    precision = recorded_precision(info.config)
    try:
        if weights is not None:
            return build_backbone(kind, str(weights), spec.image_size,
                                  architecture=spec.architecture, precision=precision)
        return restore_backbone(spec, kind, features_dir, precision=precision)
    except PrecisionError as e:
        raise RunError(f"the features in {features_dir} were extracted in {precision}: {e} "
                       "(or re-extract them in float32 and retrain)") from None


__all__ = ["backbone_weights_path", "load_backbones", "load_preview_backbone",
           "trained_backbone_path"]

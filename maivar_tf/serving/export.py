"""``maivar export``: a trained run -> a versioned SavedModel for TF Serving, and reading it back.

The exporter (Model Garden's ``export_base.export``) builds a
:class:`~maivar_tf.serving.module.ServingModule` from a :class:`~maivar_tf.runs.ServableRun`
(the fusion MLP of MAiVAR's Algorithm 1, Shaikh et al. 2024, and the backbones the run's
features came from) with its class table read from the labels file it writes, and
writes the module's three signatures (the temporal-binding ones for such a run, with the
localiser's segment outputs when it has one) with :class:`keras.export.ExportArchive` (which keeps the
input names) to ``EXPORT_DIR/<model_name>/<version>/``, the layout TF Serving watches::

    saved_model.pb, variables/
    assets/labels.txt                    the class names, one per line, in logit order
    assets.extra/maivar_export.json      ExportInfo: signatures, K, representation, config,
                                         the temperature the probabilities are scaled by

The version is built under a dot-name in the model folder (``.tmp-<version>-<host>-<pid>-*``,
which TF Serving ignores: it loads only integer-named folders) and renamed when complete, so
the server never sees a half-written version, even when the export is killed. The next export
removes the temporary folders of killed exports (:func:`remove_abandoned_exports`).

Example:
    >>> from maivar_tf.config import load_config
    >>> cfg = load_config("configs/synthetic.yaml")
    >>> path = export_run(cfg, run_dir="runs/synthetic", export_dir="export")  # doctest: +SKIP
    >>> served = tf.saved_model.load(str(path))                               # doctest: +SKIP
    >>> served.signatures["serve_media"](frames=..., audio_image=...)          # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from maivar_tf.artifacts import LABELS_ASSET, ExportInfo
from maivar_tf.runs import RunError, ServableRun, load_servable_run
from maivar_tf.utils import owner_is_gone, owner_tag

_VERSION_RE = re.compile(r"^\d+$")
#: A version being written: ``.tmp-<version>-<owner tag>-<random>`` (``tempfile`` has no "-").
_TMP_RE = re.compile(r"^\.tmp-\d+-(?P<owner>.+-\d+)-[^-]+$")


class ExportError(RunError):
    """A run that cannot be exported or served as asked; the message says why and what to do."""


def next_version(model_dir: str | Path) -> int:
    """The next free integer version under ``model_dir`` (1 when there is none)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return 1
    versions = [int(p.name) for p in model_dir.iterdir()
                if p.is_dir() and _VERSION_RE.match(p.name)]
    return max(versions, default=0) + 1


def _version_dir(export_dir: str | Path, model_name: str, version: int | None) -> Path:
    """``export_dir/model_name/version`` after checking the name and that it is free."""
    if not model_name or "/" in model_name or model_name in (".", ".."):
        raise ExportError(f"model name {model_name!r}: allowed: a plain folder name")
    model_dir = Path(export_dir) / model_name
    version = next_version(model_dir) if version is None else int(version)
    if version < 0:
        raise ExportError(f"version {version}: allowed: an integer >= 0")
    final = model_dir / str(version)
    if final.exists():
        raise ExportError(f"{final} already exists; pass another --version or leave it out "
                          f"for the next free one ({next_version(model_dir)})")
    return final


def remove_abandoned_exports(model_dir: str | Path) -> list[Path]:
    """Deletes the temporary folders of killed exports under ``model_dir``; returns them.

    Only folders whose writer has ended on this host go
    (:func:`maivar_tf.utils.owner_is_gone`); an export still running keeps its folder.
    """
    model_dir = Path(model_dir)
    gone = [p for p in sorted(model_dir.glob(".tmp-*")) if p.is_dir()
            and (m := _TMP_RE.match(p.name)) and owner_is_gone(m["owner"])]
    for path in gone:
        shutil.rmtree(path, ignore_errors=True)
    return gone


def serving_module(run: ServableRun, labels_file: str | None = None):
    """The :class:`~maivar_tf.serving.module.ServingModule` of ``run``.

    Args:
        run: the run to serve.
        labels_file: the labels file the class table reads (an export's asset); None builds
            the table from the class list (in-memory use).

    Raises:
        ExportError: the run's class names, fusion head and K do not fit together.
    """
    from maivar_tf.serving.module import ServingModule
    from maivar_tf.serving.selector import SegmentSelector, effective_budget

    try:
        selector = None
        if effective_budget(run.selection, run.budget, run.num_segments) is not None:
            selector = SegmentSelector(run.selection, run.budget, run.num_segments, run.fusion,
                                       preview=run.preview, scorer=run.saliency)
        return ServingModule(run.fusion, run.video, run.audio, run.class_names, run.cfg.data,
                             representation=run.representation, num_segments=run.num_segments,
                             ten_crop=run.ten_crop, labels_file=labels_file,
                             temperature=run.temperature, silent_audio=run.silent_audio,
                             localiser=run.localiser, selector=selector)
    except ValueError as e:  # the run's parts do not fit together
        raise ExportError(str(e)) from e


def export_info(module, run: ServableRun, model_name: str, version: int) -> ExportInfo:
    """The :class:`~maivar_tf.artifacts.ExportInfo` record of an exported ``module``."""
    from maivar_tf.serving.module import describe_signatures

    return ExportInfo(model_name=model_name, version=int(version),
                      class_names=module.class_names, num_segments=module.num_segments,
                      representation=module.representation, ten_crop=module.ten_crop,
                      top_k=module.top_k,
                      signatures=describe_signatures(module.input_signatures()),
                      outputs=module.output_keys, provenance=dict(run.provenance),
                      config=run.cfg.to_dict(), temperature=module.temperature)


def export_servable(run: ServableRun, export_dir: str | Path, model_name: str,
                    version: int | None = None) -> Path:
    """Writes ``run`` as a SavedModel to ``export_dir/model_name/version/``.

    Args:
        run: the run with its backbones.
        export_dir: the model base path's parent (TF Serving's ``--model_base_path`` is
            ``export_dir/model_name``).
        model_name: the served model's name.
        version: an integer version; default: the next free one.

    Returns:
        The version folder.

    Raises:
        ExportError: ``version`` already exists or is negative, or ``model_name`` is not a
            plain folder name.
    """
    import keras

    final = _version_dir(export_dir, model_name, version)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_exports(final.parent)
    # TF Serving only loads all-digit folders: build under a dot-name, rename when complete.
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-{owner_tag()}-", dir=final.parent))
    try:
        labels = tmp / LABELS_ASSET
        labels.write_text("".join(f"{c}\n" for c in run.class_names))
        module = serving_module(run, labels_file=str(labels))
        archive = keras.export.ExportArchive()
        # The endpoints capture every variable they use; the table must be tracked.
        archive.track(module.label_table)
        for name, fn in module.signatures().items():
            archive.add_endpoint(name, fn)
        out = tmp / "model"
        archive.write_out(str(out), verbose=False)
        export_info(module, run, model_name, int(final.name)).write(out)
        os.replace(out, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def export_run(cfg, run_dir: str | Path, export_dir: str | Path = "export",
               model_name: str | None = None, version: int | None = None, *,
               features_dir: str | Path | None = None) -> Path:
    """``maivar export``: a trained run -> ``export_dir/<model_name>/<version>/`` SavedModel.

    Args:
        cfg: the experiment (:class:`~maivar_tf.config.ExperimentConfig`); the run's own
            config wins for the preprocessing (see :func:`maivar_tf.runs.load_servable_run`).
        run_dir: the trained run (``fusion.keras``, ``run_info.json``).
        export_dir: TF Serving's model base path's parent.
        model_name: default ``cfg.name``.
        version: default the next free integer.
        features_dir: the run's features (for the backbones); default: the run's.

    Returns:
        The written version folder.
    """
    run = load_servable_run(cfg, run_dir, features_dir=features_dir)
    return export_servable(run, export_dir, model_name or cfg.name, version)


# ----------------------------------------------------------------------------- reading back


def resolve_saved_model_dir(path: str | Path) -> Path:
    """A version folder, or a model folder (its highest version is taken).

    Raises:
        FileNotFoundError: ``path`` holds neither ``saved_model.pb`` nor version folders.
    """
    path = Path(path)
    if (path / "saved_model.pb").exists():
        return path
    if path.is_dir():
        versions = sorted(int(p.name) for p in path.iterdir()
                          if p.is_dir() and _VERSION_RE.match(p.name)
                          and (p / "saved_model.pb").exists())
        if versions:
            return path / str(versions[-1])
    raise FileNotFoundError(f"{str(path)!r} holds no SavedModel (saved_model.pb) nor numbered "
                            "version folders; pass EXPORT_DIR/<model_name>/<version>")


def read_export_info(saved_model_dir: str | Path) -> ExportInfo:
    """The :class:`~maivar_tf.artifacts.ExportInfo` beside a SavedModel.

    Raises:
        FileNotFoundError: ``saved_model_dir`` holds no ``assets.extra/maivar_export.json``.
    """
    return ExportInfo.read(saved_model_dir)


def export_config(saved_model_dir: str | Path):
    """The experiment config recorded in an export (the preprocessing for ``maivar predict``)."""
    from maivar_tf.config import config_from_json_dict

    return config_from_json_dict(read_export_info(saved_model_dir).config)


"""The serving tests' shared artefacts: one tiny run on disk, exported once per session."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.serving.helpers import MODEL_NAME, write_tiny_run


@pytest.fixture(scope="session")
def tiny(tmp_path_factory, clip_paths) -> SimpleNamespace:
    """The tiny run (see :mod:`tests.serving.helpers`), centre crop."""
    return write_tiny_run(tmp_path_factory.mktemp("tiny_run"), clip_paths)


@pytest.fixture(scope="session")
def exported(tiny, tmp_path_factory) -> SimpleNamespace:
    """The tiny run written by the exporter and loaded back with ``tf.saved_model.load``."""
    import tensorflow as tf

    from maivar_tf.serving import export_servable

    export_dir = tmp_path_factory.mktemp("export")
    path = export_servable(tiny.run, export_dir, MODEL_NAME)
    return SimpleNamespace(export_dir=export_dir, path=path,
                           loaded=tf.saved_model.load(str(path)))


@pytest.fixture(scope="session")
def module(tiny):
    """The tiny run's in-memory :class:`~maivar_tf.serving.ServingModule` (key/value labels)."""
    from maivar_tf.serving import serving_module

    return serving_module(tiny.run)


@pytest.fixture(scope="session")
def tb(tmp_path_factory, clip_paths, tiny) -> SimpleNamespace:
    """The tiny temporal-binding run with a localiser (see :mod:`tests.serving.temporal_run`),
    its localiser's background bias set on the AVE speech clip's segments."""
    from tests.serving.temporal_run import segment_media, temporal_config, write_temporal_run

    root = tmp_path_factory.mktemp("tb_run")
    ave = [p for p in clip_paths if p.name.startswith("ave_")]
    calibration = segment_media(temporal_config(root), ave)[0]
    return write_temporal_run(root, clip_paths, tiny.video_bb, tiny.audio_bb, calibration)


@pytest.fixture(scope="session")
def tb_module(tb):
    """The temporal-binding run's in-memory :class:`~maivar_tf.serving.ServingModule`."""
    from maivar_tf.serving import serving_module

    return serving_module(tb.run)


@pytest.fixture(scope="session")
def tb_export(tb, tmp_path_factory):
    """The temporal-binding run exported: ``(version folder, tf.saved_model.load of it)``."""
    import tensorflow as tf

    from maivar_tf.serving import export_servable
    from tests.serving.temporal_run import TB_MODEL_NAME

    path = export_servable(tb.run, tmp_path_factory.mktemp("tb_export"), TB_MODEL_NAME)
    return path, tf.saved_model.load(str(path))

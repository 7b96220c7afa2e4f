"""``maivar export`` killed by SIGKILL mid-write leaves no version TF Serving would load.

The export runs in a child process (:func:`tests.crash.run_killed`) that dies right after the
SavedModel is written under its temporary name, before the rename that publishes it: the
moment a complete-looking model sits in the model folder.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from maivar_tf.artifacts import ExportInfo
from maivar_tf.serving import export_servable, next_version, resolve_saved_model_dir
from tests.crash import run_killed
from tests.serving.helpers import MODEL_NAME


def served_versions(model_dir: Path) -> list[str]:
    """The folders TF Serving takes as versions: integer names (it then needs saved_model.pb)."""
    return sorted(p.name for p in model_dir.iterdir()
                  if p.is_dir() and re.fullmatch(r"-?\d+", p.name))


@pytest.mark.slow
def test_killed_export_leaves_no_loadable_version_and_the_next_export_cleans_up(tiny, tmp_path):
    export_dir = tmp_path / "export"
    model_dir = export_dir / MODEL_NAME
    (model_dir / "1").mkdir(parents=True)  # an earlier export (its content does not matter)
    (model_dir / "1" / "saved_model.pb").write_bytes(b"v1")
    run_killed(f"""
        from pathlib import Path
        import keras
        from maivar_tf.runs import load_servable_run
        from maivar_tf.serving import export_servable
        from tests.serving.helpers import MODEL_NAME, tiny_config
        from tests.tiny_models import tiny_audio_backbone, tiny_video_backbone
        # ExportArchive() makes the backend's archive; its write_out writes the SavedModel.
        kill_on_call(type(keras.export.ExportArchive()), "write_out", 1, after=True)
        cfg = tiny_config(Path({str(tiny.run_dir.parent)!r}))
        run = load_servable_run(cfg, cfg.train.output_dir,
                                backbones=(tiny_video_backbone(), tiny_audio_backbone()))
        export_servable(run, {str(export_dir)!r}, MODEL_NAME)
        """)
    written = list(model_dir.glob(".*/**/saved_model.pb"))
    assert written, "the child died before the SavedModel was written"
    assert served_versions(model_dir) == ["1"]
    assert resolve_saved_model_dir(model_dir) == model_dir / "1"
    assert next_version(model_dir) == 2

    path = export_servable(tiny.run, export_dir, MODEL_NAME)
    assert path == model_dir / "2" and (path / "saved_model.pb").is_file()
    assert ExportInfo.read(path).version == 2
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2"], (
        "the killed export's temporary folder was not removed")

"""The maivar command: sub-commands and flags, typed calls, config errors, quiet start-up."""

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from maivar_tf.cli import build_parser, main, parse_args
from maivar_tf.config import DEFAULT_CONFIG, ExperimentConfig
from maivar_tf.console import VERBOSE_ENV
from tests.test_config import BAD_YAML_KINDS, bad_yaml

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("synth", "build", "extract", "train", "evaluate", "ablate", "sweep", "export",
            "predict", "convert-weights", "demo")
#: TensorFlow's native start-up lines (the oneDNN notice, absl's pre-init warning, CUDA probes).
BANNER_MARKERS = ("onednn", "absl::initializelog", "cuda")


def test_every_command_is_listed(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in COMMANDS:
        assert cmd in out


@pytest.mark.parametrize("cmd", ["train", "extract", "evaluate", "synth", "demo", "sweep"])
def test_bad_override_exits_2_naming_the_field(cmd, capsys):
    assert main([cmd, "--set", "train.strategy=tpu"]) == 2
    err = capsys.readouterr().err
    assert "maivar: invalid config: train.strategy: invalid value 'tpu'" in err
    assert "allowed: auto, default, mirrored, multi_worker" in err


def test_a_moved_key_names_its_new_place(capsys):
    assert main(["train", "--set", "train.vmlp_epochs=3"]) == 2
    assert "train.vmlp_epochs: moved to train.video.epochs" in capsys.readouterr().err


def test_missing_config_file_is_one_line(capsys):
    assert main(["train", "--config", "does/not/exist.yaml"]) == 1
    assert "No such file or directory: 'does/not/exist.yaml'" in capsys.readouterr().err


#: Every command that reads the config, with the arguments it needs besides.
CONFIG_COMMANDS = (["train"], ["extract"], ["evaluate"], ["export"], ["sweep"], ["synth"],
                   ["demo"], ["build"], ["predict", "clip.mp4"], ["ablate", "--over", "fusion"])


@pytest.mark.parametrize("kind", BAD_YAML_KINDS)
@pytest.mark.parametrize("command", CONFIG_COMMANDS, ids=lambda c: c[0])
def test_unreadable_yaml_is_one_line_with_line_and_column(command, kind, capsys, tmp_path):
    flags, message, marker = bad_yaml(tmp_path, kind)
    assert main([*command, *flags]) == 2  # returned: no exception, so no traceback
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"maivar: invalid config: {message}"]
    assert captured.out == ""
    assert not marker.exists()


def test_unreadable_yaml_in_a_real_process_is_one_line(tmp_path):
    flags, message, marker = bad_yaml(tmp_path, "set-tag")
    proc = _maivar("train", *flags, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"maivar: invalid config: {message}"]
    assert not marker.exists()


def test_ablate_and_its_sweep_alias_call_run_ablation(monkeypatch, tmp_path, capsys):
    import maivar_tf.ablation

    seen = []

    def fake(cfg, over, values, seeds):
        seen.append((over, values, seeds, cfg.train.seed))
        return {"name": cfg.name, "axis": over, "baseline": "vmlp_init", "seeds": [0],
                "values": ["late"], "cells": [], "seconds": 1.0,
                "rows": {"late": {k: {"mean": 0.5, "std": None} for k in (
                    "video_top1", "audio_top1", "fusion_top1", "epochs_to_95")}
                    | {"fusion_vs_baseline": None}}}

    monkeypatch.setattr(maivar_tf.ablation, "run_ablation", fake)
    monkeypatch.chdir(tmp_path)
    assert main(["ablate", "--over", "fusion", "--values", "late,gated", "--seeds", "2",
                 "--set", "train.seed=4"]) == 0
    assert "| late | 50.00 | 50.00 | **50.00** | n/a (baseline not run) | 0.5 |" in \
        capsys.readouterr().out
    assert main(["sweep", "--representations", "mfcc"]) == 0
    assert main(["sweep"]) == 0
    assert seen == [("fusion", ["late", "gated"], 2, 4), ("representation", ["mfcc"], 3, 0),
                    ("representation", None, 3, 0)]
    for argv in (["ablate", "--over", "dropout"], ["ablate", "--over", "fusion", "--seeds", "0"],
                 ["ablate"]):
        with pytest.raises(SystemExit):
            parse_args(argv)


def test_predict_arguments():
    args = build_parser().parse_args(["predict", "a.mp4", "b.mkv", "--json", "--top-k", "3",
                                      "--saved-model", "export/x/1"])
    assert args.videos == ["a.mp4", "b.mkv"] and args.json and args.top_k == 3
    assert args.saved_model == "export/x/1" and args.run_dir is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "a.mp4", "--run-dir", "r", "--saved-model", "s"])


def test_verbose_before_or_after_the_command_and_unknown_flags(capsys):
    assert parse_args(["--verbose", "train"]).verbose
    assert parse_args(["train", "--verbose"]).verbose
    assert not parse_args(["train"]).verbose
    with pytest.raises(SystemExit):
        parse_args(["train", "--bogus"])
    assert "maivar train: error: unrecognized arguments: --bogus" in capsys.readouterr().err


def test_build_gets_the_config_resolved_once_and_the_extra_flags(monkeypatch, tmp_path):
    calls = []
    fake = types.SimpleNamespace(main=lambda argv: calls.append(argv) or 0)
    monkeypatch.setitem(sys.modules, "beam.build_tfrecords", fake)
    monkeypatch.chdir(REPO)  # holds the default config
    assert main(["build", "--set", "data.num_shards=1", "--limit", "3"]) == 0
    assert calls[-1] == ["--runner=DirectRunner", f"--config={DEFAULT_CONFIG}",
                         "--set", "data.num_shards=1", "--limit", "3"]
    monkeypatch.chdir(tmp_path)  # no default config here: the built-in defaults
    assert main(["build"]) == 0
    assert calls[-1] == ["--runner=DirectRunner"]


def test_convert_weights_passes_every_argument_through(monkeypatch):
    import maivar_tf.convert

    seen = []
    monkeypatch.setattr(maivar_tf.convert, "main", lambda argv: seen.append(argv) or 0)
    monkeypatch.setenv(VERBOSE_ENV, "")  # restored after the test
    assert main(["--verbose", "convert-weights", "a.pth", "b.weights.h5", "--layout", "tsn"]) == 0
    assert seen == [["a.pth", "b.weights.h5", "--layout", "tsn"]]
    assert os.environ[VERBOSE_ENV] == "1"


def test_predict_and_export_call_typed_functions(monkeypatch, tmp_path):
    import maivar_tf.predict
    import maivar_tf.serving.export

    got = {}
    monkeypatch.setattr(maivar_tf.predict, "predict_command",
                        lambda videos, **kw: got.update(predict=(videos, kw)) or 0)
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "a.mp4", "--saved-model", "s/1", "--top-k", "3", "--json",
                 "--set", "data.num_segments=4"]) == 0
    assert got["predict"] == (["a.mp4"], {
        "cfg_path": None, "overrides": ["data.num_segments=4"], "run_dir": None,
        "saved_model": "s/1", "top_k": 3, "as_json": True, "segments": False})
    assert main(["predict", "a.mp4", "--saved-model", "s/1", "--segments"]) == 0
    assert got["predict"][1]["segments"] is True

    def fake_export(cfg, run_dir, export_dir, *, model_name, version):
        got["export"] = (cfg, run_dir, export_dir, model_name, version)
        return Path(export_dir) / model_name / str(version)

    monkeypatch.setattr(maivar_tf.serving.export, "export_run", fake_export)
    assert main(["export", "--run-dir", "r", "--version", "7",
                 "--set", "train.output_dir=elsewhere"]) == 0
    cfg, run_dir, export_dir, model_name, version = got["export"]
    assert isinstance(cfg, ExperimentConfig) and cfg.train.output_dir == "elsewhere"
    assert (run_dir, export_dir, model_name, version) == (Path("r"), "export", cfg.name, 7)


def _maivar(*argv: str, cwd: Path, verbose_env: str = "") -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("maivar")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "maivar_tf.cli"]
    env = {**os.environ, VERBOSE_ENV: verbose_env, "PYTHONUNBUFFERED": "1"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # a user's shell does not set it either
    return subprocess.run(cmd + list(argv), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def _banner_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if any(m in line.lower() for m in BANNER_MARKERS)]


@pytest.mark.slow
def test_a_real_command_starts_quietly_and_verbose_shows_the_banner(tmp_path):
    quiet = _maivar("evaluate", "--run-dir", str(tmp_path / "none"), cwd=tmp_path)
    assert quiet.returncode == 1
    assert _banner_lines(quiet.stderr) == [], quiet.stderr
    assert quiet.stderr.splitlines() == [quiet.stderr.strip()]  # one line: the error
    assert quiet.stderr.startswith("maivar: incomplete run in ")
    loud = _maivar("--verbose", "evaluate", "--run-dir", str(tmp_path / "none"), cwd=tmp_path)
    assert loud.returncode == 1
    assert _banner_lines(loud.stderr), loud.stderr


def test_progress_is_periodic_lines_when_not_a_terminal(tmp_path):
    synth = ["data.synth.num_motions=1", "data.synth.num_sounds=1", "data.synth.seconds=0.5",
             "data.synth.train_per_class=2", "data.synth.test_per_class=1"]
    proc = _maivar("synth", "--out", str(tmp_path / "videos"),
                   *[x for s in synth for x in ("--set", s)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr  # no carriage-return redraws in a log
    assert [line for line in proc.stderr.splitlines() if "3/3 videos" in line], proc.stderr


# ----------------------------------------------------------------------------- unsafe model files


@pytest.fixture(scope="module")
def lambda_run(tmp_path_factory, clip_paths):
    """The tiny serving run whose ``fusion.keras`` ends in a ``Lambda`` layer (a Python lambda)."""
    import keras

    from tests.serving.helpers import write_tiny_run

    tiny = write_tiny_run(tmp_path_factory.mktemp("lambda_run"), clip_paths)
    fusion = tiny.run.fusion
    unsafe = keras.Model(fusion.inputs, keras.layers.Lambda(lambda x: x * 1.0)(fusion.output))
    unsafe.save(tiny.run_dir / "fusion.keras")
    # the control: the file is a sound model that only safe mode refuses
    loaded = keras.saving.load_model(tiny.run_dir / "fusion.keras", safe_mode=False)
    assert isinstance(loaded.layers[-1], keras.layers.Lambda)
    return tiny


def _refused(path: Path) -> str:
    return (f"{path}: refused by Keras' safe mode: it holds a `Lambda` layer whose `function` is "
            "a Python lambda, which could run arbitrary code when loaded; maivar loads only "
            "safe model files (save the model without it, e.g. retrain with `maivar train`)")


@pytest.mark.parametrize("command,prefix", [
    (["evaluate"], "maivar: "),
    (["export", "--export-dir", "export"], "maivar: "),
    (["predict", "CLIP"], "maivar: cannot load the model: "),
])
def test_a_model_refused_by_safe_mode_is_one_line(command, prefix, lambda_run, clip_paths,
                                                  capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no default config: the run's own
    argv = [str(clip_paths[0]) if a == "CLIP" else a for a in command]
    assert main([*argv, "--run-dir", str(lambda_run.run_dir)]) == 1  # returned: no traceback
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [prefix + _refused(lambda_run.run_dir / "fusion.keras")]
    assert not (tmp_path / "export").exists()


def test_a_head_that_is_not_a_keras_file_is_one_line(tmp_path):
    from maivar_tf.runs import RunError, load_head

    path = tmp_path / "fusion.keras"
    path.write_bytes(b"not a zip")
    with pytest.raises(RunError) as e:
        load_head(path)
    assert str(e.value) == (f"{path}: not a Keras model file (a .keras file is a zip archive); "
                            "retrain with `maivar train`")

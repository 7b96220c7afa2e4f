"""The maivar command: sub-commands listed, config errors exit 2 naming the field."""

import pytest

from maivar_tf.cli import build_parser, main

COMMANDS = ("synth", "build", "extract", "train", "evaluate", "sweep", "export", "predict",
            "convert-weights", "demo")


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


def test_missing_config_file_is_one_line(capsys):
    assert main(["train", "--config", "does/not/exist.yaml"]) == 1
    assert "No such file or directory: 'does/not/exist.yaml'" in capsys.readouterr().err


def test_predict_arguments():
    args = build_parser().parse_args(["predict", "a.mp4", "b.mkv", "--json", "--top-k", "3",
                                      "--saved-model", "export/x/1"])
    assert args.videos == ["a.mp4", "b.mkv"] and args.json and args.top_k == 3
    assert args.saved_model == "export/x/1" and args.run_dir is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "a.mp4", "--run-dir", "r", "--saved-model", "s"])

"""Config loading: every shipped YAML loads, bad keys/values fail naming the field, old flat
keys name their new section, partial sections keep their defaults, one default config file;
YAML syntax errors and Python tags (never run) are one-line errors with line and column."""

import re
from pathlib import Path

import pytest
import yaml

from maivar_tf.config import (
    DEFAULT_CONFIG,
    MOVED_KEYS,
    REPRESENTATIONS,
    ConfigError,
    ExperimentConfig,
    StageConfig,
    TrainConfig,
    config_from_json_dict,
    load_config,
    resolve_config_path,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["synthetic", "ucf51", "kinetics_sounds"])
def test_shipped_configs_load_and_round_trip(name):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert cfg.name == name
    assert config_from_json_dict(cfg.to_dict()) == cfg


def test_paper_defaults_in_ucf51():
    cfg = load_config(ROOT / "configs" / "ucf51.yaml")
    assert cfg.data.num_segments == 25
    assert cfg.model.hidden_units == 1024
    assert cfg.train.video.learning_rate == pytest.approx(1e-4)
    assert cfg.train.fusion.learning_rate == pytest.approx(3e-5)
    assert (cfg.train.video.batch_size, cfg.train.fusion.batch_size) == (512, 768)
    assert cfg.model.representation == "chromagram"
    assert set(cfg.data.representations) == set(REPRESENTATIONS)


def test_defaults_without_file():
    cfg = load_config(None)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.data.audio.sample_rate == 22050
    assert cfg.data.audio.image_size == 299


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.nope=1", "data.nope: unknown key; allowed keys in data: dataset"),
        ("nope=1", "nope: unknown key; allowed keys: name, data, model, extract, train"),
        ("train.strategy=foo", "train.strategy: invalid value 'foo'; allowed: auto, default, "
                               "mirrored, multi_worker"),
        ("data.dataset=hmdb", "data.dataset: invalid value 'hmdb'"),
        ("data.representations=[chromagram,cqt]", "data.representations: invalid value 'cqt'"),
        ("data.audio.colormap=jet", "audio.colormap: invalid value 'jet'"),
        ("data.num_segments=0", "data.num_segments: invalid value 0"),
        ("data.num_segments=2.5", "data.num_segments: invalid value 2.5; allowed: an integer"),
        ("model.dropout=1.5", "model.dropout: invalid value 1.5"),
        ("model.video_weights=imagenet", "model.video_weights: 'imagenet' is not available"),
        ("model.video_pooling=max", "model.video_pooling: invalid value 'max'; allowed: mean, "
                                    "flatten"),
        ("data.crop_size=300", "data.crop_size: 300 > frame_short_side 256"),
        ("train.store=1", "train.store: unknown key"),
        ("data.synth.width=161", "synth.width/height: 161x120"),
        ("train.video.epochs=0", "train.video.epochs: invalid value 0; allowed: a number > 0"),
        ("train.fusion.learning_rate=-1", "train.fusion.learning_rate: invalid value -1.0"),
        ("train.audio.nope=1", "train.audio.nope: unknown key; allowed keys in train.audio: "
                               "epochs, learning_rate, batch_size"),
        ("train.video=3", "train.video: expected a mapping, got 3"),
        ("extract.batch_size=0", "extract.batch_size: invalid value 0"),
        ("extract.ten_crop=maybe", "extract.ten_crop: invalid value 'maybe'; allowed: true, false"),
    ],
)
def test_bad_values_name_the_field(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "configs" / "synthetic.yaml", [override])
    assert message in str(err.value)


def test_representation_must_be_rendered():
    with pytest.raises(ConfigError, match="model.representation: 'mfcc' is not rendered"):
        load_config(None, ["data.representations=[chromagram]", "model.representation=mfcc"])


def test_overrides_are_typed():
    cfg = load_config(None, ["train.video.epochs=3", "train.fusion.learning_rate=1e-3",
                             "data.store_waveform=true", "data.representations=chromagram",
                             "extract.batch_size=4", "extract.ten_crop=yes"])
    assert cfg.train.video.epochs == 3
    assert cfg.train.fusion.learning_rate == pytest.approx(1e-3)
    assert (cfg.extract.batch_size, cfg.extract.ten_crop) == (4, True)
    assert cfg.data.store_waveform is True
    assert cfg.data.representations == ("chromagram",)


def test_frozen():
    cfg = load_config(None)
    with pytest.raises(AttributeError):
        cfg.data.num_segments = 3  # type: ignore[misc]


def test_yaml_top_level_must_be_mapping(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(p)


#: The ways a config's YAML can be unreadable: in the file or in a ``--set`` value.
BAD_YAML_KINDS = ("file-syntax", "file-tag", "set-syntax", "set-tag")
_TAG_REFUSED = ("could not determine a constructor for the tag 'tag:yaml.org,2002:python/"
                "object/apply:os.system' (a config holds plain values; Python tags are refused,"
                " never run)")


def bad_yaml(tmp_path: Path, kind: str) -> tuple[list[str], str, Path]:
    """A bad config of ``kind`` (one of :data:`BAD_YAML_KINDS`).

    Returns:
        ``(flags, message, marker)``: the ``--config``/``--set`` flags that give it, the
        one-line message expected after ``invalid config: ``, and the file the Python tag
        would create if it were run.
    """
    marker = tmp_path / "tag-was-run"
    tag = f'!!python/object/apply:os.system ["touch {marker}"]'
    path = tmp_path / f"{kind}.yaml"
    if kind == "file-syntax":
        path.write_text("name: tiny\ntrain:\n  video: {epochs: [1, 2}\n")
        return ["--config", str(path)], (
            f"{path} line 3 column 24: expected ',' or ']', but got '}}' (while parsing a flow "
            "sequence started at line 3 column 19)"), marker
    if kind == "file-tag":
        path.write_text(f"train:\n  strategy: auto\nname: {tag}\n")
        return ["--config", str(path)], f"{path} line 3 column 7: {_TAG_REFUSED}", marker
    if kind == "set-syntax":
        return ["--set", "train.video.epochs=["], (
            "--set train.video.epochs=[: line 1 column 2: expected the node content, but found "
            "'<stream end>' (while parsing a flow node started at line 1 column 2)"), marker
    assert kind == "set-tag", kind
    return ["--set", f"name={tag}"], f"--set name={tag}: line 1 column 1: {_TAG_REFUSED}", marker


def _load(flags: list[str]) -> ExperimentConfig:
    """``load_config`` with the ``--config``/``--set`` flags of :func:`bad_yaml`."""
    path = flags[1] if flags[0] == "--config" else None
    return load_config(path, overrides=[flags[1]] if flags[0] == "--set" else [])


@pytest.mark.parametrize("kind", BAD_YAML_KINDS)
def test_unreadable_yaml_is_a_config_error_with_line_and_column(kind, tmp_path):
    flags, message, marker = bad_yaml(tmp_path, kind)
    with pytest.raises(ConfigError) as e:
        _load(flags)
    assert str(e.value) == message
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no chained traceback
    assert not marker.exists()


def test_the_python_tag_would_run_if_it_were_not_refused(tmp_path):
    # the control for the tests above: the same tag under PyYAML's unsafe loader runs
    flags, _, marker = bad_yaml(tmp_path, "file-tag")
    yaml.unsafe_load(Path(flags[1]).read_text())
    assert marker.exists()


def test_a_control_character_or_non_utf8_file_names_where(tmp_path):
    p = tmp_path / "ctrl.yaml"
    p.write_text('name: tiny\ndata: {dataset: "ab\x01"}\n')
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == f"{p} line 2 column 20: special characters are not allowed"
    p.write_bytes(b"name: \xff\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == f"{p}: not UTF-8 text (byte 7: invalid start byte)"


#: Every flat key of the layout before stage sections, and where it lives now.
MOVED_CASES = [
    ("train.vmlp_epochs", "train.video.epochs"),
    ("train.vmlp_lr", "train.video.learning_rate"),
    ("train.vmlp_batch_size", "train.video.batch_size"),
    ("train.audio_epochs", "train.audio.epochs"),
    ("train.audio_lr", "train.audio.learning_rate"),
    ("train.audio_batch_size", "train.audio.batch_size"),
    ("train.fusion_epochs", "train.fusion.epochs"),
    ("train.fusion_lr", "train.fusion.learning_rate"),
    ("train.fusion_batch_size", "train.fusion.batch_size"),
    ("train.extract_batch_size", "extract.batch_size"),
    ("model.ten_crop", "extract.ten_crop"),
]


def test_every_moved_key_is_listed():
    assert MOVED_KEYS == dict(MOVED_CASES)


@pytest.mark.parametrize("old, new", MOVED_CASES)
def test_a_flat_key_of_the_old_layout_names_its_new_place(old, new, tmp_path):
    value = "true" if old.endswith("ten_crop") else "3"
    with pytest.raises(ConfigError, match=f"^{old}: moved to {new} "):
        load_config(None, [f"{old}={value}"])
    section, key = old.split(".")
    yaml_file = tmp_path / "old.yaml"  # the same in a YAML file
    yaml_file.write_text(f"{section}:\n  {key}: {value}\n")
    with pytest.raises(ConfigError, match=f"^{old}: moved to {new} "):
        load_config(yaml_file)


def test_stage_sections_are_one_class_with_the_papers_defaults():
    tc = TrainConfig()
    assert all(isinstance(tc.stage(s), StageConfig) for s in ("audio", "video", "fusion"))
    assert tc.video == StageConfig(epochs=30, learning_rate=1e-4, batch_size=512)
    assert tc.fusion == StageConfig(epochs=30, learning_rate=3e-5, batch_size=768)
    with pytest.raises(ConfigError, match="train.stage: invalid value 'vmlp'"):
        tc.stage("vmlp")


def test_a_partial_stage_section_keeps_the_defaults_it_leaves_out(tmp_path):
    p = tmp_path / "partial.yaml"
    p.write_text("train:\n  fusion:\n    epochs: 5\n  video:\n    batch_size: 32\n")
    cfg = load_config(p)
    assert cfg.train.fusion == StageConfig(epochs=5, learning_rate=3e-5, batch_size=768)
    assert cfg.train.video == StageConfig(epochs=30, learning_rate=1e-4, batch_size=32)
    assert cfg.train.audio == TrainConfig().audio
    # an override of one stage field keeps the file's other fields
    over = load_config(p, ["train.fusion.learning_rate=1e-3"])
    assert over.train.fusion == StageConfig(epochs=5, learning_rate=1e-3, batch_size=768)
    assert config_from_json_dict(over.to_dict()) == over


def test_the_default_config_is_resolved_in_one_place(tmp_path, monkeypatch):
    assert resolve_config_path("mine.yaml") == "mine.yaml"  # given: used as it is
    assert resolve_config_path(tmp_path / "x.yaml") == str(tmp_path / "x.yaml")
    monkeypatch.chdir(ROOT)  # has configs/synthetic.yaml
    assert resolve_config_path(None) == DEFAULT_CONFIG == "configs/synthetic.yaml"
    assert load_config(resolve_config_path(None)).name == "synthetic"
    monkeypatch.chdir(tmp_path)  # no default file: the built-in defaults
    assert resolve_config_path(None) is None


# ----------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("overrides, message", [
    (["train.finetune=video"], "train.finetune: 'video' fine-tunes backbones, which only an "
                               "end-to-end run has"),
    (["train.end_to_end=true", "train.finetune=all"], "train.finetune: invalid value 'all'"),
    (["train.end_to_end=true", "model.fusion=late"], "model.fusion: 'late' is not trained "
                                                     "end to end"),
    (["train.end_to_end=true", "extract.ten_crop=true"], "extract.ten_crop: True is a "
                                                         "feature-path option"),
    (["train.end_to_end=true", "train.backbone_lr_multiplier=0"],
     "train.backbone_lr_multiplier"),
])
def test_end_to_end_settings_are_checked_by_name(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, overrides=overrides)


def test_end_to_end_defaults_and_overrides():
    cfg = load_config(None, overrides=["train.end_to_end=true", "train.finetune=both",
                                       "train.jit_compile=true", "train.partial_bn=false"])
    t = cfg.train
    assert (t.end_to_end, t.finetune, t.jit_compile, t.partial_bn) == (True, "both", True, False)
    assert t.backbone_lr_multiplier == 0.1
    assert load_config(None).train.finetune == "none"


def test_ablation_refuses_end_to_end():
    from maivar_tf.ablation import run_ablation

    cfg = load_config(None, overrides=["train.end_to_end=true"])
    with pytest.raises(ConfigError, match="train.end_to_end: an ablation trains"):
        run_ablation(cfg, "fusion")

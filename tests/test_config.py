"""Config loading: every shipped YAML loads, bad keys/values fail naming the field, old flat
keys name their new section, partial sections keep their defaults, one default config file."""

from pathlib import Path

import pytest

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

"""Config loading: every shipped YAML loads, bad keys/values fail naming the field."""

from pathlib import Path

import pytest

from maivar_tf.config import (
    REPRESENTATIONS,
    ConfigError,
    ExperimentConfig,
    config_from_json_dict,
    load_config,
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
    assert cfg.train.vmlp_lr == pytest.approx(1e-4)
    assert cfg.train.fusion_lr == pytest.approx(3e-5)
    assert (cfg.train.vmlp_batch_size, cfg.train.fusion_batch_size) == (512, 768)
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
        ("nope=1", "nope: unknown key; allowed keys: name, data, model, train"),
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
    cfg = load_config(None, ["train.vmlp_epochs=3", "train.fusion_lr=1e-3",
                             "data.store_waveform=true", "data.representations=chromagram"])
    assert cfg.train.vmlp_epochs == 3
    assert cfg.train.fusion_lr == pytest.approx(1e-3)
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

"""The audio backbones ``model.audio_backbone`` chooses from: table, preprocessing, builds.

The cheap ones are built at 32-64 px (ResNet18, ResNet50V2, ResNet50, EfficientNetB0,
MobileNetV3Small); the
others (ResNet101/152, EfficientNetB1-B7) are checked through the table only: feature widths
transcribed here from the Keras application docs, and the preprocessing of every row against
its family's own ``keras.applications.<family>.preprocess_input``.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from maivar_tf.config import AUDIO_BACKBONES, ConfigError, ModelConfig, load_config
from maivar_tf.models.audio_backbones import (
    AUDIO_BACKBONE_TABLE,
    DEFAULT_AUDIO_BACKBONE,
    build_audio_image_backbone,
    preprocessing_layer,
)
from maivar_tf.models.backbones import backbone_spec, init_backbone, restore_backbone
from maivar_tf.models.weights import WeightsError

# Widths of the pooled features (Keras application docs; EfficientNet: round_filters(1280)).
EXPECTED_DIMS = {
    "inception_resnet_v2": 1536, "resnet18": 512,
    "resnet50": 2048, "resnet101": 2048, "resnet152": 2048,
    "resnet50_v2": 2048, "resnet101_v2": 2048, "resnet152_v2": 2048,
    "efficientnet_b0": 1280, "efficientnet_b1": 1280, "efficientnet_b2": 1408,
    "efficientnet_b3": 1536, "efficientnet_b4": 1792, "efficientnet_b5": 2048,
    "efficientnet_b6": 2304, "efficientnet_b7": 2560,
    "mobilenet_v3_small": 576,
}
FAMILY_PREPROCESS = {
    "inception_resnet_v2": keras.applications.inception_resnet_v2.preprocess_input,
    "resnet": keras.applications.resnet.preprocess_input,
    "resnet_v2": keras.applications.resnet_v2.preprocess_input,
    "efficientnet": keras.applications.efficientnet.preprocess_input,  # identity
    "mobilenet_v3": keras.applications.mobilenet_v3.preprocess_input,  # identity
    "resnet18": lambda x: keras.applications.imagenet_utils.preprocess_input(x, mode="torch"),
}


def _images(n: int, side: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3)).astype(np.float32)


def test_table_is_the_configs_choices_with_their_widths():
    assert tuple(AUDIO_BACKBONE_TABLE) == AUDIO_BACKBONES
    assert AUDIO_BACKBONES[0] == DEFAULT_AUDIO_BACKBONE == ModelConfig().audio_backbone
    assert {n: b.feature_dim for n, b in AUDIO_BACKBONE_TABLE.items()} == EXPECTED_DIMS
    assert AUDIO_BACKBONE_TABLE["resnet101_v2"].imagenet_file == \
        "resnet101v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert AUDIO_BACKBONE_TABLE["efficientnet_b7"].imagenet_url == \
        "https://storage.googleapis.com/keras-applications/efficientnetb7_notop.h5"


@pytest.mark.parametrize("name", AUDIO_BACKBONES)
def test_preprocessing_is_the_familys_preprocess_input(name):
    x = _images(2, 8)
    want = FAMILY_PREPROCESS[AUDIO_BACKBONE_TABLE[name].family](x.copy())
    layer = preprocessing_layer(name)
    got = x if layer is None else np.asarray(layer(x))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name, side", [("resnet18", 64), ("resnet50_v2", 32),
                                        ("resnet50", 64), ("efficientnet_b0", 64),
                                        ("mobilenet_v3_small", 32)])
def test_cheap_backbones_build_with_their_width(name, side):
    model = build_audio_image_backbone(name, "none", side)
    feats = model(_images(2, side), training=False).numpy()
    assert model.name == name and feats.shape == (2, EXPECTED_DIMS[name])
    assert np.isfinite(feats).all()
    if AUDIO_BACKBONE_TABLE[name].family not in ("efficientnet", "mobilenet_v3"):
        assert model.layers[1].name == "preprocessing"  # the family's preprocess_input


def test_mobilenet_v3_small_scales_its_input_inside():
    """The preview backbone takes RGB 0..255: the same network without Keras' built-in
    rescaling, given x/127.5 - 1 and the same weights, gives the same features."""
    keras.utils.set_random_seed(0)
    model = build_audio_image_backbone("mobilenet_v3_small", "none", 32)
    bare = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), include_top=False,
                                               weights=None, pooling="avg",
                                               include_preprocessing=False)
    bare.set_weights(model.get_weights())
    x = _images(2, 32, seed=4)
    np.testing.assert_allclose(model(x, training=False).numpy(),
                               bare(x / 127.5 - 1.0, training=False).numpy(),
                               rtol=1e-4, atol=1e-5)
    row = AUDIO_BACKBONE_TABLE["mobilenet_v3_small"]
    assert row.imagenet_file == "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    assert row.imagenet_url == ("https://storage.googleapis.com/tensorflow/keras-applications/"
                                "mobilenet_v3/" + row.imagenet_file)
    assert ModelConfig().preview_backbone == "mobilenet_v3_small"


def test_random_weights_are_saved_per_backbone_and_restored(tmp_path):
    model, spec = init_backbone("audio", "none", 32, tmp_path, seed=3, architecture="resnet18")
    assert spec == backbone_spec("audio", "none", 32, "backbones/audio-resnet18.weights.h5",
                                 architecture="resnet18")
    images = _images(2, 32, seed=1)
    np.testing.assert_array_equal(restore_backbone(spec, "audio", tmp_path)(images).numpy(),
                                  model(images).numpy())


def test_imagenet_offline_names_the_file_to_fetch(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline)
    file = "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with pytest.raises(WeightsError, match=rf"resnet50_v2.*could not fetch.*resnet/{file}.*"
                       rf"~/.keras/models/.*model.audio_weights=/path/to/{file}"):
        build_audio_image_backbone("resnet50_v2", "imagenet", 32)


def test_bad_sizes_names_and_files(tmp_path):
    with pytest.raises(ValueError, match="audio image_size: 16; allowed: >= 32"):
        build_audio_image_backbone("resnet18", "none", 16)
    with pytest.raises(ValueError, match="audio image_size: 224; allowed: 299"):
        build_audio_image_backbone("inception_resnet_v2", "none", 224)
    with pytest.raises(ValueError, match="audio backbone 'resnet34'; allowed: inception_resnet"):
        build_audio_image_backbone("resnet34")
    legacy = tmp_path / "efficientnetb0_notop.h5"
    legacy.write_bytes(b"")
    with pytest.raises(WeightsError, match="copy it into ~/.keras/models/ and set "
                       "model.audio_weights=imagenet"):
        build_audio_image_backbone("efficientnet_b0", str(legacy), 64)


def test_config_errors_are_one_line(tmp_path):
    assert load_config(None, overrides=["model.audio_backbone=resnet18"]).model.audio_backbone \
        == "resnet18"
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides=["model.audio_backbone=resnet34"])
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("model.audio_backbone: invalid value 'resnet34'; allowed: "
                          "inception_resnet_v2, resnet18, resnet50")

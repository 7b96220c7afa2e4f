"""InceptionResNetV2 audio backbone: shape, preprocessing, loading Keras' ImageNet-format h5.

The model is big (54M parameters) and keras.applications has no smaller form of it, so one
test builds it at full size: a plain ``keras.applications.InceptionResNetV2(include_top=False,
weights=None)`` as the reference and our backbone loaded from an h5 written from it in the
format of Keras' real ImageNet no-top file (a Keras 2 file: root ``layer_names``, per-layer
``weight_names`` like ``conv2d_1/kernel:0``, unnamed layers numbered from 1), checked with the
shared ``run_backbone_test``. The other tests fail before building.
"""

from __future__ import annotations

import os
import re

import h5py
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from maivar_tf.models import inception_resnet_v2 as irv2  # noqa: E402
from maivar_tf.models.weights import WeightsError, load_weights_file  # noqa: E402
from tests.backbone_test_utils import run_backbone_test  # noqa: E402

_AUTO_NAMED = re.compile(
    r"(input_layer|conv2d|batch_normalization|activation|max_pooling2d|average_pooling2d)"
    r"(?:_(\d+))?"
)


def keras2_names(model: keras.Model) -> list[str]:
    """The layer names Keras 2 gave ``model`` in a fresh session: unnamed layers numbered
    ``conv2d_1, conv2d_2, ...`` in build order (whatever Keras 3's process-wide counters say)."""
    counts: dict[str, int] = {}
    names = []
    for layer in model.layers:
        m = _AUTO_NAMED.fullmatch(layer.name)
        if not m:
            names.append(layer.name)
            continue
        base = "input" if m.group(1) == "input_layer" else m.group(1)
        counts[base] = counts.get(base, 0) + 1
        names.append(f"{base}_{counts[base]}")
    return names


def write_keras2_weights_h5(model: keras.Model, path) -> None:
    """Writes ``model``'s weights the way Keras 2 ``save_weights('x.h5')`` did."""
    with h5py.File(path, "w") as f:
        names = keras2_names(model)
        # Keras 2 stored name lists as fixed-length byte arrays (np.asarray of bytes).
        f.attrs["layer_names"] = np.asarray([n.encode("utf8") for n in names])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.1.5"
        for layer, name in zip(model.layers, names, strict=True):
            group = f.create_group(name)
            weight_names = [f"{name}/{w.name}:0" for w in layer.weights]
            group.attrs["weight_names"] = np.asarray([w.encode("utf8") for w in weight_names])
            for weight_name, w in zip(weight_names, layer.weights, strict=True):
                group.create_dataset(weight_name, data=np.asarray(w.numpy()))


def _check_structure(backbone: keras.Model) -> None:
    assert backbone.input_shape == (None, 299, 299, 3)
    assert backbone.output_shape == (None, 1536)
    assert backbone.get_layer("preprocessing") is not None
    # The last block keeps Keras' explicit names, the pooling is the application's.
    assert backbone.get_layer("conv_7b_ac").output.shape[1:] == (8, 8, 1536)
    # preprocess_input semantics: x / 127.5 - 1.
    x = np.array([[[[0.0, 127.5, 255.0]]]], np.float32)
    np.testing.assert_allclose(backbone.get_layer("preprocessing")(x).numpy(),
                               [[[[-1.0, 0.0, 1.0]]]], atol=1e-6)


@pytest.mark.slow  # the one full-size build: 54M parameters, built three times
def test_full_size_backbone_loads_notop_h5_and_matches_keras_applications(tmp_path):
    keras.utils.set_random_seed(0)
    reference = keras.applications.InceptionResNetV2(include_top=False, weights=None,
                                                     pooling="avg")
    notop_h5 = tmp_path / irv2.IMAGENET_NOTOP_FILE
    write_keras2_weights_h5(reference, notop_h5)
    with h5py.File(notop_h5, "r") as f:
        names = [n.decode() for n in f.attrs["layer_names"]]
        assert "conv2d_1" in names and "conv2d" not in names
        assert f["conv2d_1"].attrs["weight_names"][0] == b"conv2d_1/kernel:0"
        assert "conv_7b_bn" in names

    images = np.random.RandomState(0).randint(0, 256, (2, 299, 299, 3)).astype(np.uint8)
    # Shape, config and weights round trips; the .keras round trip is not run at this size
    # (backbones are stored as .weights.h5).
    backbone, got = run_backbone_test(irv2.build_audio_backbone, {"weights": str(notop_h5)},
                                      images, (2, irv2.AUDIO_FEATURE_DIM), tmp_path,
                                      run_saving_test=False)
    x = keras.applications.inception_resnet_v2.preprocess_input(images.astype(np.float32))
    want = keras.ops.convert_to_numpy(reference(x, training=False))
    assert np.abs(want).max() > 1e-3
    np.testing.assert_allclose(got, want, atol=1e-5)
    _check_structure(backbone)

    bad = tmp_path / "tiny.h5"
    tiny = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense")])
    write_keras2_weights_h5(tiny, bad)
    with pytest.raises(WeightsError, match="could not load legacy Keras HDF5 weights"):
        load_weights_file(backbone, bad, what="audio backbone")


def test_imagenet_offline_error_suggests_a_path(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(WeightsError) as err:
        irv2.build_audio_backbone("imagenet")
    msg = str(err.value)
    assert irv2.IMAGENET_NOTOP_URL in msg
    assert "model.audio_weights=/path/to/" + irv2.IMAGENET_NOTOP_FILE in msg


def test_bad_specs():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        irv2.build_audio_backbone("/nonexistent/irv2.h5")
    with pytest.raises(WeightsError, match="unknown type"):
        irv2.build_audio_backbone("weights.pth")

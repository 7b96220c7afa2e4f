"""``maivar convert-weights``: PyTorch BNInception -> Keras, checked numerically.

A PyTorch reference BNInception (Cadene's ``pretrainedmodels`` architecture: convs with bias,
BatchNorm eps 1e-5, ``ceil_mode=True`` max pools, ``count_include_pad=True`` average pools,
max pool in 5b) is filled with random weights and non-trivial BatchNorm running statistics,
saved in the tsn-pytorch, mmaction v1 and Cadene key layouts, converted by the CLI entry point
and loaded into the Keras model; features must agree to 1e-4.

The reference takes a block table like the Keras model does. Every layout and every error path
runs on the tiny table (``TINY_BLOCKS``); ``test_full_size_parity_through_the_cli`` converts the
full network, built from a table transcribed here from Cadene's ``bninception.py``
independently of the Keras model's, with the command line's default model.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

torch = pytest.importorskip("torch", reason="PyTorch (the 'convert' extra) is not installed")
nn = torch.nn

import keras  # noqa: E402

from maivar_tf import convert  # noqa: E402
from maivar_tf.models.bn_inception import (  # noqa: E402
    REFERENCE_BLOCKS,
    TINY_BLOCKS,
    TINY_IMAGE_SIZE,
    TINY_STEM_FILTERS,
    build_video_backbone,
)
from tests.models.torch_batch_norm import randomise_batch_norm  # noqa: E402
from tests.tiny_models import TINY_BN_INCEPTION_DIM, tiny_bn_inception  # noqa: E402

TOLERANCE = 1e-4
BGR_MEAN = np.array([104.0, 117.0, 128.0], np.float32)
TINY = {"blocks": TINY_BLOCKS, "stem_filters": TINY_STEM_FILTERS, "image_size": TINY_IMAGE_SIZE}
LAYOUTS = ("tsn", "mmaction", "cadene")

# (block, in_channels, 1x1, 3x3_reduce, 3x3, double_reduce, double_3x3, pool, pool_proj,
# stride), written out independently of the Keras model from Cadene's bninception.py.
_CADENE_BLOCKS = [
    ("3a", 192, 64, 64, 64, 64, 96, "avg", 32, 1),
    ("3b", 256, 64, 64, 96, 64, 96, "avg", 64, 1),
    ("3c", 320, 0, 128, 160, 64, 96, "max", 0, 2),
    ("4a", 576, 224, 64, 96, 96, 128, "avg", 128, 1),
    ("4b", 576, 192, 96, 128, 96, 128, "avg", 128, 1),
    ("4c", 576, 160, 128, 160, 128, 160, "avg", 128, 1),
    ("4d", 608, 96, 128, 192, 160, 192, "avg", 128, 1),
    ("4e", 608, 0, 128, 192, 192, 256, "max", 0, 2),
    ("5a", 1056, 352, 192, 320, 160, 224, "avg", 128, 1),
    ("5b", 1024, 352, 192, 320, 192, 224, "max", 128, 1),
]
_CADENE_STEM = (64, 64, 192)
_CADENE_TABLE = [(row[0], *row[2:]) for row in _CADENE_BLOCKS]  # without in_channels


class ReferenceBNInception(nn.Module):
    """Cadene's BNInception features for a block table (module names as in the checkpoints),
    global-average-pooled."""

    def __init__(self, blocks, stem):
        super().__init__()
        self.blocks = [tuple(row) for row in blocks]
        self.convs: list[str] = []
        self.in_channels: list[int] = []
        self._cbr("conv1_7x7_s2", 3, stem[0], 7, 2, 3)
        self.pool1_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self._cbr("conv2_3x3_reduce", stem[0], stem[1], 1)
        self._cbr("conv2_3x3", stem[1], stem[2], 3, 1, 1)
        self.pool2_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        cin = stem[2]
        for blk, n1, n3r, n3, nd3r, nd3, pool, proj, stride in self.blocks:
            self.in_channels.append(cin)
            p = f"inception_{blk}_"
            if n1:
                self._cbr(p + "1x1", cin, n1, 1)
            self._cbr(p + "3x3_reduce", cin, n3r, 1)
            self._cbr(p + "3x3", n3r, n3, 3, stride, 1)
            self._cbr(p + "double_3x3_reduce", cin, nd3r, 1)
            self._cbr(p + "double_3x3_1", nd3r, nd3, 3, 1, 1)
            self._cbr(p + "double_3x3_2", nd3, nd3, 3, stride, 1)
            if stride == 2:
                pool_layer = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            elif pool == "avg":
                pool_layer = nn.AvgPool2d(3, stride=1, padding=1, ceil_mode=True,
                                          count_include_pad=True)
            else:
                pool_layer = nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)
            setattr(self, p + "pool", pool_layer)
            if proj:
                self._cbr(p + "pool_proj", cin, proj, 1)
            cin = n1 + n3 + nd3 + (proj or cin)
        self.feature_dim = cin

    def _cbr(self, name, cin, cout, k, stride=1, pad=0):
        setattr(self, name, nn.Conv2d(cin, cout, k, stride=stride, padding=pad))
        setattr(self, name + "_bn", nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1))
        self.convs.append(name)

    def _run(self, name, x):
        return torch.relu(getattr(self, name + "_bn")(getattr(self, name)(x)))

    def forward(self, x):
        x = self.pool1_3x3_s2(self._run("conv1_7x7_s2", x))
        x = self._run("conv2_3x3", self._run("conv2_3x3_reduce", x))
        x = self.pool2_3x3_s2(x)
        for blk, n1, _n3r, _n3, _nd3r, _nd3, _pool, proj, _stride in self.blocks:
            p = f"inception_{blk}_"
            outs = []
            if n1:
                outs.append(self._run(p + "1x1", x))
            outs.append(self._run(p + "3x3", self._run(p + "3x3_reduce", x)))
            b = self._run(p + "double_3x3_1", self._run(p + "double_3x3_reduce", x))
            outs.append(self._run(p + "double_3x3_2", b))
            b = getattr(self, p + "pool")(x)
            outs.append(self._run(p + "pool_proj", b) if proj else b)
            x = torch.cat(outs, dim=1)
        return x.mean(dim=(2, 3))  # TSN's global_pool (AvgPool2d(7) at 224)


def _rgb_input(seed: int, size: int, n: int = 2) -> np.ndarray:
    """Integer-valued RGB 0..255 frames [n,size,size,3] as float32 (exactly uint8-representable)."""
    return np.random.RandomState(seed).randint(0, 256, (n, size, size, 3)).astype(np.float32)


def _to_tsn(rgb: np.ndarray) -> np.ndarray:
    """What TSN feeds BNInception: BGR minus the mean, NHWC."""
    return rgb[..., ::-1] - BGR_MEAN


def _calibrated_reference(blocks, stem, size: int):
    """A random reference model with calibrated, then perturbed, BN statistics, plus RGB
    frames and their features."""
    torch.manual_seed(0)
    model = ReferenceBNInception(blocks, stem)
    randomise_batch_norm(model, torch.from_numpy(
        _to_tsn(_rgb_input(1, size)).transpose(0, 3, 1, 2).copy()))
    rgb = _rgb_input(2, size)
    return model, rgb, _reference_features(model, rgb)


def _reference_features(model: nn.Module, rgb: np.ndarray) -> np.ndarray:
    """PyTorch features of RGB frames, computed in float64 so the reference is exact enough
    that the comparison measures the Keras float32 model alone."""
    x = torch.from_numpy(_to_tsn(rgb).astype(np.float64).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        feats = model.double()(x).numpy()
    model.float()
    return feats.astype(np.float32)


def _assert_nontrivial(feats: np.ndarray, dim: int) -> None:
    assert feats.shape == (2, dim)
    assert np.isfinite(feats).all()
    # O(1) features: a 1e-4 tolerance means something at this scale.
    assert 0.05 < feats.std() and np.abs(feats).max() < 50


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """PyTorch on one thread while this module runs: its OpenMP workers otherwise spin against
    TensorFlow's and the other tests' processes for the machine's cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def reference():
    """The tiny-table reference: (torch model, RGB frames, float64-computed features)."""
    return _calibrated_reference(TINY_BLOCKS, TINY_STEM_FILTERS, TINY_IMAGE_SIZE)


@pytest.fixture(scope="module")
def keras_model():
    return tiny_bn_inception(include_preprocessing=False)


def _state_dict(model: nn.Module, layout: str) -> dict:
    """The reference weights in a checkpoint family's key layout, with its classifier head."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    head_w, head_b = torch.randn(5, model.feature_dim), torch.zeros(5)
    if layout == "tsn":
        out = {f"module.base_model.{k}": v for k, v in sd.items()}
        out.update({"module.new_fc.weight": head_w, "module.new_fc.bias": head_b})
        return {"epoch": 80, "arch": "BNInception", "state_dict": out, "best_prec1": 86.4}
    if layout == "mmaction":
        out = {f"backbone.{k}": v for k, v in sd.items()}
        out.update({"cls_head.fc_cls.weight": head_w, "cls_head.fc_cls.bias": head_b})
        return {"meta": {"epoch": 80}, "state_dict": out}
    # Cadene: plain names, BN tensors stored as [1, C] by the Caffe port.
    out = {k: (v.unsqueeze(0) if k.endswith(("_bn.weight", "_bn.bias", "running_mean",
                                              "running_var")) else v)
           for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    out.update({"last_linear.weight": head_w, "last_linear.bias": head_b})
    return out


def _check_cli_output(out: str, layout: str, matched: int) -> None:
    assert f"layout: {layout}" in out
    assert f"matched: {matched} source tensors" in out
    assert "unmatched Keras weights (no source): 0" in out
    assert "unused source keys, other: 0" in out
    heads = {"tsn": "module.new_fc.weight", "mmaction": "cls_head.fc_cls.weight",
             "cadene": "last_linear.weight"}[layout]
    assert heads in out  # heads are listed as expected-unused


def test_transcribed_table_is_the_models_reference_table():
    assert _CADENE_TABLE == [tuple(row) for row in REFERENCE_BLOCKS]
    # The in-channels Cadene writes out are the channel flow the table implies.
    reference = ReferenceBNInception(_CADENE_TABLE, _CADENE_STEM)
    assert reference.in_channels == [row[1] for row in _CADENE_BLOCKS]
    assert reference.feature_dim == 1024 and len(reference.convs) == 69


def test_reference_features_are_nontrivial(reference):
    _, _, feats = reference
    _assert_nontrivial(feats, TINY_BN_INCEPTION_DIM)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_after_cli_conversion(layout, reference, keras_model, tmp_path, capsys):
    model, rgb, feats = reference
    ckpt = tmp_path / f"{layout}.pth"
    torch.save(_state_dict(model, layout), ckpt)

    target = tiny_bn_inception(seed=7)  # what the command fills and saves
    rc = convert.main([str(ckpt), str(tmp_path / "bninception")], model=target)
    out = capsys.readouterr().out
    assert rc == 0, out
    _check_cli_output(out, layout, len(model.convs) * 6)

    weights = tmp_path / "bninception.weights.h5"
    assert weights.is_file()
    keras_model.load_weights(str(weights))
    got = keras_model(_to_tsn(rgb), training=False).numpy()
    diff = float(np.abs(got - feats).max())
    print(f"parity[{layout}] max abs diff = {diff:.3g}")
    assert diff <= TOLERANCE


def test_converted_weights_with_preprocessing_and_feature_map(reference, tmp_path):
    """The same file loads through build_video_backbone into the RGB uint8-input model."""
    model, rgb, feats = reference
    ckpt = tmp_path / "cadene.pth"
    torch.save(_state_dict(model, "cadene"), ckpt)
    report = convert.convert_checkpoint(ckpt, tmp_path / "w.weights.h5",
                                        model=tiny_bn_inception(seed=7))
    assert report.output == tmp_path / "w.weights.h5"
    n = len(model.convs)
    assert len(report.matched) == n * 2 + n * 4  # convs (w, b), BNs (4 tensors)

    frames = rgb.astype(np.uint8)  # what the input pipeline delivers
    map_model = build_video_backbone(str(report.output), pooling=None, **TINY)
    fmap = map_model(frames, training=False).numpy()
    assert fmap.shape == (2, 2, 2, TINY_BN_INCEPTION_DIM)
    assert float(np.abs(fmap.mean(axis=(1, 2)) - feats).max()) <= TOLERANCE


def test_full_size_parity_through_the_cli(tmp_path, capsys):
    """The one full-size conversion: Cadene's table at 224, the command's default model."""
    model, rgb, feats = _calibrated_reference(_CADENE_TABLE, _CADENE_STEM, 224)
    _assert_nontrivial(feats, 1024)
    ckpt = tmp_path / "tsn.pth.tar"
    torch.save(_state_dict(model, "tsn"), ckpt)

    assert convert.main([str(ckpt), str(tmp_path / "bninception")]) == 0
    _check_cli_output(capsys.readouterr().out, "tsn", 69 * 2 + 69 * 4)

    map_model = build_video_backbone(str(tmp_path / "bninception.weights.h5"), pooling=None)
    fmap = map_model(rgb.astype(np.uint8), training=False).numpy()
    assert fmap.shape == (2, 7, 7, 1024)
    diff = float(np.abs(fmap.mean(axis=(1, 2)) - feats).max())
    print(f"full-size parity[tsn] max abs diff = {diff:.3g}")
    assert diff <= TOLERANCE


def _numpy_state(model: nn.Module, prefix: str = "") -> dict[str, np.ndarray]:
    return {prefix + k: v.numpy() for k, v in model.state_dict().items()}


def test_checkpoint_keys(reference, keras_model):
    model, _, _ = reference
    expected = convert.checkpoint_keys(keras_model)
    assert "conv1_7x7_s2.weight" in expected and "inception_5b_pool_proj_bn.running_var" in expected
    # Exactly the reference's tensors but its BatchNorm step counters.
    assert expected == {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")])
    with pytest.raises(convert.ConversionError, match="unexpected weighted layer 'fc'"):
        convert.checkpoint_keys(dense)


def test_detects_each_layout(reference, keras_model):
    model, _, _ = reference
    expected = convert.checkpoint_keys(keras_model)
    for prefix, layout in (("module.base_model.", "tsn"), ("backbone.", "mmaction"),
                           ("", "cadene"), ("base_model.", "tsn")):
        keys = list(_numpy_state(model, prefix))
        assert convert.detect_layout(keys, expected) == (layout, prefix)
    with pytest.raises(convert.ConversionError, match="no BNInception weights found"):
        convert.detect_layout(["encoder.layer0.weight"], expected)


def test_reports_unmatched_and_unused_and_refuses_partial(reference, keras_model):
    model, _, _ = reference
    state = _numpy_state(model, "backbone.")
    del state["backbone.inception_3a_1x1.bias"]
    del state["backbone.inception_5b_pool_proj_bn.running_var"]
    state["cls_head.fc_cls.weight"] = np.zeros((5, TINY_BN_INCEPTION_DIM), np.float32)
    state["backbone.extra_layer.weight"] = np.zeros((3,), np.float32)
    before = keras_model.get_layer("inception_3a_1x1").get_weights()[0].copy()

    with pytest.raises(convert.ConversionError, match="refusing a partial load") as err:
        convert.apply_state_dict(keras_model, state)
    assert "inception_3a_1x1/bias" in str(err.value)
    assert "inception_5b_pool_proj_bn/running_var" in str(err.value)
    assert "--allow-partial" in str(err.value)
    # Nothing was written into the model.
    np.testing.assert_array_equal(keras_model.get_layer("inception_3a_1x1").get_weights()[0],
                                  before)

    report = convert.apply_state_dict(keras_model, state, allow_partial=True)
    assert report.layout == "mmaction"
    assert report.unmatched == ["inception_3a_1x1/bias", "inception_5b_pool_proj_bn/running_var"]
    assert report.unused_heads == ["cls_head.fc_cls.weight"]
    assert report.unused == ["backbone.extra_layer.weight"]
    assert len(report.ignored) == len(model.convs)  # num_batches_tracked
    np.testing.assert_array_equal(
        keras_model.get_layer("inception_3a_1x1").get_weights()[0],
        state["backbone.inception_3a_1x1.weight"].transpose(2, 3, 1, 0),
    )
    text = report.format()
    assert "unmatched Keras weights (no source): 2" in text
    assert "backbone.extra_layer.weight" in text


def test_cli_refuses_partial_then_allows_it(reference, tmp_path, capsys):
    model, _, _ = reference
    sd = _state_dict(model, "tsn")
    del sd["state_dict"]["module.base_model.conv2_3x3_bn.weight"]
    ckpt = tmp_path / "partial.pth"
    torch.save(sd, ckpt)
    out = tmp_path / "partial"
    target = tiny_bn_inception(seed=7)

    assert convert.main([str(ckpt), str(out)], model=target) == 1
    err = capsys.readouterr().err
    assert "refusing a partial load" in err and "conv2_3x3_bn/weight" in err
    assert not (tmp_path / "partial.weights.h5").exists()

    assert convert.main([str(ckpt), str(out), "--allow-partial", "--layout", "tsn"],
                        model=target) == 0
    captured = capsys.readouterr()
    assert "unmatched Keras weights (no source): 1: conv2_3x3_bn/weight" in captured.out
    assert "partial load" in captured.err
    assert (tmp_path / "partial.weights.h5").is_file()


def test_shape_mismatch_names_the_key(reference, keras_model):
    model, _, _ = reference
    state = _numpy_state(model)
    state["conv1_7x7_s2.weight"] = np.zeros((4, 10, 7, 7), np.float32)  # a Flow model
    with pytest.raises(convert.ConversionError, match=r"conv1_7x7_s2.weight: shape \(4, 10, 7, 7\)"
                       r".*\(4, 3, 7, 7\).*Flow"):
        convert.apply_state_dict(keras_model, state)


def test_wrong_layout_is_refused(reference, keras_model):
    model, _, _ = reference
    state = _numpy_state(model, "backbone.")
    with pytest.raises(convert.ConversionError, match="refusing a partial load"):
        convert.apply_state_dict(keras_model, state, layout="tsn")
    with pytest.raises(convert.ConversionError, match="--layout: 'caffe'; allowed: auto, tsn"):
        convert.apply_state_dict(keras_model, state, layout="caffe")


def test_missing_torch_gives_install_hint(monkeypatch, tmp_path, capsys):
    ckpt = tmp_path / "x.pth"
    ckpt.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    assert convert.main([str(ckpt), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "pip install 'maivar_tf[convert]'" in err
    assert not (tmp_path / "out.weights.h5").exists()


class Meta:
    """An arbitrary object that torch.load(weights_only=True) refuses to unpickle."""


def test_unsafe_pickle_needs_trust(tmp_path, capsys):
    ckpt = tmp_path / "meta.pth"
    torch.save({"state_dict": {}, "meta": Meta()}, ckpt)
    assert convert.main([str(ckpt), str(tmp_path / "out")]) == 1
    assert "--trust-checkpoint" in capsys.readouterr().err


def test_output_path_suffix():
    assert convert.weights_output_path("a/b").name == "b.weights.h5"
    assert convert.weights_output_path("a/b.weights.h5").name == "b.weights.h5"

"""``maivar convert-weights``: PyTorch BNInception -> Keras, checked numerically.

A PyTorch reference BNInception (Cadene's ``pretrainedmodels`` architecture: convs with bias,
BatchNorm eps 1e-5, ``ceil_mode=True`` max pools, ``count_include_pad=True`` average pools,
max pool in 5b) is filled with random weights and non-trivial BatchNorm running statistics,
saved in the tsn-pytorch, mmaction v1 and Cadene key layouts, converted by the CLI entry point
and loaded into the Keras model; features must agree to 1e-4.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

torch = pytest.importorskip("torch", reason="PyTorch (the 'convert' extra) is not installed")
nn = torch.nn

from maivar_tf import convert  # noqa: E402
from maivar_tf.models.bn_inception import BNInception, build_video_backbone  # noqa: E402

TOLERANCE = 1e-4
BGR_MEAN = np.array([104.0, 117.0, 128.0], np.float32)

# (block, 1x1, 3x3_reduce, 3x3, double_reduce, double_3x3, pool, pool_proj, stride), written
# out independently of the Keras model from Cadene's bninception.py.
_REFERENCE_BLOCKS = [
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


class ReferenceBNInception(nn.Module):
    """Cadene's BNInception features (module names as in the checkpoints), global-pooled."""

    def __init__(self):
        super().__init__()
        self.convs: list[str] = []
        self._cbr("conv1_7x7_s2", 3, 64, 7, 2, 3)
        self.pool1_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self._cbr("conv2_3x3_reduce", 64, 64, 1)
        self._cbr("conv2_3x3", 64, 192, 3, 1, 1)
        self.pool2_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for blk, cin, n1, n3r, n3, nd3r, nd3, pool, proj, stride in _REFERENCE_BLOCKS:
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
        self.global_pool = nn.AvgPool2d(7, stride=1, padding=0, ceil_mode=True,
                                        count_include_pad=True)

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
        for blk, _cin, n1, _n3r, _n3, _nd3r, _nd3, _pool, proj, _stride in _REFERENCE_BLOCKS:
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
        return torch.flatten(self.global_pool(x), 1)


def _rgb_input(seed: int, n: int = 2) -> np.ndarray:
    """Integer-valued RGB 0..255 frames [n,224,224,3] as float32 (exactly uint8-representable)."""
    return np.random.RandomState(seed).randint(0, 256, (n, 224, 224, 3)).astype(np.float32)


def _to_tsn(rgb: np.ndarray) -> np.ndarray:
    """What TSN feeds BNInception: BGR minus the mean, NHWC."""
    return rgb[..., ::-1] - BGR_MEAN


@pytest.fixture(scope="module")
def reference():
    """A random reference model with calibrated, then perturbed, BN statistics."""
    torch.manual_seed(0)
    model = ReferenceBNInception()
    # Random affine BN parameters first; then calibrate the running statistics on a batch
    # (momentum 1: running = batch statistics) so activations stay O(1) through 69 layers;
    # then perturb them so that using the running statistics (not batch statistics) and
    # mapping mean/var correctly both matter.
    gen = torch.Generator().manual_seed(1)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            m.weight.uniform_(0.5, 1.5, generator=gen)
            m.bias.normal_(0.0, 0.2, generator=gen)
            m.momentum = 1.0
        model.train()
        model(torch.from_numpy(_to_tsn(_rgb_input(1)).transpose(0, 3, 1, 2).copy()))
        for m in bns:
            c = m.num_features
            m.running_mean.add_(0.05 * m.running_var.sqrt() * torch.randn(c, generator=gen))
            m.running_var.mul_(torch.empty(c).uniform_(0.9, 1.1, generator=gen))
    model.eval()
    rgb = _rgb_input(2)
    return model, rgb, _reference_features(model, rgb)


def _reference_features(model: nn.Module, rgb: np.ndarray) -> np.ndarray:
    """PyTorch features of RGB frames, computed in float64 so the reference is exact enough
    that the comparison measures the Keras float32 model alone."""
    x = torch.from_numpy(_to_tsn(rgb).astype(np.float64).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        feats = model.double()(x).numpy()
    model.float()
    return feats.astype(np.float32)


@pytest.fixture(scope="module")
def keras_model():
    return BNInception(include_preprocessing=False)


def _state_dict(model: nn.Module, layout: str) -> dict:
    """The reference weights in a checkpoint family's key layout, with its classifier head."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    head_w, head_b = torch.randn(5, 1024), torch.zeros(5)
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


def test_reference_features_are_nontrivial(reference):
    _, _, feats = reference
    assert feats.shape == (2, 1024)
    assert np.isfinite(feats).all()
    # O(1) features: a 1e-4 tolerance means something at this scale.
    assert 0.05 < feats.std() and np.abs(feats).max() < 50


@pytest.mark.parametrize("layout", ["tsn", "mmaction", "cadene"])
def test_parity_after_cli_conversion(layout, reference, keras_model, tmp_path, capsys):
    model, rgb, feats = reference
    ckpt = tmp_path / f"{layout}.pth"
    torch.save(_state_dict(model, layout), ckpt)

    rc = convert.main([str(ckpt), str(tmp_path / "bninception")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"layout: {layout}" in out
    assert "unmatched Keras weights (no source): 0" in out
    assert "unused source keys, other: 0" in out
    heads = {"tsn": "module.new_fc.weight", "mmaction": "cls_head.fc_cls.weight",
             "cadene": "last_linear.weight"}[layout]
    assert heads in out  # heads are listed as expected-unused

    weights = tmp_path / "bninception.weights.h5"
    assert weights.is_file()
    keras_model.load_weights(str(weights))
    got = keras_model.predict(_to_tsn(rgb), verbose=0)
    diff = float(np.abs(got - feats).max())
    print(f"parity[{layout}] max abs diff = {diff:.3g}")
    assert diff <= TOLERANCE


def test_converted_weights_with_preprocessing_and_feature_map(reference, tmp_path):
    """The same file loads through build_video_backbone into the RGB uint8-input model."""
    model, rgb, feats = reference
    ckpt = tmp_path / "cadene.pth"
    torch.save(_state_dict(model, "cadene"), ckpt)
    report = convert.convert_checkpoint(ckpt, tmp_path / "w.weights.h5")
    assert report.output == tmp_path / "w.weights.h5"
    assert len(report.matched) == 69 * 2 + 69 * 4  # 69 convs (w, b), 69 BNs (4 tensors)

    frames = rgb.astype(np.uint8)  # what the input pipeline delivers
    map_model = build_video_backbone(str(report.output), pooling=None)
    fmap = map_model.predict(frames, verbose=0)
    assert fmap.shape == (2, 7, 7, 1024)
    assert float(np.abs(fmap.mean(axis=(1, 2)) - feats).max()) <= TOLERANCE


def _numpy_state(model: nn.Module, prefix: str = "") -> dict[str, np.ndarray]:
    return {prefix + k: v.numpy() for k, v in model.state_dict().items()}


def test_detects_each_layout(reference, keras_model):
    model, _, _ = reference
    targets = convert._targets(keras_model)
    for prefix, layout in (("module.base_model.", "tsn"), ("backbone.", "mmaction"),
                           ("", "cadene"), ("base_model.", "tsn")):
        keys = list(_numpy_state(model, prefix))
        assert convert.detect_layout(keys, targets) == (layout, prefix)
    with pytest.raises(convert.ConversionError, match="no BNInception weights found"):
        convert.detect_layout(["encoder.layer0.weight"], targets)


def test_reports_unmatched_and_unused_and_refuses_partial(reference, keras_model):
    model, _, _ = reference
    state = _numpy_state(model, "backbone.")
    del state["backbone.inception_4a_1x1.bias"]
    del state["backbone.inception_5b_pool_proj_bn.running_var"]
    state["cls_head.fc_cls.weight"] = np.zeros((5, 1024), np.float32)
    state["backbone.extra_layer.weight"] = np.zeros((3,), np.float32)
    before = keras_model.get_layer("inception_4a_1x1").get_weights()[0].copy()

    with pytest.raises(convert.ConversionError, match="refusing a partial load") as err:
        convert.apply_state_dict(keras_model, state)
    assert "inception_4a_1x1/bias" in str(err.value)
    assert "inception_5b_pool_proj_bn/running_var" in str(err.value)
    assert "--allow-partial" in str(err.value)
    # Nothing was written into the model.
    np.testing.assert_array_equal(keras_model.get_layer("inception_4a_1x1").get_weights()[0],
                                  before)

    report = convert.apply_state_dict(keras_model, state, allow_partial=True)
    assert report.layout == "mmaction"
    assert report.unmatched == ["inception_4a_1x1/bias", "inception_5b_pool_proj_bn/running_var"]
    assert report.unused_heads == ["cls_head.fc_cls.weight"]
    assert report.unused == ["backbone.extra_layer.weight"]
    assert len(report.ignored) == 69  # num_batches_tracked
    np.testing.assert_array_equal(
        keras_model.get_layer("inception_4a_1x1").get_weights()[0],
        state["backbone.inception_4a_1x1.weight"].transpose(2, 3, 1, 0),
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

    assert convert.main([str(ckpt), str(out)]) == 1
    err = capsys.readouterr().err
    assert "refusing a partial load" in err and "conv2_3x3_bn/weight" in err
    assert not (tmp_path / "partial.weights.h5").exists()

    assert convert.main([str(ckpt), str(out), "--allow-partial", "--layout", "tsn"]) == 0
    captured = capsys.readouterr()
    assert "unmatched Keras weights (no source): 1: conv2_3x3_bn/weight" in captured.out
    assert "partial load" in captured.err
    assert (tmp_path / "partial.weights.h5").is_file()


def test_shape_mismatch_names_the_key(reference, keras_model):
    model, _, _ = reference
    state = _numpy_state(model)
    state["conv1_7x7_s2.weight"] = np.zeros((64, 10, 7, 7), np.float32)  # a Flow model
    with pytest.raises(convert.ConversionError, match=r"conv1_7x7_s2.weight: shape \(64, 10, 7, 7\)"
                       r".*\(64, 3, 7, 7\).*Flow"):
        convert.apply_state_dict(keras_model, state)


def test_wrong_layout_is_refused(reference, keras_model):
    model, _, _ = reference
    state = _numpy_state(model, "backbone.")
    with pytest.raises(convert.ConversionError, match="refusing a partial load"):
        convert.apply_state_dict(keras_model, state, layout="tsn")


def test_missing_torch_gives_install_hint(monkeypatch, tmp_path, capsys):
    ckpt = tmp_path / "x.pth"
    ckpt.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    assert convert.main([str(ckpt), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "pip install 'maivar_tf[convert]'" in err
    assert not (tmp_path / "out.weights.h5").exists()


class _Meta:
    """An arbitrary object that torch.load(weights_only=True) refuses to unpickle."""


def test_unsafe_pickle_needs_trust(tmp_path, capsys):
    ckpt = tmp_path / "meta.pth"
    torch.save({"state_dict": {}, "meta": _Meta()}, ckpt)
    assert convert.main([str(ckpt), str(tmp_path / "out")]) == 1
    assert "--trust-checkpoint" in capsys.readouterr().err


def test_output_path_suffix():
    assert convert.weights_output_path("a/b").name == "b.weights.h5"
    assert convert.weights_output_path("a/b.weights.h5").name == "b.weights.h5"

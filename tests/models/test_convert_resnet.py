"""``maivar convert-weights --arch resnet18``: torchvision ResNet18 -> Keras, checked numerically.

torchvision is not a test dependency, so the reference is torchvision's ``resnet18`` written out
here in plain PyTorch with its exact module names (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer2.0.downsample.0``, ``fc``; bias-free convolutions, BatchNorm eps 1e-5, a padded 3x3/2
max pool, ``BasicBlock``). When torchvision is installed its own ``resnet18`` is the reference
(and must have the very same state-dict keys). Random weights with calibrated-then-perturbed
BatchNorm statistics are saved as a checkpoint, converted by the command line and loaded into
the audio backbone ``resnet18``, which takes RGB 0..255 and normalises like torchvision; the
features must equal the float64 PyTorch features to 1e-4. 64x64 inputs keep it cheap.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch (the 'convert' extra) is not installed")
nn = torch.nn

from maivar_tf import convert, convert_resnet  # noqa: E402
from maivar_tf.conversion import ConversionError, checkpoint_keys  # noqa: E402
from maivar_tf.models.audio_backbones import build_audio_image_backbone  # noqa: E402
from maivar_tf.models.resnet18 import TORCHVISION_MEAN, TORCHVISION_STD  # noqa: E402
from maivar_tf.models.weights import WeightsError  # noqa: E402
from tests.models.torch_batch_norm import randomise_batch_norm  # noqa: E402

TOLERANCE = 1e-4
SIZE = 64


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ReferenceResNet18(nn.Module):
    """torchvision.models.resnet18's module tree; ``forward`` returns the pooled features."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, cout in enumerate((64, 128, 256, 512), start=1):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(cin, cout, stride),
                                                     BasicBlock(cout, cout, 1)))
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return torch.flatten(self.avgpool(x), 1)


def _reference_model() -> nn.Module:
    """The hand-written reference; when torchvision is installed it must take torchvision's
    own ``resnet18`` state dict (strictly: the very same names and shapes)."""
    model = ReferenceResNet18()
    try:
        import torchvision
    except ImportError:
        return model
    model.load_state_dict(torchvision.models.resnet18(weights=None).state_dict())
    return model


def _normalise(rgb: np.ndarray) -> np.ndarray:
    """torchvision's input: RGB / 255, minus the ImageNet mean, over the std, NCHW."""
    x = (rgb / 255.0 - np.array(TORCHVISION_MEAN)) / np.array(TORCHVISION_STD)
    return x.transpose(0, 3, 1, 2).copy()


def _rgb(seed: int, n: int = 2) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (n, SIZE, SIZE, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def reference():
    """(torch model with calibrated-then-perturbed BN statistics, RGB images, float64 features)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = _reference_model()
    randomise_batch_norm(model, torch.from_numpy(_normalise(_rgb(1, 4))).float())
    rgb = _rgb(2)
    with torch.no_grad():
        feats = model.double()(torch.from_numpy(_normalise(rgb.astype(np.float64)))).numpy()
    model.float()
    yield model, rgb, feats
    torch.set_num_threads(previous)


def test_parity_after_cli_conversion(reference, tmp_path, capsys):
    model, rgb, feats = reference
    assert feats.shape == (2, 512) and 0.05 < feats.std() and np.abs(feats).max() < 50
    ckpt = tmp_path / "resnet18.pth"
    torch.save(model.state_dict(), ckpt)
    target = build_audio_image_backbone("resnet18", "none", SIZE)
    assert convert.main(["--arch", "resnet18", str(ckpt), str(tmp_path / "r18")],
                        model=target) == 0
    out = capsys.readouterr().out
    n_conv, n_bn = 20, 20  # 17 convs + 3 downsample convs; a BN after each
    assert f"matched: {n_conv + 4 * n_bn} source tensors" in out
    assert "unmatched Keras weights (no source): 0" in out and "fc.weight, fc.bias" in out
    assert "unused source keys, other: 0" in out

    backbone = build_audio_image_backbone("resnet18", str(tmp_path / "r18.weights.h5"), SIZE)
    got = backbone(rgb.astype(np.uint8).astype(np.float32), training=False).numpy()
    diff = float(np.abs(got - feats).max())
    print(f"resnet18 parity max abs diff = {diff:.3g}")
    assert diff <= TOLERANCE
    # The keys are torchvision's: every state-dict key but the head and the step counters.
    assert checkpoint_keys(backbone) == {k for k in model.state_dict()
                                         if not k.startswith("fc.")
                                         and not k.endswith("num_batches_tracked")}


def test_default_model_and_prefixed_keys(reference, tmp_path):
    """The command's default model (224) fills a file that loads at any side; DataParallel's
    ``module.`` prefix is detected."""
    model, rgb, feats = reference
    ckpt = tmp_path / "dp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    report = convert_resnet.convert_resnet18_checkpoint(ckpt, tmp_path / "dp")
    assert (report.layout, report.prefix) == ("torchvision", "module.")
    backbone = build_audio_image_backbone("resnet18", str(report.output), SIZE)
    got = backbone(rgb, training=False).numpy()
    assert float(np.abs(got - feats).max()) <= TOLERANCE


def test_foreign_and_partial_checkpoints_are_refused(reference):
    model, _, _ = reference
    target = build_audio_image_backbone("resnet18", "none", 32)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    with pytest.raises(ConversionError, match="no ResNet18 weights found.*conv1.weight"):
        convert_resnet.apply_resnet18_state_dict(target, {"encoder.w": state["conv1.weight"]})
    del state["layer3.0.downsample.1.running_var"]
    with pytest.raises(ConversionError, match="refusing a partial load: 1 of .* ResNet18 weights"
                       r".*layer3.0.downsample.1/running_var"):
        convert_resnet.apply_resnet18_state_dict(target, state)


def test_resnet18_imagenet_points_at_the_converter():
    with pytest.raises(WeightsError, match=r"convert-weights --arch resnet18.*"
                       r"model.audio_weights=weights/resnet18.weights.h5"):
        build_audio_image_backbone("resnet18", "imagenet", 64)

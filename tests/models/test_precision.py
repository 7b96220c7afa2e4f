"""``extract.precision``: the hardware check, the dtype-policy scope, bfloat16 backbones.

The hardware is injected (CPU flags, GPU compute capabilities), so every case runs on any
machine; the backbone tests patch the detection to "has AVX512-BF16" (where the CPU lacks it TF
emulates bfloat16: slower, the same values).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from maivar_tf.models import precision
from maivar_tf.models.precision import (
    POLICIES,
    PrecisionError,
    bfloat16_support,
    check_precision,
    cpu_flags,
    precision_scope,
    recorded_precision,
)

NO_BF16 = ("fpu", "avx2", "avx512f", "avx512_vnni")


@pytest.mark.parametrize("flags, gpus, expected", [
    (NO_BF16 + ("avx512_bf16",), [], (True, "CPU with avx512_bf16")),
    (("amx_bf16", "avx512_bf16"), [], (True, "CPU with amx_bf16, avx512_bf16")),
    (("amx_bf16",), [], (True, "CPU with amx_bf16")),
    (NO_BF16, [], (False, "CPU without avx512_bf16 or amx_bf16")),
    ((), [], (False, "CPU without avx512_bf16 or amx_bf16")),
    # with a GPU the GPU decides, whatever the CPU has
    (NO_BF16, [(8, 0)], (True, "GPU of compute capability 8.0")),
    (("avx512_bf16",), [(7, 5)], (False, "GPU of compute capability 7.5 (bfloat16 needs "
                                          ">= 8.0)")),
    # the weakest GPU decides
    ((), [(9, 0), (7, 0)], (False, "GPU of compute capability 7.0 (bfloat16 needs >= 8.0)")),
    ((), [(8, 6), (9, 0)], (True, "GPU of compute capability 8.6")),
])
def test_bfloat16_support_on_injected_hardware(flags, gpus, expected):
    assert bfloat16_support(flags, gpus) == expected


def test_check_precision_refuses_bfloat16_naming_what_is_missing():
    assert check_precision("float32", flags=NO_BF16, gpus=[]) == "float32"
    assert check_precision("float32", flags=(), gpus=[(6, 1)]) == "float32"
    assert check_precision("bfloat16", flags=("avx512_bf16",), gpus=[]) == "bfloat16"
    assert check_precision("bfloat16", flags=(), gpus=[(8, 0)]) == "bfloat16"
    with pytest.raises(PrecisionError, match=r"needs a CPU with AVX512-BF16 or AMX, or a GPU of "
                       r"compute capability >= 8.0; this machine has a CPU without avx512_bf16 "
                       r"or amx_bf16, .*Use extract.precision=float32"):
        check_precision("bfloat16", flags=NO_BF16, gpus=[])
    with pytest.raises(PrecisionError, match=r"has a GPU of compute capability 7.5 \(bfloat16 "
                       r"needs >= 8.0\)"):
        check_precision("bfloat16", flags=("avx512_bf16",), gpus=[(7, 5)])
    with pytest.raises(ValueError, match="invalid value 'float16'; allowed: float32, bfloat16"):
        check_precision("float16", flags=("avx512_bf16",), gpus=[])


def test_cpu_flags_read_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx512f avx512_bf16\n"
                    "bugs\t\t: none\n")
    assert cpu_flags(str(info)) == {"fpu", "avx512f", "avx512_bf16"}
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_recorded_precision_defaults_to_float32_for_older_records():
    assert recorded_precision(None) == recorded_precision({}) == "float32"
    assert recorded_precision({"extract": {"batch_size": 8}}) == "float32"
    assert recorded_precision({"extract": {"precision": "bfloat16"}}) == "bfloat16"
    with pytest.raises(ValueError, match="invalid value 'int8'"):
        recorded_precision({"extract": {"precision": "int8"}})


def test_precision_scope_restores_the_old_policy_even_on_error():
    import keras

    old = keras.config.dtype_policy().name
    with precision_scope("bfloat16") as policy:
        assert policy == POLICIES["bfloat16"] == keras.config.dtype_policy().name
    assert keras.config.dtype_policy().name == old
    with pytest.raises(RuntimeError, match="boom"), precision_scope("bfloat16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
        raise RuntimeError("boom")
    assert keras.config.dtype_policy().name == old


# ----------------------------------------------------------------------------- backbones


@pytest.fixture()
def has_bf16(monkeypatch):
    """The machine reports AVX512-BF16 and no GPU."""
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    monkeypatch.setattr(precision, "gpu_capabilities", lambda: [])


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_a_bfloat16_backbone_has_float32_weights_and_features_close_to_float32(has_bf16,
                                                                              tmp_path):
    from maivar_tf.models.backbones import BackboneFeatures, init_backbone
    from maivar_tf.models.bn_folding import fold_batch_norm

    size = 64
    arch = {"architecture": "bn_inception_tiny"}
    m32, spec32 = init_backbone("video", "none", size, tmp_path / "a", seed=5, **arch)
    m16, spec16 = init_backbone("video", "none", size, tmp_path / "b", seed=5, **arch,
                                precision="bfloat16")
    assert spec16 == spec32  # the spec names the weights; the folder records the precision
    assert m32.dtype_policy.name == "float32" and m16.dtype_policy.name == "mixed_bfloat16"
    assert {w.dtype for w in m16.weights} == {"float32"}
    # the random weights are drawn in float32 (the same values whatever the precision), and
    # the bfloat16 build is their BatchNorm-folded network (maivar_tf.models.bn_folding)
    assert m16.fold_batch_norm and not m32.fold_batch_norm
    for w16, w32 in zip(m16.weights, fold_batch_norm(m32).weights, strict=True):
        np.testing.assert_array_equal(w16.numpy(), w32.numpy())
    images = np.random.default_rng(0).integers(0, 256, (6, size, size, 3)).astype(np.float32)
    f16 = BackboneFeatures(m16, (size, size, 3))(images)
    f32 = BackboneFeatures(m32, (size, size, 3))(images).numpy()
    assert f16.dtype.name == "float32" and f16.shape == f32.shape == (6, 16)
    f16 = f16.numpy()
    assert not np.array_equal(f16, f32)  # computed in bfloat16
    assert _cosine(f16, f32).min() >= 0.99


def test_a_bfloat16_backbone_is_refused_without_native_bfloat16(monkeypatch):
    from maivar_tf.models.backbones import build_backbone

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(NO_BF16))
    monkeypatch.setattr(precision, "gpu_capabilities", lambda: [])
    with pytest.raises(PrecisionError, match="CPU without avx512_bf16 or amx_bf16"):
        build_backbone("video", "none", 32, architecture="bn_inception_tiny",
                       precision="bfloat16")


def test_bfloat16_features_are_refused_in_a_float32_folder(tmp_path):
    """A folder holds one precision: its fingerprint differs, so the extraction is refused
    (the float32 shards are not mixed with bfloat16 ones); a fresh folder takes it."""
    from maivar_tf.artifacts import FeatureInfo
    from maivar_tf.features import FeatureError
    from tests.features.tiny_data import CROP, extract, make_config, write_tfrecords
    from tests.tiny_models import tiny_audio_backbone, tiny_video_backbone

    cfg = make_config(tmp_path)
    write_tfrecords(cfg)
    backbones = tiny_video_backbone(CROP), tiny_audio_backbone()
    out = extract(cfg, backbones, splits=("test",))
    float32 = FeatureInfo.read(out)
    bf16 = dataclasses.replace(cfg, extract=dataclasses.replace(cfg.extract,
                                                                precision="bfloat16"))
    with pytest.raises(FeatureError, match=f"{out} holds features made with other settings "
                       rf"\(.*fingerprint {float32.fingerprint} != "):
        extract(bf16, backbones, splits=("test",))
    assert FeatureInfo.read(out) == float32
    fresh = extract(bf16, backbones, splits=("test",), features_dir=tmp_path / "bf16")
    info = FeatureInfo.read(fresh)
    assert info.fingerprint != float32.fingerprint
    assert recorded_precision(info.config) == "bfloat16"
    assert recorded_precision(float32.config) == "float32"

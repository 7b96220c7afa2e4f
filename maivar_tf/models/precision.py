"""The backbones' compute precision (``extract.precision``): float32, or bfloat16 where it pays.

``bfloat16`` builds a backbone under Keras' ``mixed_bfloat16`` policy: its variables stay
float32 (so every weights file loads unchanged), its layers compute in bfloat16, and
:class:`~maivar_tf.models.backbones.BackboneFeatures` casts the features back to float32, so
every caller (extraction, predict, the serving signatures) keeps float32 inputs and outputs.

bfloat16 is fast only where the hardware multiplies it natively: on CPUs with AVX512-BF16 or
AMX-BF16 (oneDNN's bfloat16 kernels; elsewhere TF emulates them, several times slower than
float32) and on GPUs of compute capability >= 8.0 (Ampere and later). :func:`bfloat16_support`
tells which device would run it, and :func:`check_precision` refuses ``bfloat16`` with a clear
message where neither is present. On a machine with a GPU the GPU decides. A features folder
holds one precision (its fingerprint includes it); :func:`recorded_precision` reads it from the
folder's recorded config, and predict and the export rebuild the backbones in it
(:func:`maivar_tf.runs.load_backbones`).

Example:
    >>> check_precision("bfloat16")                       # doctest: +SKIP
    >>> with precision_scope("bfloat16"):                 # doctest: +SKIP
    ...     model = build_backbone("video", "none", 224)  # mixed_bfloat16 layers
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

#: ``extract.precision`` -> the Keras dtype policy backbones are built under.
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
#: CPU flags (``/proc/cpuinfo``) of native bfloat16 arithmetic.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: The smallest GPU compute capability with bfloat16 tensor cores.
MIN_GPU_CAPABILITY = (8, 0)


class PrecisionError(RuntimeError):
    """A precision this machine cannot run at speed; the message says what it lacks."""


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (empty where ``path`` is unreadable: not Linux)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def gpu_capabilities() -> list[tuple[int, int]]:
    """The compute capability of every visible GPU (empty on a CPU-only machine)."""
    import tensorflow as tf

    out = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        out.append(tuple(details.get("compute_capability") or (0, 0)))
    return out


def bfloat16_support(flags: Iterable[str] | None = None,
                     gpus: Sequence[tuple[int, int]] | None = None) -> tuple[bool, str]:
    """Whether bfloat16 runs natively here, and on what (or what is missing).

    Args:
        flags: the CPU flags (default: :func:`cpu_flags`).
        gpus: the GPUs' compute capabilities (default: :func:`gpu_capabilities`); with any
            GPU, the GPUs decide (TF places the backbones there).

    Returns:
        ``(supported, description)``: e.g. ``(True, "CPU with avx512_bf16")`` or
        ``(False, "GPU of compute capability 7.5 (bfloat16 needs >= 8.0)")``.
    """
    gpus = gpu_capabilities() if gpus is None else list(gpus)
    if gpus:
        worst = min(tuple(c) for c in gpus)
        need = ".".join(map(str, MIN_GPU_CAPABILITY))
        if worst >= MIN_GPU_CAPABILITY:
            return True, f"GPU of compute capability {worst[0]}.{worst[1]}"
        return False, (f"GPU of compute capability {worst[0]}.{worst[1]} (bfloat16 needs "
                       f">= {need})")
    have = sorted(set(cpu_flags() if flags is None else flags) & set(CPU_BF16_FLAGS))
    if have:
        return True, f"CPU with {', '.join(have)}"
    return False, f"CPU without {' or '.join(CPU_BF16_FLAGS)}"


def check_precision(precision: str, *, flags: Iterable[str] | None = None,
                    gpus: Sequence[tuple[int, int]] | None = None) -> str:
    """``precision`` if this machine runs it natively; its Keras policy is :data:`POLICIES`.

    Raises:
        ValueError: ``precision`` is not one of :data:`POLICIES`.
        PrecisionError: ``bfloat16`` on hardware without native bfloat16.
    """
    if precision not in POLICIES:
        raise ValueError(f"extract.precision: invalid value {precision!r}; allowed: "
                         f"{', '.join(POLICIES)}")
    if precision == "bfloat16":
        ok, where = bfloat16_support(flags, gpus)
        if not ok:
            raise PrecisionError(
                f"extract.precision: bfloat16 needs a CPU with AVX512-BF16 or AMX, or a GPU of "
                f"compute capability >= 8.0; this machine has a {where}, where bfloat16 would "
                "be emulated (slower than float32). Use extract.precision=float32")
    return precision


def recorded_precision(config: Mapping[str, Any] | None) -> str:
    """The ``extract.precision`` a recorded config (``feature_info.json``'s) names.

    Folders written before the setting existed record none: their features are float32.

    Raises:
        ValueError: the record names a precision not in :data:`POLICIES`.
    """
    precision = ((config or {}).get("extract") or {}).get("precision") or "float32"
    if precision not in POLICIES:
        raise ValueError(f"extract.precision: invalid value {precision!r}; allowed: "
                         f"{', '.join(POLICIES)}")
    return precision


@contextlib.contextmanager
def precision_scope(precision: str) -> Iterator[str]:
    """Builds models under ``precision``'s Keras dtype policy; restores the old one after.

    Yields:
        The policy name (``float32`` or ``mixed_bfloat16``).
    """
    import keras

    policy = POLICIES[precision]
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.config.set_dtype_policy(old)

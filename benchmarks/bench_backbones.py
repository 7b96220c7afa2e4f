"""Backbone throughput and achieved GFLOP/s in float32 and bfloat16, next to a GEMM.

For each backbone row (``kind:architecture:side:batch``; default BNInception at 224 and
InceptionResNetV2 at 299) and each ``extract.precision`` (``float32``; ``bfloat16`` builds it
under Keras' ``mixed_bfloat16``, :mod:`maivar_tf.models.precision`, and BNInception with its
BatchNorms folded into the convolutions, as extraction builds it, :mod:`maivar_tf.models.bn_folding`;
``--fold both`` also times float32 folded and bfloat16 unfolded) and XLA setting
(``jit_compile`` off and on), it times the backbone's forward pass on a fixed random batch (best
of ``--repeats`` interleaved rounds, for a shared machine) and prints images/s and the achieved GFLOP/s (2 x the MACs of :mod:`maivar_tf.costs` x images/s).
In the same run it times a square GEMM (``--gemm N``: ``N x N @ N x N``, 2 N^3 flops) in both
dtypes with and without XLA, the machine's attainable matmul rate, and prints the ratios:
bfloat16 / float32 throughput per backbone, and backbone GFLOP/s / GEMM GFLOP/s (same dtype,
same XLA setting, the GEMM of the same rounds).

A float32 backbone under ``--explain-below`` (0.6) of the float32 GEMM rate (without XLA) gets
a measured explanation: every layer is timed alone on a tensor of its input shape (the same
batch), and the layers' times are summed per kind (convolutions by kernel and width, batch
norm, activations, pooling, concatenation, ...), with each group's share of the summed time and
the convolutions' own GFLOP/s, so one sees whether the gap is the non-matmul (memory-bound)
layers or convolutions that do not reach the GEMM rate (small channel counts, 1x1 shapes).

Usage::

    python benchmarks/bench_backbones.py                      # ~5 min on 2 cores
    python benchmarks/bench_backbones.py --json backbones.json
    python benchmarks/bench_backbones.py --rows video:bn_inception:224:32 --jit off
    python benchmarks/bench_backbones.py --rows audio:resnet18:224:32 --seconds 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from clip_bench import add_threads_flag, set_threads  # noqa: E402

DEFAULT_ROWS = ("video:bn_inception:224:32", "audio:inception_resnet_v2:299:16")


def timed(fn, *args, seconds: float, warmup: int = 2, min_calls: int = 3) -> float:
    """Seconds per call of ``fn(*args)`` (results fetched), over at least ``seconds``."""
    for _ in range(warmup):
        fn(*args).numpy()
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < seconds:
        fn(*args).numpy()
        calls += 1
    return (time.perf_counter() - start) / calls


def gemm_rate(n: int, dtype: str, jit: bool, seconds: float) -> float:
    """GFLOP/s of an ``n x n`` matmul in ``dtype``."""
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(0)
    a = tf.cast(rng.normal((n, n)), dtype)
    b = tf.cast(rng.normal((n, n)), dtype)
    fn = tf.function(lambda x, y: tf.matmul(x, y), jit_compile=jit)
    return 2 * n ** 3 / timed(fn, a, b, seconds=seconds) / 1e9


def build(kind: str, arch: str, side: int, precision: str, fold: bool | None = None):
    """The backbone as extraction builds it (``fold=None``: BatchNorm folded in bfloat16
    only), or with BatchNorm folding forced on or off (BNInception only)."""
    from maivar_tf.models.backbones import build_backbone

    extra = {} if fold is None or kind != "video" else {"fold_batch_norm": fold}
    return build_backbone(kind, "none", side, architecture=arch, precision=precision, **extra)


def variants(kind: str, precisions, fold: str) -> list[tuple[str, bool | None, str]]:
    """``(precision, fold, label)`` to time: the default builds, and with ``--fold both`` the
    BNInception builds with the other folding too (``float32+fold``, ``bfloat16-nofold``)."""
    out = [(p, None, p) for p in precisions]
    if fold == "both" and kind == "video":
        out += [(p, p != "bfloat16", f"{p}{'+fold' if p != 'bfloat16' else '-nofold'}")
                for p in precisions]
    return out


def backbone_rate(model, side: int, batch: int, jit: bool, seconds: float) -> float:
    """Images/s of ``model`` on a random float32 batch (RGB 0..255)."""
    import tensorflow as tf

    images = tf.random.stateless_uniform((batch, side, side, 3), (1, 2), 0, 255)
    fn = tf.function(lambda x: model(x, training=False), jit_compile=jit)
    return batch / timed(fn, images, seconds=seconds)


def measure(rows, precisions, jits, gemm_n: int, seconds: float, repeats: int,
            fold: str = "default") -> dict:
    """The GEMM and backbone figures of one run: each the best of ``repeats`` rounds, every
    round timing each precision and XLA setting in turn, with the GEMM timed right beside each
    backbone timing (a shared machine's load then hits all of them alike)."""
    from maivar_tf.costs import backbone_macs

    gemm: dict[str, float] = {}
    out = []
    for row in rows:
        kind, arch, side, batch = row.split(":")
        side, batch = int(side), int(batch)
        macs = backbone_macs(kind, side, arch)
        todo = variants(kind, precisions, fold)
        models = {label: build(kind, arch, side, p, f) for p, f, label in todo}
        best: dict[str, float] = {}
        row_gemm: dict[str, float] = {}
        for _ in range(repeats):
            for p, _fold, label in todo:
                for j in jits:
                    xla = "jit" if j else "nojit"
                    key, gemm_key = f"{label}/{xla}", f"{p}/{xla}"
                    g = gemm_rate(gemm_n, p, j, seconds)
                    row_gemm[key] = max(row_gemm.get(key, 0.0), g)
                    gemm[gemm_key] = max(gemm.get(gemm_key, 0.0), g)
                    ips = backbone_rate(models[label], side, batch, j, seconds)
                    best[key] = max(best.get(key, 0.0), ips)
                    print(f"  measured {arch}@{side} {key}: {ips:.2f} img/s, GEMM {g:.0f} "
                          "GFLOP/s", flush=True)
        for key, ips in best.items():
            p, j = key.split("/")[0], key.endswith("/jit")
            # against the GEMM of the same rounds (the machine's load then was the same)
            out.append({"backbone": f"{arch}@{side}", "kind": kind, "architecture": arch,
                        "image_size": side, "batch": batch, "precision": p, "jit": j,
                        "macs": macs, "images_per_s": ips, "gflops": 2 * macs * ips / 1e9,
                        "gemm_gflops": row_gemm[key],
                        "of_gemm": 2 * macs * ips / 1e9 / row_gemm[key]})
    return {"gemm_n": gemm_n, "gemm_gflops": gemm, "backbones": out}


def ratios(result: dict) -> list[dict]:
    """bfloat16 / float32 images/s per backbone and XLA setting."""
    rows = {(r["backbone"], r["jit"], r["precision"]): r for r in result["backbones"]}
    out = []
    for (name, jit, p), r in rows.items():
        base = rows.get((name, jit, "float32"))
        if p == "bfloat16" and base:
            out.append({"backbone": name, "jit": jit,
                        "bf16_over_fp32": r["images_per_s"] / base["images_per_s"]})
    return out


# ----------------------------------------------------------------------------- explanation


def layer_group(layer) -> str:
    """The group a layer's time is summed under."""
    name = type(layer).__name__
    if name == "Conv2D":
        k = "x".join(map(str, layer.kernel_size))
        width = "<=64" if layer.filters <= 64 else ("65-192" if layer.filters <= 192 else ">192")
        return f"conv {k} out {width}"
    return {"BatchNormalization": "batch norm", "ReLU": "activation",
            "Activation": "activation", "Concatenate": "concatenate",
            "ZeroPadding2D": "padding"}.get(name, "pooling" if "Pool" in name else "other")


def layer_times(model, batch: int, seconds: float) -> list[dict]:
    """Every layer of a flat functional ``model`` timed alone at its input shape."""
    import tensorflow as tf

    from maivar_tf.costs import layer_macs

    macs = layer_macs(model)
    out = []
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        ins = layer.input if isinstance(layer.input, list) else [layer.input]
        args = [tf.random.stateless_uniform((batch, *t.shape[1:]), (3, 4), 0, 1,
                                            dtype=t.dtype) for t in ins]
        call = tf.function(lambda *x, layer=layer: layer(list(x) if len(x) > 1 else x[0]))
        t = timed(call, *args, seconds=seconds, warmup=1, min_calls=2)
        out.append({"layer": layer.name, "group": layer_group(layer), "seconds": t,
                    "macs": macs.get(layer.name, 0) * batch})
    return out


def explain(model, name: str, batch: int, whole_s: float, seconds: float, gemm: float) -> dict:
    """Per-group time shares and convolution GFLOP/s of a float32 backbone (printed)."""
    times = layer_times(model, batch, seconds)
    total = sum(t["seconds"] for t in times)
    groups: dict[str, dict] = {}
    for t in times:
        g = groups.setdefault(t["group"], {"seconds": 0.0, "macs": 0, "layers": 0})
        g["seconds"] += t["seconds"]
        g["macs"] += t["macs"]
        g["layers"] += 1
    conv_s = sum(g["seconds"] for k, g in groups.items() if k.startswith("conv"))
    conv_macs = sum(g["macs"] for g in groups.values())
    print(f"\nwhy {name} float32 is below the GEMM rate: each layer timed alone, batch {batch} "
          f"(sum {total * 1e3:.0f} ms vs the whole network {whole_s * 1e3:.0f} ms per batch)")
    print(f"  {'group':<24} {'layers':>6} {'ms':>8} {'share':>6} {'GFLOP/s':>8} {'of GEMM':>7}")
    for k, g in sorted(groups.items(), key=lambda kv: -kv[1]["seconds"]):
        rate = 2 * g["macs"] / g["seconds"] / 1e9 if g["macs"] else 0.0
        print(f"  {k:<24} {g['layers']:>6} {g['seconds'] * 1e3:>8.1f} "
              f"{g['seconds'] / total:>6.1%} {rate:>8.1f} {rate / gemm:>7.2f}")
    conv_rate = 2 * conv_macs / conv_s / 1e9
    print(f"  convolutions alone: {conv_rate:.1f} GFLOP/s = {conv_rate / gemm:.2f} of the GEMM; "
          f"non-conv layers take {(total - conv_s) / total:.1%} of the summed time")
    return {"backbone": name, "batch": batch, "sum_seconds": total, "whole_seconds": whole_s,
            "conv_gflops": conv_rate, "conv_of_gemm": conv_rate / gemm,
            "non_conv_share": (total - conv_s) / total, "groups": groups}


# ----------------------------------------------------------------------------- main


def print_table(result: dict) -> None:
    print(f"GEMM {result['gemm_n']}^2: " + ", ".join(
        f"{k} {v:.0f} GFLOP/s" for k, v in result["gemm_gflops"].items()))
    print(f"{'backbone':<26} {'prec':<16} {'jit':<5} {'img/s':>8} {'GFLOP/s':>8} {'GEMM':>6} "
          f"{'of GEMM':>8}")
    for r in result["backbones"]:
        print(f"{r['backbone']:<26} {r['precision']:<16} {'on' if r['jit'] else 'off':<5} "
              f"{r['images_per_s']:>8.2f} {r['gflops']:>8.1f} {r['gemm_gflops']:>6.0f} "
              f"{r['of_gemm']:>8.2f}")
    for r in result["ratios"]:
        print(f"{r['backbone']:<26} bfloat16/float32 (jit {'on' if r['jit'] else 'off'}): "
              f"{r['bf16_over_fp32']:.2f}x")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS),
                        help="kind:architecture:side:batch (default: %(default)s)")
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--jit", choices=("off", "on", "both"), default="both")
    parser.add_argument("--fold", choices=("default", "both"), default="default",
                        help="both: also time BNInception with the other BatchNorm folding "
                             "(float32+fold, bfloat16-nofold; extraction folds in bfloat16)")
    parser.add_argument("--gemm", type=int, default=2048, help="GEMM side (default 2048)")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="minimum timed seconds per figure (default 3)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="best of this many rounds per figure (default 2)")
    parser.add_argument("--explain-below", type=float, default=0.6,
                        help="explain float32 backbones under this fraction of the GEMM")
    parser.add_argument("--explain-seconds", type=float, default=0.05,
                        help="minimum timed seconds per layer in the explanation")
    parser.add_argument("--json", help="also write the figures here")
    add_threads_flag(parser)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    jits = {"off": [False], "on": [True], "both": [False, True]}[args.jit]
    if "bfloat16" in args.precisions:
        from maivar_tf.models.precision import bfloat16_support

        native, where = bfloat16_support()
        print(f"bfloat16 hardware: {where} ({'native' if native else 'emulated: slow'})")
    result = measure(args.rows, args.precisions, jits, args.gemm, args.seconds, args.repeats,
                     args.fold)
    result["ratios"] = ratios(result)
    result["load_average"] = os.getloadavg()
    print_table(result)
    result["explanations"] = []
    for r in result["backbones"]:
        if r["precision"] == "float32" and not r["jit"] and r["of_gemm"] < args.explain_below:
            model = build(r["kind"], r["architecture"], r["image_size"], "float32")
            result["explanations"].append(explain(
                model, r["backbone"], r["batch"], r["batch"] / r["images_per_s"],
                args.explain_seconds, r["gemm_gflops"]))
    print(f"load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())

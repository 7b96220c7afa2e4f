"""MACs per image of the backbones, counted from their layers (:mod:`maivar_tf.costs`).

Prints one row per backbone and input side: multiply-accumulates of one image (one frame for
BNInception, one audio-image for the audio backbones), and, for reference, the ratio to one
BNInception frame (the first video row, 224 px by default). Every backbone is built once with random
weights (the count does not depend on them); nothing runs through the networks.

Usage::

    python benchmarks/bench_costs.py
    python benchmarks/bench_costs.py --json costs.json
    python benchmarks/bench_costs.py --rows video:bn_inception:160 audio:mobilenet_v3_small:96
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: ``kind:architecture:side`` rows of the default table.
DEFAULT_ROWS = ("video:bn_inception:224", "video:bn_inception:128", "audio:resnet18:128",
                "audio:inception_resnet_v2:299", "audio:mobilenet_v3_small:128",
                "audio:mobilenet_v3_small:224")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS),
                        help="kind:architecture:side (default: %(default)s)")
    parser.add_argument("--json", help="also write the table here")
    args = parser.parse_args(argv)

    from maivar_tf.costs import backbone_macs

    rows = []
    for spec in args.rows:
        kind, arch, side = spec.split(":")
        start = time.perf_counter()
        macs = backbone_macs(kind, int(side), arch)
        rows.append({"kind": kind, "architecture": arch, "image_size": int(side),
                     "macs": macs, "count_seconds": round(time.perf_counter() - start, 2)})
    video = next((r for r in rows if r["kind"] == "video"), None)
    ref = f"x {video['architecture']}@{video['image_size']}" if video else ""
    print(f"{'backbone':<28} {'side':>5} {'MACs':>16} {'GMACs':>8}  {ref}")
    for r in rows:
        ratio = f"{r['macs'] / video['macs']:8.3f}" if video else ""
        print(f"{r['kind'] + ' ' + r['architecture']:<28} {r['image_size']:>5} "
              f"{r['macs']:>16,} {r['macs'] / 1e9:>8.3f}  {ratio}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

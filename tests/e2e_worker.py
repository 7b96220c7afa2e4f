"""Runs an end-to-end training (tests/e2e_data.py's tiny experiment) in its own process.

For tests/test_end_to_end_distributed.py: logical CPU devices must be configured before
TensorFlow initialises, and ``MultiWorkerMirroredStrategy`` must be created first, with
``TF_CONFIG`` set. After each stage's fit the worker records, for every variable of the stage's
model (backbone and head, BatchNorm statistics included) that is mirrored over this process's
replicas, the largest difference between its replicas' values.

Usage::

    python tests/e2e_worker.py --root DATA --run-dir RUN --strategy mirrored --logical-cpus 2 \
        --result RUN/result.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def replica_spread(model) -> tuple[int, float]:
    """``(mirrored variables, max |replica i - replica 0|)`` over ``model.variables``."""
    import numpy as np

    count, spread = 0, 0.0
    for v in model.variables:
        values = getattr(getattr(v, "value", v), "values", None)
        if not values or len(values) < 2:
            continue
        count += 1
        first = np.asarray(values[0])
        for other in values[1:]:
            spread = max(spread, float(np.max(np.abs(np.asarray(other) - first), initial=0.0)))
    return count, spread


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--root", required=True, help="the folder write_e2e_data filled")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--strategy", default="default")
    p.add_argument("--logical-cpus", type=int, default=0)
    p.add_argument("--finetune", default="both")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--result", required=True)
    args = p.parse_args(argv)

    from tests.cluster_helpers import worker_strategy

    strategy = worker_strategy(args.strategy, args.logical_cpus)  # first TF work here
    import keras

    from maivar_tf.end_to_end import run_end_to_end
    from tests.e2e_data import e2e_config

    spreads: dict[str, dict] = {}

    class ReplicaCheck(keras.callbacks.Callback):
        def __init__(self, stage: str) -> None:
            super().__init__()
            self.stage = stage

        def on_train_end(self, logs=None):
            count, spread = replica_spread(self.model)
            spreads[self.stage] = {"mirrored_variables": count, "max_difference": spread,
                                   "variables": len(self.model.variables)}

    cfg = e2e_config(Path(args.root), finetune=args.finetune, epochs=args.epochs,
                     batch=args.batch, strategy=args.strategy)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train,
                                                             output_dir=args.run_dir))
    run = run_end_to_end(cfg, args.run_dir, strategy=strategy, verbose=0,
                         extra_callbacks=lambda s: [ReplicaCheck(s)])
    summary = {"run_dir": str(run.run_dir), "num_replicas": strategy.num_replicas_in_sync,
               "strategy": type(strategy).__name__, "stages": dict(run.info.stages),
               "replicas": spreads}
    Path(args.result).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

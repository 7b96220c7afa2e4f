"""Runs Algorithm 1 on a toy FeatureSet in its own process, for tests/test_training.py.

Each distributed test needs a fresh TensorFlow process: logical CPU devices must be configured
before TensorFlow initialises its devices, ``MultiWorkerMirroredStrategy`` must be created
before other TensorFlow work with ``TF_CONFIG`` already set, and the resume test kills the
process with SIGKILL. The toy problem (:func:`toy_features`) crosses a factor only the video
features carry with a factor only the audio features carry, so video alone and audio alone top
out near 50% and fusion can reach 100%.

Usage::

    python tests/distributed_worker.py --strategy mirrored --logical-cpus 2 --run-dir D \
        --result D/result.json
    TF_CONFIG=... python tests/distributed_worker.py --strategy multi_worker --run-dir D ...
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

#: Feature widths of the toy problem (smaller than BNInception's 1024 and IRV2's 1536: the
#: heads take any width, and the tests' claims are about training, not about the widths).
VIDEO_DIM, AUDIO_DIM = 64, 96


def toy_features(n_per_class: int, num_segments: int = 3, seed: int = 0, split_seed: int = 0):
    """A 4-class FeatureSet: class = 2 * video_factor + audio_factor.

    Video features carry the video factor (a dense +-0.5 pattern on every dim and segment, plus
    unit noise), audio features the audio factor (likewise over the audio dims). The patterns
    depend on ``seed`` only; ``split_seed`` draws the noise, so train and validation sets share
    patterns but not samples.
    """
    from maivar_tf.features import FeatureSet

    patterns = np.random.default_rng(seed)
    v_pat = patterns.choice([-0.5, 0.5], (2, VIDEO_DIM)).astype(np.float32)
    a_pat = patterns.choice([-0.5, 0.5], (2, AUDIO_DIM)).astype(np.float32)
    rng = np.random.default_rng(1000 + split_seed)
    labels = np.repeat(np.arange(4), n_per_class).astype(np.int64)
    n = len(labels)
    video = rng.normal(0.0, 1.0, (n, num_segments, VIDEO_DIM)).astype(np.float32)
    audio = rng.normal(0.0, 1.0, (n, AUDIO_DIM)).astype(np.float32)
    video += v_pat[labels // 2][:, None, :]
    audio += a_pat[labels % 2]
    ids = np.array([f"toy-{split_seed}-{i:05d}" for i in range(n)])
    names = ("left_low", "left_high", "right_low", "right_high")
    return FeatureSet(ids=ids, video=video, audio=audio, labels=labels, class_names=names,
                      representation="chromagram")


def toy_config(strategy: str = "default", epochs: tuple[int, int, int] = (12, 12, 12),
               batch: int = 32, lr: float = 1e-2, hidden_units: int = 16, seed: int = 0):
    """A tiny ExperimentConfig for the toy problem (``epochs``: audio, video, fusion)."""
    from maivar_tf.config import ExperimentConfig, ModelConfig, StageConfig, TrainConfig

    audio, video, fusion = (StageConfig(epochs=e, learning_rate=lr, batch_size=batch)
                            for e in epochs)
    return ExperimentConfig(
        name="toy",
        model=ModelConfig(hidden_units=hidden_units, dropout=0.1, l1=1e-6,
                          video_pooling="mean", audio_rows_init="zeros"),
        train=TrainConfig(strategy=strategy, audio=audio, video=video, fusion=fusion, seed=seed),
    )


class Interrupted(Exception):
    """Raised by ``--resume-check`` to stop a fit the way a kill would (its backup is kept)."""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--strategy", default="default",
                   choices=["auto", "default", "mirrored", "multi_worker"])
    p.add_argument("--logical-cpus", type=int, default=0,
                   help="split the CPU into this many logical devices first")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--result", help="write a JSON summary here")
    p.add_argument("--epochs", default="12,12,12", help="audio,vmlp,fusion epochs")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--n-per-class", type=int, default=32)
    p.add_argument("--sleep", type=float, default=0.0, help="seconds to sleep after each epoch")
    p.add_argument("--record", help="append 'pid stage epoch' at every epoch start to this file")
    p.add_argument("--kill-at", metavar="STAGE:EPOCH",
                   help="SIGKILL this process when STAGE's (zero-based) EPOCH begins, after the "
                        "backup of the epoch before it was written")
    p.add_argument("--resume-check", metavar="STAGE:EPOCH",
                   help="after the run, train it again under RUN_DIR/resumed (the stages before "
                        "STAGE copied), interrupted by an exception when STAGE's EPOCH begins "
                        "and resumed in this process (for a cluster, where a second launch is "
                        "slow)")
    args = p.parse_args(argv)

    from maivar_tf import distribute, runs, training
    from tests.cluster_helpers import worker_strategy

    strategy = worker_strategy(args.strategy, args.logical_cpus)  # first TF work here
    import keras

    class Probe(keras.callbacks.Callback):
        def __init__(self, stage: str) -> None:
            super().__init__()
            self.stage = stage

        def on_epoch_begin(self, epoch, logs=None):
            if args.record:
                with open(args.record, "a") as f:
                    f.write(f"{os.getpid()} {self.stage} {epoch}\n")
            if args.kill_at == f"{self.stage}:{epoch}":
                os.kill(os.getpid(), signal.SIGKILL)

        def on_epoch_end(self, epoch, logs=None):
            if args.sleep:
                time.sleep(args.sleep)

    epochs = tuple(int(e) for e in args.epochs.split(","))
    cfg = toy_config(args.strategy, epochs=epochs, batch=args.batch)
    train = toy_features(args.n_per_class, split_seed=0)
    val = toy_features(max(4, args.n_per_class // 2), split_seed=1)
    result = training.run_algorithm1(cfg, train, val, run_dir=args.run_dir, strategy=strategy,
                                     verbose=0, extra_callbacks=lambda s: [Probe(s)])
    summary = {"resumed_run_dir": None}
    if args.resume_check:
        stage, epoch = args.resume_check.split(":")
        resumed = distribute.worker_run_dir(Path(args.run_dir) / "resumed",
                                            distribute.worker_info(strategy))
        resumed.mkdir(parents=True, exist_ok=True)
        for done in runs.STAGES[:runs.STAGES.index(stage)]:
            shutil.copy(result.run_dir / f"{done}.keras", resumed / f"{done}.keras")

        class Interrupt(keras.callbacks.Callback):
            def on_epoch_begin(self, e, logs=None):
                if e == int(epoch):
                    raise Interrupted

        def interrupting(s):
            return [Interrupt()] if s == stage else []

        try:
            training.run_algorithm1(cfg, train, val, run_dir=Path(args.run_dir) / "resumed",
                                    strategy=strategy, verbose=0, extra_callbacks=interrupting)
            raise AssertionError("the run was not interrupted")
        except Interrupted:
            pass
        again = training.run_algorithm1(cfg, train, val, run_dir=Path(args.run_dir) / "resumed",
                                        strategy=strategy, verbose=0)
        summary["resumed_run_dir"] = str(again.run_dir)
        summary["resumed_after_epoch"] = again.info.stages[stage]["resumed_after_epoch"]
    summary.update({
        "pid": os.getpid(), "run_dir": str(result.run_dir),
        "num_replicas": strategy.num_replicas_in_sync, "strategy": type(strategy).__name__,
        "stages": dict(result.info.stages),
        "val_accuracy": {s: m["val"]["accuracy"] for s, m in result.info.metrics.items()},
    })
    if args.result:
        Path(args.result).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

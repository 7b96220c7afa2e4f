"""One stage's ``model.fit``: Algorithm 1's heads on features, or an end-to-end stage.

:func:`train_stage` builds and compiles the stage's model inside ``strategy.scope()``, feeds it
a stage input (in-memory features, :class:`~maivar_tf.distribute.ArrayInput`, or the
TFRecords, :class:`~maivar_tf.end_to_end_data.TFRecordInput`), resumes from the stage's
``BackupAndRestore`` backup with every random stream put at its epoch
(:mod:`maivar_tf.seeds`), and saves the finished stage as ``run_dir/<stage>.keras``
(:class:`StageHooks` change the optimizer, what is saved and how it is loaded back).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from maivar_tf import callbacks as stage_io
from maivar_tf.distribute import ArrayInput, global_batch_size
from maivar_tf.late_stage import save_model_atomic
from maivar_tf.runs import load_head
from maivar_tf.seeds import EpochStreams

logger = logging.getLogger(__name__)

#: ``extra_callbacks(stage_name)`` -> more callbacks for that stage's fit.
ExtraCallbacks = Callable[[str], Sequence[keras.callbacks.Callback]]


@dataclass(frozen=True)
class StagePlan:
    """How one Algorithm 1 stage trains.

    Args:
        name: the stage (``audio_mlp``, ``vmlp``, ``fusion``; its folder and ``.keras`` name).
        epochs: passes over the training features.
        learning_rate: Adam's learning rate.
        batch_size: the configured global batch.
        seed: the stage's seed (``train.seed`` plus the stage's index).
    """

    name: str
    epochs: int
    learning_rate: float
    batch_size: int
    seed: int


@dataclass(frozen=True)
class StageHooks:
    """What a stage does differently from the feature path's default (an end-to-end stage:
    :mod:`maivar_tf.end_to_end`).

    Args:
        optimizer: ``optimizer(model, plan)`` -> the optimizer (default Adam at the plan's
            learning rate).
        save: ``save(model, final_path)`` writes the finished stage (default: the model,
            atomically, as ``<stage>.keras``).
        load: ``load(final_path)`` -> the finished stage's model (default :func:`load_head`).
        jit_compile: ``model.compile(jit_compile=...)`` (XLA).
    """

    optimizer: Callable[[keras.Model, StagePlan], Any] | None = None
    save: Callable[[keras.Model, Path], None] | None = None
    load: Callable[[Path], Any] | None = None
    jit_compile: bool = False


def _compiled(build: Callable[[], keras.Model], plan: StagePlan,
              strategy: tf.distribute.Strategy, hooks: StageHooks) -> keras.Model:
    with strategy.scope():
        model = build()
        optimizer = (hooks.optimizer(model, plan) if hooks.optimizer is not None
                     else keras.optimizers.Adam(plan.learning_rate))
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=hooks.jit_compile)
    return model


def _as_input(xy: Any) -> Any:
    """A StageInput: ``xy`` itself, or an :class:`ArrayInput` of an ``(inputs, labels)`` pair."""
    if xy is None or hasattr(xy, "distributed"):
        return xy
    return ArrayInput(*xy)


def train_stage(plan: StagePlan, build: Callable[[], keras.Model], train_xy: Any,
                val_xy: Any, strategy: tf.distribute.Strategy,
                run_dir: Path, *, verbose: Any = "auto",
                extra_callbacks: ExtraCallbacks | None = None,
                hooks: StageHooks | None = None) -> tuple[keras.Model, dict[str, Any]]:
    """Trains one stage with ``fit`` (resuming from its backup) and saves ``<stage>.keras``.

    Args:
        plan: the stage's settings.
        build: builds the uncompiled model (called inside ``strategy.scope()``).
        train_xy: ``(inputs, labels)`` in memory, or a stage input (``num_examples`` and
            ``distributed(strategy, global_batch, training=, seed=, first_epoch=)``: an
            :class:`~maivar_tf.distribute.ArrayInput` or the TFRecords'
            :class:`~maivar_tf.end_to_end_data.TFRecordInput`).
        val_xy: optional validation data, the same kinds.
        strategy: the distribution strategy.
        run_dir: this worker's run folder.
        verbose: ``model.fit`` verbosity, or ``"auto"`` (see
            :func:`maivar_tf.callbacks.fit_verbosity`).
        extra_callbacks: more callbacks for the fit, by stage name.
        hooks: the optimizer, saving and loading of a stage other than a head's
            (:class:`StageHooks`; default the feature path's).

    Returns:
        ``(model, stage_info)``; ``stage_info`` is ``{"skipped": True}`` when ``<stage>.keras``
        already existed (the model is loaded), else the settings the fit used.
    """
    hooks = hooks or StageHooks()
    final = run_dir / f"{plan.name}.keras"
    if final.exists():
        logger.info("stage %s: %s exists, skipping", plan.name, final)
        return (hooks.load or load_head)(final), {"skipped": True}
    stage_io.stage_dir(run_dir, plan.name).mkdir(parents=True, exist_ok=True)
    epochs_done = stage_io.resume_epoch(run_dir, plan.name)
    if epochs_done:
        logger.info("stage %s: resuming after epoch %d of %d", plan.name, epochs_done,
                    plan.epochs)
    keras.utils.set_random_seed(plan.seed)
    train_in, val_in = _as_input(train_xy), _as_input(val_xy)
    replicas = strategy.num_replicas_in_sync
    batch = global_batch_size(plan.batch_size, train_in.num_examples, replicas)
    model = _compiled(build, plan, strategy, hooks)
    train_ds, steps = train_in.distributed(strategy, batch, training=True, seed=plan.seed,
                                           first_epoch=epochs_done)
    val_ds = val_steps = None
    if val_in is not None:
        val_ds, val_steps = val_in.distributed(strategy, batch, training=False)
    extra = extra_callbacks(plan.name) if extra_callbacks is not None else ()
    verbose, lines = stage_io.fit_verbosity(verbose, plan.name, plan.epochs)
    streams = EpochStreams(plan.seed, first_epoch=epochs_done)  # dropout masks of each epoch
    callbacks = stage_io.stage_callbacks(run_dir, plan.name, validation=val_ds is not None,
                                         extra=[streams, *lines, *extra])
    t0 = time.time()
    model.fit(train_ds, epochs=plan.epochs, steps_per_epoch=steps, validation_data=val_ds,
              validation_steps=val_steps, callbacks=callbacks, verbose=verbose,
              shuffle=False)  # the dataset shuffles itself
    (hooks.save or save_model_atomic)(model, final)
    shutil.rmtree(stage_io.stage_dir(run_dir, plan.name) / stage_io.BACKUP_SUBDIR,
                  ignore_errors=True)
    return model, {
        "skipped": False, "epochs": plan.epochs, "resumed_after_epoch": epochs_done,
        "learning_rate": plan.learning_rate, "global_batch_size": batch,
        "per_replica_batch_size": batch // replicas, "steps_per_epoch": steps,
        "seconds": round(time.time() - t0, 3),
    }


__all__ = ["ExtraCallbacks", "StageHooks", "StagePlan", "train_stage"]

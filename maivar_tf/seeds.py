"""Every random stream of a training stage as a function of (seed, stage, epoch) only.

A stage of :func:`maivar_tf.training.run_algorithm1` (Shaikh et al. 2024, Algorithm 1) seeds
its initial weights with its stage seed (``train.seed`` plus the stage's index) through
``keras.utils.set_random_seed``. Two streams keep running during the fit, and a resume from
``BackupAndRestore`` starts them over, since neither is in the backup:

* the **data order**: a ``tf.data`` shuffle iterator restarts at its first permutation;
* the **dropout masks**: a ``keras.random.SeedGenerator``'s state is not saved with the
  weights, so it restarts at its initial value.

So epoch ``e`` of a resumed stage would see the data order and the masks of epoch 0, not those
of epoch ``e``. Here both are positioned by the epoch instead: epoch ``e``'s order is a
permutation seeded by ``[stream_seed(seed, DATA_ORDER), e]``
(:func:`maivar_tf.distribute.training_index_batches`), and :class:`EpochStreams` resets every
seed generator of the model to ``[stream_seed(seed, DROPOUT, i, e), 0]`` when epoch ``e``
begins. A run killed at any epoch and resumed then ends with the weights of the uninterrupted
run. The rest is deterministic: the optimizer (Adam) draws nothing, the loss (cross-entropy plus
the L1 penalties) neither, and the fusion head's extra rows come from NumPy with a fixed seed.
"""

from __future__ import annotations

import keras
import numpy as np

#: Stream tags, so the streams of one stage never share a seed.
DATA_ORDER = 1
DROPOUT = 2
#: The training augmentation of an end-to-end stage (crops, flips, segment offsets).
AUGMENT = 3
#: The order inside each window of an end-to-end stage's TFRecord stream.
WINDOW_ORDER = 4


def stream_seed(seed: int, stream: int, *parts: int) -> int:
    """A seed in ``[0, 2**31)`` that depends on ``seed``, ``stream`` and ``parts`` only.

    Mixed by NumPy's ``SeedSequence`` (a fixed, documented algorithm), so nearby seeds and
    epochs give unrelated streams.
    """
    words = [int(seed) % 2**32, int(stream), *(int(p) % 2**32 for p in parts)]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint32)[0] >> 1)


def seed_generator_states(model: keras.Model) -> list:
    """The state variables of the model's ``SeedGenerator`` s (dropout), in layer order.

    Those are what ``model.variables`` holds beyond ``model.weights`` (Keras: "``variables``
    extends ``weights`` to include all state used by the layer including SeedGenerators").
    """
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def reset_seed_generators(model: keras.Model, seed: int, epoch: int) -> None:
    """Sets seed generator ``i`` of ``model`` to ``[stream_seed(seed, DROPOUT, i, epoch), 0]``."""
    for index, state in enumerate(seed_generator_states(model)):
        value = [stream_seed(seed, DROPOUT, index, epoch), 0]
        state.assign(np.asarray(value, dtype=state.dtype))


class EpochStreams(keras.callbacks.Callback):
    """Puts the stage's random streams at ``(seed, epoch)`` when each epoch begins.

    Resets the dropout seed generators (:func:`reset_seed_generators`) and checks that the fit
    starts at the epoch the training data's order was built for (``first_epoch``, the
    backup's epoch): a mismatch would silently replay another epoch's order.

    Args:
        seed: the stage seed.
        first_epoch: the epoch the training dataset starts at.
    """

    def __init__(self, seed: int, first_epoch: int = 0):
        super().__init__()
        self.seed, self.first_epoch = int(seed), int(first_epoch)
        self._started = False

    def on_train_begin(self, logs=None):
        self._started = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._started and epoch != self.first_epoch:
            raise RuntimeError(f"the fit starts at epoch {epoch} but its data order was built "
                               f"to start at epoch {self.first_epoch} (an unreadable backup?)")
        self._started = True
        reset_seed_generators(self.model, self.seed, epoch)


__all__ = ["DATA_ORDER", "DROPOUT", "EpochStreams", "reset_seed_generators",
           "seed_generator_states", "stream_seed"]

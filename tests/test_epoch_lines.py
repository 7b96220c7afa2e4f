"""Training output for log files: a line now and then per stage, not one per epoch."""

from __future__ import annotations

import keras
import numpy as np

from maivar_tf.callbacks import EpochLines, fit_verbosity


def _fit(callback, epochs=4):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = np.zeros((8, 3), np.float32), np.zeros(8, np.int64)
    model.fit(x, y, epochs=epochs, verbose=0, callbacks=[callback])


def test_every_epoch_when_the_interval_is_zero(capsys):
    _fit(EpochLines("vmlp", 4, every_s=0.0))
    lines = capsys.readouterr().err.strip().splitlines()
    assert [ln.split(",")[0] for ln in lines] == [f"vmlp: epoch {e}/4" for e in (1, 2, 3, 4)]
    assert all(" loss " in ln for ln in lines)


def test_only_the_last_epoch_within_one_interval(capsys):
    _fit(EpochLines("fusion", 4, every_s=1e9))
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fusion: epoch 4/4, loss ")


def test_auto_verbosity_off_a_terminal_uses_epoch_lines():
    # pytest captures stdout, so it is not a terminal here.
    verbose, callbacks = fit_verbosity("auto", "audio_mlp", 10)
    assert verbose == 0 and len(callbacks) == 1 and isinstance(callbacks[0], EpochLines)
    assert fit_verbosity(2, "audio_mlp", 10) == (2, [])

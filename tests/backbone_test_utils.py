"""One check for every backbone, in the shape of keras-hub's ``TestCase.run_backbone_test``.

:func:`run_backbone_test` builds a backbone from its constructor (a registered class or a
builder function) and checks, in order:

1. the output shape (and that every output is finite and float32);
2. the config round trip: ``from_config(get_config())`` rebuilds the same type, config and
   layer names, and for a class the config holds exactly constructor arguments
   (``from_config`` is ``cls(**config)``);
3. ``.keras`` save / ``keras.saving.load_model`` without custom objects (so every custom
   object is registered): same type, same config, bit-identical outputs;
4. the weights round trip: ``save_weights`` then ``load_weights`` into the freshly initialised
   clone of step 2 (whose weights differed) gives bit-identical outputs.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np


def _outputs(model: keras.Model, input_data: Any) -> np.ndarray:
    """Inference outputs as float32 NumPy (one code path for every comparison)."""
    return np.asarray(keras.ops.convert_to_numpy(model(input_data, training=False)))


def _check_config_round_trip(build: Callable[..., keras.Model], model: keras.Model,
                             expected_config: dict | None) -> keras.Model:
    config = model.get_config()
    if expected_config is not None:
        assert config == expected_config
    if inspect.isclass(build):
        # The config is exactly constructor hyperparameters: cls(**config) binds.
        inspect.signature(build).bind(**config)
    clone = type(model).from_config(copy.deepcopy(config))  # Functional's pops keys
    assert type(clone) is type(model)
    assert clone.get_config() == config
    assert [layer.name for layer in clone.layers] == [layer.name for layer in model.layers]
    return clone


def _check_keras_save_load(model: keras.Model, input_data: Any, output: np.ndarray,
                           tmp_path: Path) -> None:
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # registered objects: no custom_objects needed
    assert type(loaded) is type(model)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(_outputs(loaded, input_data), output)


def _check_weights_round_trip(model: keras.Model, clone: keras.Model, input_data: Any,
                              output: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / f"{model.name}.weights.h5"
    model.save_weights(str(path))
    assert any(not np.array_equal(a, b)
               for a, b in zip(clone.get_weights(), model.get_weights(), strict=True)), (
        "the freshly built clone already holds the same weights; the weights round trip "
        "would prove nothing")
    clone.load_weights(str(path))
    np.testing.assert_array_equal(_outputs(clone, input_data), output)


def run_backbone_test(build: Callable[..., keras.Model], init_kwargs: dict[str, Any],
                      input_data: Any, expected_output_shape: tuple[int | None, ...],
                      tmp_path: Path, *, expected_config: dict | None = None,
                      run_saving_test: bool = True,
                      seed: int = 0) -> tuple[keras.Model, np.ndarray]:
    """Runs the shape, config, ``.keras`` and weights checks on ``build(**init_kwargs)``.

    Args:
        build: the backbone class (registered, ``from_config`` = ``cls(**config)``) or a
            function returning a functional ``keras.Model``.
        init_kwargs: the constructor / builder arguments.
        input_data: a batch the model accepts.
        expected_output_shape: the output shape for ``input_data``.
        tmp_path: a scratch directory (pytest's ``tmp_path``).
        expected_config: when given, ``get_config()`` must equal it.
        run_saving_test: run the ``.keras`` save / load check (step 3).
        seed: Keras' global seed for the first build (the clone is built afterwards and so
            starts from other random weights).

    Returns:
        ``(model, outputs)`` for further checks by the caller.
    """
    keras.utils.set_random_seed(seed)
    model = build(**init_kwargs)
    output = _outputs(model, input_data)
    assert output.shape == tuple(expected_output_shape)
    assert output.dtype == np.float32 and np.isfinite(output).all()
    clone = _check_config_round_trip(build, model, expected_config)
    if run_saving_test:
        _check_keras_save_load(model, input_data, output, tmp_path)
    _check_weights_round_trip(model, clone, input_data, output, tmp_path)
    return model, output

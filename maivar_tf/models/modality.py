"""Modality dropout (``train.fusion.modality_dropout``): training clips that lose their audio.

Alfasly et al. (CVPR 2022) keep an audio-visual model useful when a modality is missing by
dropping it during training. Here a clip "without audio" is exactly what a clip without a sound
track gets under ``data.on_missing_audio: silence``: the audio backbone's features of the silent
audio-image (``FeatureSet.silent_audio``). :class:`ModalityDropout`, placed on the raw audio
input of a fusion model, replaces in training each clip's audio input by those silent features
with probability ``rate``, independently per clip: a clip-level input ``[B, Da]`` loses its row,
a per-segment input ``[B, K, Da]`` all of its K rows. At inference it is the identity.

The silent features are a non-trainable weight of the layer (saved with the model, so a
reloaded model drops to the same features). The draws come from a ``keras.random.SeedGenerator``,
which :class:`maivar_tf.seeds.EpochStreams` resets at every epoch like the dropout layers', so a
resumed stage replays the uninterrupted run's draws.
"""

from __future__ import annotations

from typing import Any

import keras

#: The layer's name in the fusion models.
MODALITY_DROPOUT_LAYER = "modality_dropout"


@keras.saving.register_keras_serializable(package="maivar_tf")
class ModalityDropout(keras.layers.Layer):
    """In training, ``x[b] <- silent`` with probability ``rate`` per example ``b``.

    Args:
        rate: the drop probability, in ``[0, 1)``.
        feature_dim: Da, the width of the silent features (the last axis of the input).
        silent_audio: the silent features ``[Da]`` the weight starts from (None: zeros, e.g.
            when the weights are restored from a file right after).
        seed: the seed generator's initial seed.

    Raises:
        ValueError: a rate outside ``[0, 1)`` or silent features of another width.
    """

    def __init__(self, rate: float, feature_dim: int, silent_audio: Any = None,
                 seed: int | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.rate = float(rate)
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"ModalityDropout.rate: {rate}; allowed: [0, 1) "
                             "(train.fusion.modality_dropout)")
        self.feature_dim = int(feature_dim)
        self._initial = None
        if silent_audio is not None:
            from maivar_tf.features.silent import silent_vector

            self._initial = silent_vector(silent_audio, self.feature_dim, "ModalityDropout")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.silent = self.add_weight(shape=(self.feature_dim,), initializer="zeros",
                                      trainable=False, name="silent_audio")
        if self._initial is not None:
            self.silent.assign(self._initial)

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        batch = keras.ops.shape(inputs)[0]
        drop = keras.random.uniform((batch,), seed=self.seed_generator) < self.rate
        drop = keras.ops.reshape(drop, (batch,) + (1,) * (len(inputs.shape) - 1))
        silent = keras.ops.cast(self.silent, inputs.dtype)
        return keras.ops.where(drop, keras.ops.broadcast_to(silent, keras.ops.shape(inputs)),
                               inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate, "feature_dim": self.feature_dim,
                "seed": self.seed}


def audio_dropout(rate: float, silent_audio: Any, feature_dim: int, method: str,
                  seed: int | None = None):
    """The layer a fitted fusion model puts on its audio input, or None when ``rate == 0``.

    Raises:
        ValueError: ``rate > 0`` with the ``late`` method (not fitted: nothing to drop in) or
            without silent features (older feature folders: re-run ``maivar extract``).
    """
    if not rate:
        return None
    if method == "late":
        raise ValueError("train.fusion.modality_dropout: late fusion is not fitted (its weight "
                         "is chosen on the validation split), so it cannot drop the audio "
                         "input; set it to 0 or use a fitted model.fusion")
    if silent_audio is None:
        raise ValueError("train.fusion.modality_dropout needs the silent audio-image's features "
                         "(FeatureSet.silent_audio), which these features lack; re-run "
                         "`maivar extract`")
    return ModalityDropout(rate, feature_dim, silent_audio, seed=seed,
                           name=MODALITY_DROPOUT_LAYER)


__all__ = ["MODALITY_DROPOUT_LAYER", "ModalityDropout", "audio_dropout"]

"""InceptionResNetV2, the audio-image backbone (a thin wrapper over ``keras.applications``).

MAiVAR (Shaikh et al., 2024) encodes every audio-image with an ImageNet InceptionResNetV2 (Szegedy
et al., 2017, "Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning")
without its classifier, average-pooled to a 1536-d feature. This module builds exactly
``keras.applications.InceptionResNetV2(include_top=False, pooling="avg")`` on top of a preprocessing
layer, so that

* the model takes RGB audio-images with values in 0..255 (uint8 or float) and applies
  ``keras.applications.inception_resnet_v2.preprocess_input`` itself (``x / 127.5 - 1``, as a
  built-in ``Rescaling`` layer that serialises without custom objects);
* the layers that carry weights are those of the application in the same order, so Keras'
  ImageNet file ``inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5`` loads into
  it unchanged (topologically, as ``keras.applications`` loads it).
"""

from __future__ import annotations

from pathlib import Path

import keras

from maivar_tf.models.weights import (
    WEIGHTS_IMAGENET,
    WeightsError,
    load_weights_file,
    parse_weights_spec,
)

#: Width of the pooled InceptionResNetV2 feature (``conv_7b_ac`` channels).
AUDIO_FEATURE_DIM = 1536
#: The input side of InceptionResNetV2 and of the audio-images.
IMAGE_SIZE = 299
#: Keras' ImageNet weights without the classifier (file name, origin, md5 as in keras.applications).
IMAGENET_NOTOP_FILE = "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/inception_resnet_v2/"
    + IMAGENET_NOTOP_FILE
)
IMAGENET_NOTOP_MD5 = "d19885ff4a710c122648d3b5c3b684e4"

_WHAT = "audio backbone (InceptionResNetV2)"


def fetch_imagenet_weights() -> Path:
    """Returns the cached Keras ImageNet no-top file, downloading it when needed.

    The file lands in Keras' cache (``$KERAS_HOME/models``, by default ``~/.keras/models``),
    where ``keras.applications`` also looks for it.

    Raises:
        WeightsError: the file is not cached and cannot be downloaded (e.g. offline); the
            message says where to get it and how to point the config at a local copy.
    """
    try:
        path = keras.utils.get_file(
            IMAGENET_NOTOP_FILE,
            IMAGENET_NOTOP_URL,
            cache_subdir="models",
            file_hash=IMAGENET_NOTOP_MD5,
        )
    except Exception as e:  # keras raises bare Exception for URL and HTTP failures
        raise WeightsError(
            f"{_WHAT}: could not fetch the ImageNet weights ({e}). Without network access, "
            f"download {IMAGENET_NOTOP_URL} on another machine and pass its path instead of "
            f"'imagenet', e.g. model.audio_weights=/path/to/{IMAGENET_NOTOP_FILE}, or copy it "
            "into ~/.keras/models/"
        ) from e
    return Path(path)


def build_audio_backbone(weights: str | Path = "none", *,
                         name: str = "inception_resnet_v2") -> keras.Model:
    """Builds the InceptionResNetV2 audio-image backbone and loads ``weights``.

    Args:
        weights: ``"imagenet"`` (Keras' ImageNet no-top file, downloaded once into the Keras
            cache), ``"none"`` (random initialisation), or a path to either that ``.h5`` file
            (legacy Keras HDF5) or a ``.weights.h5`` / ``.keras`` saved from this backbone.
        name: the model name.

    Returns:
        A functional model mapping RGB 0..255 audio-images ``[B, 299, 299, 3]`` to
        ``[B, 1536]``.

    Raises:
        WeightsError: the spec is invalid, ImageNet weights cannot be fetched, or the file
            does not fit.
        FileNotFoundError: the weights path does not exist.
    """
    spec = parse_weights_spec(weights, allow_imagenet=True, what=_WHAT)
    if spec == WEIGHTS_IMAGENET:
        spec = fetch_imagenet_weights()  # before building, so an offline failure is quick
    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), name="audio_image")
    # preprocess_input(mode="tf"): x / 127.5 - 1, maps 0..255 to -1..1.
    x = keras.layers.Rescaling(scale=1.0 / 127.5, offset=-1.0, name="preprocessing")(inputs)
    application = keras.applications.InceptionResNetV2(
        include_top=False, weights=None, input_tensor=x, pooling="avg", name=name
    )  # 8x8x1536 (conv_7b_ac) -> avg_pool -> 1536
    # Same layers, re-wrapped so the model has one plain input rather than the list that
    # ``input_tensor`` leaves behind.
    model = keras.Model(inputs, application.output, name=name)
    if spec is not None:
        load_weights_file(model, spec, what=_WHAT)
    return model

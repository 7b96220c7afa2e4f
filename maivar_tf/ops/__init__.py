"""Media ops in TensorFlow, shared by decoding, the input pipeline, extraction and serving.

One implementation of every frame operation (Model Garden's ``preprocess_ops_3d`` plays this
part there), so training and serving never see different pixels:

* :func:`resize_short_side`: shorter display side to a length (decoding and the serving graph);
* :func:`center_crop`, :func:`ten_crop`: evaluation crops (input pipeline, extraction, serving);
* :func:`random_crop_and_flip`: TSN's training augmentation (input pipeline).
"""

from maivar_tf.ops.frames import (
    TRAIN_CROP_SCALES,
    TRAIN_MAX_DISTORT,
    center_crop,
    random_crop_and_flip,
    resize_short_side,
    short_side_size,
    ten_crop,
)

__all__ = [
    "TRAIN_CROP_SCALES", "TRAIN_MAX_DISTORT", "center_crop", "random_crop_and_flip",
    "resize_short_side", "short_side_size", "ten_crop",
]

"""A run whose fusion stage is not the default (``model.fusion``) exports and serves like Keras.

``late`` is the method whose graph differs most from the fusion MLP (frozen copies of both heads
inside the fusion model, a custom output layer): the tiny run of :mod:`tests.serving.helpers`
gets a late-fusion head, is exported with :func:`maivar_tf.serving.export_servable`, and its
``serving_default`` and ``serve_media`` signatures are compared with the Keras models.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from maivar_tf.models.fusion import build_fusion  # noqa: E402
from maivar_tf.runs import load_head, load_servable_run  # noqa: E402
from maivar_tf.serving import (  # noqa: E402
    SIGNATURE_FEATURES,
    SIGNATURE_MEDIA,
    as_numpy_outputs,
    export_servable,
)
from tests.serving.helpers import (  # noqa: E402
    MODEL_NAME,
    K,
    check_outputs,
    keras_media_probabilities,
    keras_probabilities,
)
from tests.tiny_models import TINY_AUDIO_DIM, TINY_VIDEO_DIM  # noqa: E402


def test_a_late_fusion_run_exports_and_serves_like_keras(tiny, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny.run_dir, run_dir)
    vmlp, audio_mlp = load_head(run_dir / "vmlp.keras"), load_head(run_dir / "audio_mlp.keras")
    build_fusion("late", vmlp, audio_mlp, tiny.cfg.model, audio_dim=TINY_AUDIO_DIM,
                 late_weight=0.4).save(run_dir / "fusion.keras")
    run = load_servable_run(tiny.cfg, run_dir, backbones=(tiny.video_bb, tiny.audio_bb))
    assert run.fusion.get_layer("predictions").audio_weight == 0.4
    loaded = tf.saved_model.load(str(export_servable(run, tmp_path / "export", MODEL_NAME)))

    rng = np.random.default_rng(1)
    v = rng.normal(size=(3, K, TINY_VIDEO_DIM)).astype(np.float32)
    a = rng.normal(size=(3, TINY_AUDIO_DIM)).astype(np.float32)
    out = as_numpy_outputs(loaded.signatures[SIGNATURE_FEATURES](
        video_features=tf.constant(v), audio_features=tf.constant(a)))
    check_outputs(out, keras_probabilities(run.fusion, v, a))
    # not the default head's answer: the export serves the late-fusion model
    assert np.abs(out["probabilities"] - keras_probabilities(tiny.run.fusion, v, a)).max() > 1e-3

    crops = rng.integers(0, 256, (2, K, 224, 224, 3), dtype=np.uint8)
    images = rng.integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)
    out = as_numpy_outputs(loaded.signatures[SIGNATURE_MEDIA](
        frames=tf.constant(crops), audio_image=tf.constant(images)))
    check_outputs(out, keras_media_probabilities(run, crops, images), atol=1e-4)

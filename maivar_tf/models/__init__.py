"""Backbones and heads.

Importing this package registers the custom Keras objects (the fusion initializer among them), so
``keras.saving.load_model("fusion.keras")`` works in a fresh process after ``import
maivar_tf.models``.
"""

from maivar_tf.models import heads  # noqa: F401  (registers VideoWeightsInitializer)

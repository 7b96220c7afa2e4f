"""MAiVAR's models (Shaikh et al., 2024): the two backbones and the three heads.

:mod:`~maivar_tf.models.bn_inception` (video, block table as a hyperparameter),
:mod:`~maivar_tf.models.inception_resnet_v2` (audio-images; the other audio backbones of
``model.audio_backbone`` in :mod:`~maivar_tf.models.audio_backbones` and
:mod:`~maivar_tf.models.resnet18`), :mod:`~maivar_tf.models.heads`
(VMLP, audio MLP, fusion MLP and Algorithm 1's initializer), :mod:`~maivar_tf.models.fusion`
(the fusion stage's methods, ``model.fusion``), :mod:`~maivar_tf.models.temporal` (temporal
binding and the localisation head), :mod:`~maivar_tf.models.modality` (modality dropout),
:mod:`~maivar_tf.models.end_to_end` (backbones and heads trained end to end) and
:mod:`~maivar_tf.models.weights` (weights by spec).

Importing this package registers every custom Keras object (``BNInception``,
``TSNPreprocessing``, ``CeilMaxPooling2D``, ``VideoWeightsInitializer``, ``FiLM``,
``LateFusion``, ``TemporalBinding``, ``SegmentConsensus``, ``ModalityDropout``,
``FoldSegments``, ``UnfoldSegments``, ``ToFloat32``, ``BackboneAdam``), so
``keras.saving.load_model("fusion.keras")`` or a saved BNInception loads in a fresh process
after ``import maivar_tf.models``.
"""

# noqa: F401 below: imported to register the Keras objects
from maivar_tf.models import bn_inception, end_to_end, fusion, heads, modality, temporal  # noqa: F401

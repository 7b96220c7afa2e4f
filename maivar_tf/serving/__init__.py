"""Serving a trained MAiVAR run: the serving graph, its input checks and the SavedModel writer.

* :mod:`maivar_tf.serving.module`: :class:`ServingModule`, the ``tf.Module`` whose
  ``tf.function`` s are the SavedModel signatures (and what ``maivar predict --run-dir`` runs);
* :mod:`maivar_tf.serving.signatures`: the signatures' names, inputs and output keys;
* :mod:`maivar_tf.serving.segments`: segment times and audio windows in the graph, and the
  event spans ``maivar predict --segments`` prints;
* :mod:`maivar_tf.serving.checks`: the in-graph and Python checks of a request;
* :mod:`maivar_tf.serving.export`: the versioned SavedModel writer (``maivar export``) and
  reading an export back;
* :mod:`maivar_tf.serving.predictors`: what ``maivar predict`` classifies with (a record
  decoder plus the module in memory, or an export's ``serve_media``).

Loading the run itself (heads, backbones, run info) is :mod:`maivar_tf.runs`.
"""

from maivar_tf.serving.export import (
    ExportError,
    export_config,
    export_info,
    export_run,
    export_servable,
    next_version,
    read_export_info,
    resolve_saved_model_dir,
    serving_module,
)
from maivar_tf.serving.module import (
    OUTPUT_KEYS,
    SEGMENT_OUTPUT_KEYS,
    SIGNATURE_FEATURES,
    SIGNATURE_MEDIA,
    SIGNATURE_WAVEFORM,
    SIGNATURES,
    TOP_K,
    ServingModule,
    as_numpy_outputs,
)

__all__ = [
    "OUTPUT_KEYS", "SEGMENT_OUTPUT_KEYS", "SIGNATURES", "SIGNATURE_FEATURES",
    "SIGNATURE_MEDIA", "SIGNATURE_WAVEFORM", "TOP_K", "ExportError", "ServingModule", "as_numpy_outputs", "export_config", "export_info",
    "export_run", "export_servable", "next_version", "read_export_info",
    "resolve_saved_model_dir", "serving_module",
]

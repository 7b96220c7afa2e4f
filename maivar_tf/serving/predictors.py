"""What ``maivar predict`` classifies with: a record decoder and a model, in memory or exported.

A predictor takes one batch of decoded media (uint8 frames ``[B, K, H, W, 3]`` and
audio-images ``[B, S, S, 3]``, or per segment ``[B, K, S, S, 3]`` for a temporal-binding model) to the signature outputs of
:mod:`maivar_tf.serving.module`, checking the request first
(:func:`maivar_tf.serving.checks.check_request`), and holds the :class:`ClipDecoder` that
turns a clip's serialised record (the Beam job's ``SequenceExample``) into that media with the
preprocessing the model was trained with:

* :class:`RunPredictor`: a trained run's :class:`~maivar_tf.serving.module.ServingModule`,
  its backbones and its head called (and timed) separately (a run that selects segments:
  the preview and the selection, then the backbones on the k selected segments, then the
  k-segment head);
* :class:`SavedModelPredictor`: an export's ``serve_media`` signature, the same graph.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from maivar_tf.config import config_from_json_dict
from maivar_tf.data.decode import decode_example
from maivar_tf.serving.checks import check_request
from maivar_tf.serving.export import (
    ExportError,
    read_export_info,
    resolve_saved_model_dir,
    serving_module,
)
from maivar_tf.serving.module import (
    SEGMENT_IMAGES,
    SEGMENT_OUTPUT_KEYS,
    SIGNATURE_MEDIA,
    as_numpy_outputs,
)
from maivar_tf.serving.selector import describe_selection, gather_segments


class ClipDecoder:
    """Serialised clip records -> the frames and audio-image(s) the model takes.

    :func:`maivar_tf.data.decode.decode_example` (the decoder of the input pipeline and of
    extraction) for one model's settings, traced once per decoder: a predictor holds one, so
    repeated predictions in one process pay for decoding only.

    Args:
        data_cfg: the data section the model was trained with (K, crop size, image size).
        representation: the audio-image the model takes.
        ten_crop: keep the frames whole (the model takes TSN's ten crops itself).
        segment_audio: decode the K per-segment audio-images (temporal binding) instead of
            the clip's one.
    """

    def __init__(self, data_cfg, representation: str, ten_crop: bool = False,
                 segment_audio: bool = False):
        k = int(data_cfg.num_segments)
        self.representation = representation
        self.segment_audio = bool(segment_audio)
        options = {"segment_representations": (representation,)} if segment_audio else {}
        decode = functools.partial(
            decode_example, representations=(representation,), crop_size=int(data_cfg.crop_size),
            num_segments=k, stored_segments=k, crop="none" if ten_crop else "center",
            image_size=int(data_cfg.audio.image_size), **options)
        self.decode = tf.function(decode, input_signature=[tf.TensorSpec([], tf.string)],
                                  autograph=False)

    def __call__(self, serialized: bytes) -> dict[str, np.ndarray]:
        """One record -> ``{"frames": uint8 [K, c, c, 3] or [K, H, W, 3], "audio": [S, S, 3]
        (or the segments' [K, S, S, 3]), "segment_times": [K] s, "audio_missing": bool}``
        (the last two when the decoder returns them)."""
        out = self.decode(serialized)
        rep = self.representation
        audio = (out["audio_segments"][rep] if self.segment_audio
                 else out["audio_images"][rep])
        result = {"frames": out["frames"].numpy(), "audio": audio.numpy()}
        if "segment_times" in out:
            result["segment_times"] = np.asarray(out["segment_times"], np.float64)
        if "audio_missing" in out:
            result["audio_missing"] = bool(np.asarray(out["audio_missing"]))
        return result


class RunPredictor:
    """A trained run in memory: backbones then head, timed separately.

    Args:
        run: the run's :class:`~maivar_tf.runs.ServableRun`.
    """

    def __init__(self, run):
        self.module = serving_module(run)
        self.cfg = run.cfg
        self.class_names = tuple(run.class_names)
        self.representation = run.representation
        self.num_segments = int(run.num_segments)
        self.ten_crop = bool(run.ten_crop)
        self.temporal = bool(self.module.temporal)
        self.has_localiser = self.module.localiser is not None
        self.decoder = ClipDecoder(self.cfg.data, self.representation, self.ten_crop,
                                   segment_audio=self.temporal)
        self.source = {"run_dir": run.provenance.get("run_dir")}
        self.selection = describe_selection(run.selection, run.budget, self.num_segments)
        if self.module.selector is not None:
            self._select = tf.function(self.module.selector.select_media, autograph=False)
            self._selected_features = tf.function(self._features_of, autograph=False)
            self._head = tf.function(self.module.selected_outputs, autograph=False)

    def _features_of(self, frames, images, index):
        k = self.module.selector.k
        f, a = (gather_segments(x, index) for x in (frames, images))
        return self.module.video_features(f, k), self.module.audio_features(a, k)

    def __call__(self, frames: np.ndarray, audio_image: np.ndarray
                 ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """One batch -> ``(outputs, {"backbones": ms, "head": ms})`` (a run that selects
        segments: ``{"preview": ms, "backbones": ms, "head": ms}``, ``preview`` being the
        preview backbone, the scorer and the top k; and ``selected_segments`` in the outputs).

        ``audio_image`` is ``serve_media``'s audio input: ``[B, S, S, 3]``, or the
        per-segment ``[B, K, S, S, 3]`` of a temporal-binding run; ``audio_missing`` says
        whether it is the silent audio-image (as ``serve_media``).
        """
        specs = {s.name: s for s in self.module.input_signatures()[SIGNATURE_MEDIA]}
        media = {"frames": frames, self.module.media_audio_input: audio_image}
        check_request(media, specs, SIGNATURE_MEDIA)
        silent = np.asarray(audio_image) == self.module.silent_image
        missing = silent.reshape(len(silent), -1).all(axis=1)
        if self.module.selector is not None:
            return self._call_selected(frames, audio_image, missing)
        t0 = time.perf_counter()
        v, a = self.module.media_features(frames, audio_image)
        v, a = v.numpy(), a.numpy()
        t1 = time.perf_counter()
        out = as_numpy_outputs(self.module.serving_default(v, a))
        t2 = time.perf_counter()
        out["audio_missing"] = missing
        return out, {"backbones": 1000 * (t1 - t0), "head": 1000 * (t2 - t1)}

    def _call_selected(self, frames, images, missing):
        """Preview + selection, the backbones on the k selected segments, the k-segment head
        (the pieces of ``serve_media``, timed separately)."""
        frames, images = tf.constant(frames), tf.constant(images)
        t0 = time.perf_counter()
        index = self._select(images)
        index.numpy()
        t1 = time.perf_counter()
        v, a = self._selected_features(frames, images, index)
        v, a = tf.constant(v.numpy()), tf.constant(a.numpy())
        t2 = time.perf_counter()
        out = as_numpy_outputs(self._head(v, a, index, tf.constant(missing)))
        t3 = time.perf_counter()
        return out, {"preview": 1000 * (t1 - t0), "backbones": 1000 * (t2 - t1),
                     "head": 1000 * (t3 - t2)}


class SavedModelPredictor:
    """An exported SavedModel's ``serve_media`` signature.

    Args:
        path: the version folder (or the model folder: its highest version).

    Raises:
        FileNotFoundError: no SavedModel or no export record at ``path``.
        ExportError: the SavedModel has no ``serve_media`` signature.
        PrecisionError: its backbones compute in bfloat16 (the export's provenance) and this
            machine has no native bfloat16.
    """

    def __init__(self, path: str | Path):
        from maivar_tf.models.precision import check_precision

        self.path = resolve_saved_model_dir(path)
        info = read_export_info(self.path)
        check_precision(info.provenance.get("precision", "float32"))
        self.cfg = config_from_json_dict(info.config)
        self.class_names = tuple(info.class_names)
        self.representation = info.representation
        self.num_segments = int(info.num_segments)
        self.ten_crop = bool(info.ten_crop)
        self.has_localiser = SEGMENT_OUTPUT_KEYS[0] in tuple(info.outputs)
        self.loaded = tf.saved_model.load(str(self.path))
        if SIGNATURE_MEDIA not in self.loaded.signatures:
            raise ExportError(f"{self.path} has no {SIGNATURE_MEDIA!r} signature; it has "
                              f"{', '.join(self.loaded.signatures)}")
        self.signature = self.loaded.signatures[SIGNATURE_MEDIA]
        self.specs = dict(self.signature.structured_input_signature[1])
        self.temporal = SEGMENT_IMAGES in self.specs
        self.audio_input = SEGMENT_IMAGES if self.temporal else "audio_image"
        self.decoder = ClipDecoder(self.cfg.data, self.representation, self.ten_crop,
                                   segment_audio=self.temporal)
        self.source = {"saved_model": str(self.path)}
        self.selection = describe_selection(self.cfg.model.selection, self.cfg.model.budget,
                                            self.num_segments)

    def __call__(self, frames: np.ndarray, audio_image: np.ndarray
                 ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """One batch -> ``(outputs, {"model": ms})`` (``audio_image`` as for
        :class:`RunPredictor`)."""
        inputs = {"frames": frames, self.audio_input: audio_image}
        check_request(inputs, self.specs, SIGNATURE_MEDIA)
        t0 = time.perf_counter()
        out = as_numpy_outputs(self.signature(**{k: tf.constant(v) for k, v in inputs.items()}))
        return out, {"model": 1000 * (time.perf_counter() - t0)}

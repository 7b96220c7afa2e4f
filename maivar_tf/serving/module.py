"""The serving graph of a MAiVAR run: a ``tf.Module`` whose signatures are ``tf.function`` s.

MAiVAR (Shaikh et al. 2024) classifies a clip by fusing K TSN segment features of BNInception
with the InceptionResNetV2 features of an audio-image, through the fusion MLP of Algorithm 1.
:class:`ServingModule` (Model Garden's ``ExportModule`` shape) holds that fusion head, one
:class:`~maivar_tf.models.backbones.BackboneFeatures` per backbone (the very callables feature
extraction runs), the class list and the data settings, and exposes:

========================  ====================================================================
``tf.function``           inputs (named)                                    backbones
========================  ====================================================================
``serving_default``       ``video_features`` float32 ``[B, K, Dv]``,         no
                          ``audio_features`` float32 ``[B, Da]``
``serve_media``           ``frames`` uint8 ``[B, K, H, W, 3]`` (any H, W),  yes
                          ``audio_image`` uint8 ``[B, S, S, 3]``
``serve_waveform``        ``frames``, ``waveform`` float32 ``[B, N]`` (mono), yes (+ audio-image
                          ``sample_rate`` int32 ``[B]``                       rendered in graph)
``media_features``        as ``serve_media``; returns the two feature        yes (not exported)
                          tensors ``(video [B, K, Dv], audio [B, Da])``
========================  ====================================================================

The three signatures return ``probabilities`` float32 ``[B, C]`` (softmax of the fusion
logits divided by the run's temperature, :func:`maivar_tf.calibration.scaled_softmax`; a
constant of the graph, 1.0 for an uncalibrated run), ``top_classes`` string ``[B, min(5, C)]`` and ``top_scores`` float32 ``[B, min(5, C)]``.
Frames go through :mod:`maivar_tf.ops` exactly as at decoding and extraction: shorter side to
``data.frame_short_side`` (:func:`~maivar_tf.ops.resize_short_side`, the same pixels when it
already is), then the centre crop of ``data.crop_size`` (frames that already are such squares,
what the input pipeline yields, are taken as they are) or TSN's ten crops. Inputs are checked
in the graph before any computation (:mod:`maivar_tf.serving.checks`): shapes, batch sizes,
sample rates, and that the float inputs (``video_features``, ``audio_features``,
``waveform``) hold no NaN or Inf.

The class names are a lookup table: built from a labels file (the SavedModel asset the
exporter wrote, :mod:`maivar_tf.serving.export`) or, in memory, from the list itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from maivar_tf import ops
from maivar_tf.calibration import check_temperature, scaled_softmax
from maivar_tf.models.heads import AUDIO_INPUT, VIDEO_INPUT
from maivar_tf.serving import checks

#: Signature names (``serving_default`` is TF Serving's default signature).
SIGNATURE_FEATURES = "serving_default"
SIGNATURE_MEDIA = "serve_media"
SIGNATURE_WAVEFORM = "serve_waveform"
SIGNATURES = (SIGNATURE_FEATURES, SIGNATURE_MEDIA, SIGNATURE_WAVEFORM)
#: Output keys of every signature.
OUTPUT_KEYS = ("probabilities", "top_classes", "top_scores")
#: How many classes ``top_classes``/``top_scores`` name (fewer when there are fewer classes).
TOP_K = 5
#: What the label table returns for an index it does not hold.
UNKNOWN_CLASS = "<unknown>"


def check_class_names(class_names: Sequence[str]) -> tuple[str, ...]:
    """The class names as a tuple of ``str``; each must be a non-empty single line.

    Raises:
        ValueError: an empty list, or a name that is empty or holds a newline (it could not
            be one line of the labels asset).
    """
    names = tuple(str(c) for c in class_names)
    if not names:
        raise ValueError("serving: empty class list")
    bad = [c for c in names if "\n" in c or not c]
    if bad:
        raise ValueError(f"serving: class names must be non-empty single lines; got {bad[:3]!r}")
    return names


def label_table(class_names: Sequence[str], labels_file: str | None = None
                ) -> tf.lookup.StaticHashTable:
    """The logit index -> class name table.

    Args:
        class_names: the classes, in logit order (fills the table when there is no file).
        labels_file: a file with one class per line in logit order (read by a text-file
            initializer, so it travels as a SavedModel asset).
    """
    if labels_file is None:
        initializer = tf.lookup.KeyValueTensorInitializer(
            tf.range(len(class_names), dtype=tf.int64), tf.constant(list(class_names), tf.string))
    else:
        initializer = tf.lookup.TextFileInitializer(
            str(labels_file), key_dtype=tf.int64, key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
            value_dtype=tf.string, value_index=tf.lookup.TextFileIndex.WHOLE_LINE)
    return tf.lookup.StaticHashTable(initializer, default_value=UNKNOWN_CLASS)


def input_signatures(num_segments: int, video_dim: int, audio_dim: int, image_size: int
                     ) -> dict[str, list[tf.TensorSpec]]:
    """Each signature's named ``tf.TensorSpec`` list, in argument order."""
    k, s = int(num_segments), int(image_size)
    frames = tf.TensorSpec([None, k, None, None, 3], tf.uint8, name="frames")
    return {
        SIGNATURE_FEATURES: [
            tf.TensorSpec([None, k, int(video_dim)], tf.float32, name=VIDEO_INPUT),
            tf.TensorSpec([None, int(audio_dim)], tf.float32, name=AUDIO_INPUT),
        ],
        SIGNATURE_MEDIA: [frames, tf.TensorSpec([None, s, s, 3], tf.uint8, name="audio_image")],
        SIGNATURE_WAVEFORM: [
            frames,
            tf.TensorSpec([None, None], tf.float32, name="waveform"),
            tf.TensorSpec([None], tf.int32, name="sample_rate"),
        ],
    }


def describe_signatures(specs: Mapping[str, Sequence[tf.TensorSpec]]) -> dict[str, list]:
    """``{signature: [{"name", "dtype", "shape"}]}`` with ``-1`` for unknown dimensions."""
    return {name: [{"name": s.name, "dtype": s.dtype.name,
                    "shape": [d if d is not None else -1 for d in s.shape]} for s in sig]
            for name, sig in specs.items()}


def _fusion_segments(fusion: Any) -> int | None:
    """The K of the fusion model's ``video_features`` input (None when not fixed)."""
    names = [t.name.split(":")[0] for t in fusion.inputs]
    if VIDEO_INPUT not in names or AUDIO_INPUT not in names:
        raise ValueError(f"the fusion model has inputs {names}; expected {VIDEO_INPUT!r} and "
                         f"{AUDIO_INPUT!r}")
    k = fusion.inputs[names.index(VIDEO_INPUT)].shape[1]
    return None if k is None else int(k)


class ServingModule(tf.Module):
    """Media or features -> class probabilities, as ``tf.function`` s with fixed signatures.

    Args:
        fusion: the fusion MLP: inputs ``video_features`` ``[K, Dv]`` and ``audio_features``
            ``[Da]`` -> logits ``[C]``.
        video: the video backbone's features callable (RGB 0..255 ``[N, c, c, 3]`` -> ``[N, Dv]``).
        audio: the audio backbone's features callable (RGB 0..255 ``[N, S, S, 3]`` -> ``[N, Da]``).
        class_names: the classes the fusion logits index.
        data: the data section the run was trained with (frame and audio-image preprocessing).
        representation: the audio-image the audio features come from.
        num_segments: K (default ``data.num_segments``); must be the fusion model's.
        ten_crop: average the video features over TSN's ten crops (as extraction did).
        labels_file: the class names file the table reads (an export's asset); None fills
            the table from ``class_names``.
        temperature: the fusion logits are divided by it before the softmax (the run's
            calibration; 1.0: the plain softmax).
        name: the module name.

    Raises:
        ValueError: bad class names, a fusion model without the two inputs, a K that is
            not the fusion model's, or a temperature that is not a finite number > 0.
    """

    def __init__(self, fusion: Any, video: Any, audio: Any, class_names: Sequence[str],
                 data: Any, *, representation: str, num_segments: int | None = None,
                 ten_crop: bool = False, labels_file: str | None = None,
                 temperature: float = 1.0, name: str = "maivar_serving"):
        super().__init__(name=name)
        self.class_names = check_class_names(class_names)
        self.num_segments = int(num_segments or data.num_segments)
        k = _fusion_segments(fusion)
        if k is not None and k != self.num_segments:
            raise ValueError(f"the fusion model takes {k} segments but num_segments is "
                             f"{self.num_segments}; allowed: the K the run was trained with")
        self.fusion, self.video, self.audio, self.data = fusion, video, audio, data
        self.representation = str(representation)
        self.temperature = check_temperature(temperature)
        self.ten_crop = bool(ten_crop)
        self.crop_size = int(data.crop_size)
        self.short_side = int(data.frame_short_side)
        self.image_size = int(data.audio.image_size)
        self.sample_rate = int(data.audio.sample_rate)
        self.video_dim, self.audio_dim = int(video.dim), int(audio.dim)
        self.top_k = min(TOP_K, len(self.class_names))
        self.label_table = label_table(self.class_names, labels_file)
        specs = self.input_signatures()

        def function(fn, signature):
            return tf.function(fn, input_signature=specs[signature], autograph=False)

        self.serving_default = function(self._serve_features, SIGNATURE_FEATURES)
        self.serve_media = function(self._serve_media, SIGNATURE_MEDIA)
        self.serve_waveform = function(self._serve_waveform, SIGNATURE_WAVEFORM)
        self.media_features = function(self._media_features, SIGNATURE_MEDIA)

    # -- description -----------------------------------------------------------------------

    def input_signatures(self) -> dict[str, list[tf.TensorSpec]]:
        """Each signature's named ``tf.TensorSpec`` list (see :func:`input_signatures`)."""
        return input_signatures(self.num_segments, self.video_dim, self.audio_dim,
                                self.image_size)

    def signatures(self) -> dict[str, Any]:
        """Signature name -> its ``tf.function`` (what the exporter writes)."""
        return {SIGNATURE_FEATURES: self.serving_default, SIGNATURE_MEDIA: self.serve_media,
                SIGNATURE_WAVEFORM: self.serve_waveform}

    # -- graph pieces ------------------------------------------------------------------------

    def prepare_frames(self, frames: tf.Tensor) -> tf.Tensor:
        """uint8 ``[B, K, H, W, 3]`` -> what :func:`video_features` crops.

        Without ten crop: the centre ``crop_size`` squares ``[B, K, c, c, 3]`` (frames that
        already are such squares are used as they are); with ten crop: the whole frames,
        shorter side ``frame_short_side``.
        """
        resized = ops.resize_short_side
        k, c = self.num_segments, self.crop_size
        if self.ten_crop:
            return tf.ensure_shape(resized(frames, self.short_side), [None, k, None, None, 3])
        shape = tf.shape(frames)
        is_crop = tf.logical_and(tf.equal(shape[2], c), tf.equal(shape[3], c))
        out = tf.cond(is_crop, lambda: tf.identity(frames),
                      lambda: ops.center_crop(resized(frames, self.short_side), c))
        return tf.ensure_shape(out, [None, k, c, c, 3])

    def video_features(self, frames: tf.Tensor) -> tf.Tensor:
        """uint8 ``[B, K, H, W, 3]`` -> float32 ``[B, K, Dv]`` (as feature extraction)."""
        from maivar_tf.models.backbones import video_features

        return video_features(self.video, self.prepare_frames(frames), self.crop_size,
                              self.ten_crop)

    def audio_features(self, audio_image: tf.Tensor) -> tf.Tensor:
        """uint8 ``[B, S, S, 3]`` -> float32 ``[B, Da]``."""
        return self.audio(audio_image)

    def render_audio_image(self, waveform: tf.Tensor) -> tf.Tensor:
        """float32 ``[B, N]`` -> uint8 ``[B, S, S, 3]`` with the shared TF renderer."""
        from maivar_tf.data.audio_image import render_audio_image

        max_seconds = float(self.data.audio.max_seconds)
        if max_seconds > 0:
            waveform = waveform[:, :int(round(max_seconds * self.sample_rate))]
        return tf.cast(render_audio_image(waveform, self.representation, self.data.audio),
                       tf.uint8)

    def logits(self, video_features: tf.Tensor, audio_features: tf.Tensor) -> tf.Tensor:
        """The fusion MLP's logits ``[B, C]``."""
        inputs = {VIDEO_INPUT: video_features, AUDIO_INPUT: audio_features}
        return tf.cast(self.fusion(inputs, training=False), tf.float32)

    def outputs(self, logits: tf.Tensor) -> dict[str, tf.Tensor]:
        """``probabilities`` (``softmax(logits / temperature)``), ``top_classes``,
        ``top_scores`` from logits ``[B, C]``."""
        probabilities = scaled_softmax(logits, self.temperature)
        scores, index = tf.math.top_k(probabilities, k=self.top_k)
        classes = self.label_table.lookup(tf.cast(index, tf.int64))
        return {"probabilities": probabilities, "top_classes": classes, "top_scores": scores}

    # -- the signatures' bodies ---------------------------------------------------------------

    def _checked_media(self, signature: str, frames, audio_image):
        f = checks.check_shape(frames, [None, self.num_segments, None, None, 3], signature,
                               "frames", "uint8")
        s = self.image_size
        a = checks.check_shape(audio_image, [None, s, s, 3], signature, "audio_image", "uint8")
        f, a = checks.check_batch(signature, frames=f, audio_image=a)
        return checks.check_frame_area(f, signature), a

    def _serve_features(self, video_features, audio_features):
        sig = SIGNATURE_FEATURES
        v = checks.check_shape(video_features, [None, self.num_segments, self.video_dim], sig,
                               VIDEO_INPUT, "float32")
        a = checks.check_shape(audio_features, [None, self.audio_dim], sig, AUDIO_INPUT,
                               "float32")
        v, a = checks.check_batch(sig, video_features=v, audio_features=a)
        v = checks.check_finite(v, sig, VIDEO_INPUT)
        a = checks.check_finite(a, sig, AUDIO_INPUT)
        return self.outputs(self.logits(v, a))

    def _media_features(self, frames, audio_image):
        f, a = self._checked_media(SIGNATURE_MEDIA, frames, audio_image)
        return self.video_features(f), self.audio_features(a)

    def _serve_media(self, frames, audio_image):
        f, a = self._checked_media(SIGNATURE_MEDIA, frames, audio_image)
        return self.outputs(self.logits(self.video_features(f), self.audio_features(a)))

    def _serve_waveform(self, frames, waveform, sample_rate):
        sig = SIGNATURE_WAVEFORM
        f = checks.check_shape(frames, [None, self.num_segments, None, None, 3], sig, "frames",
                               "uint8")
        w = checks.check_shape(waveform, [None, None], sig, "waveform", "float32")
        r = checks.check_shape(sample_rate, [None], sig, "sample_rate", "int32")
        f, w, r = checks.check_batch(sig, frames=f, waveform=w, sample_rate=r)
        w = checks.check_finite(w, sig, "waveform")
        w = checks.check_waveform(w, r, expected_rate=self.sample_rate,
                                  min_samples=int(self.data.audio.n_fft), signature=sig)
        f = checks.check_frame_area(f, sig)
        image = self.render_audio_image(w)
        return self.outputs(self.logits(self.video_features(f), self.audio_features(image)))


def as_numpy_outputs(outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Signature outputs -> NumPy arrays (class names decoded to ``str``)."""
    out = {}
    for k, v in outputs.items():
        a = np.asarray(v)
        if a.dtype.kind in ("O", "S"):
            a = np.vectorize(lambda s: s.decode() if isinstance(s, bytes) else str(s),
                             otypes=[object])(a).astype(str)
        out[k] = a
    return out

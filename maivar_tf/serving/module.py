"""The serving graph of a MAiVAR run: a ``tf.Module`` whose signatures are ``tf.function`` s.

MAiVAR (Shaikh et al. 2024) classifies a clip by fusing K TSN segment features of BNInception
with the InceptionResNetV2 features of an audio-image, through the fusion MLP of Algorithm 1.
:class:`ServingModule` (Model Garden's ``ExportModule`` shape) holds that fusion head, one
:class:`~maivar_tf.models.backbones.BackboneFeatures` per backbone (the very callables feature
extraction runs), the class list and the data settings, and exposes the signatures of
:mod:`maivar_tf.serving.signatures` (``serving_default`` on features, ``serve_media`` on frames
and audio-images, ``serve_waveform`` on frames and a waveform whose audio-image is rendered in
the graph) plus ``media_features`` (as ``serve_media``; returns the two feature tensors, not
exported).

A temporal-binding run (``model.fusion=temporal_binding``; its fusion model takes
``audio_segment_features`` ``[B, K, Da]``) takes the K per-segment audio-images instead of the
clip's one (``audio_segment_images`` uint8 ``[B, K, S, S, 3]``); ``serve_waveform`` renders
them from the windows around TSN's centre times of the waveform
(:mod:`maivar_tf.serving.segments`). With a localiser (``run_dir/localiser.keras``, logits
``[B, K, C + 1]``, class C = background) every signature also returns ``segment_scores``
(its softmax) and ``segment_event`` (``1 - p(background)``). A run that selects segments
(``model.selection``, ``model.budget`` k; a :class:`~maivar_tf.serving.selector.SegmentSelector`)
runs the visual and per-segment audio backbones on the k selected segments only, the
k-segment copy of the fusion head, and returns ``selected_segments`` int32 ``[B, k]``; its
localiser is not served (it needs all K segments' features).

Every signature returns ``probabilities`` float32 ``[B, C]`` (softmax of the fusion logits
divided by the run's temperature, :func:`maivar_tf.calibration.scaled_softmax`; a constant of
the graph, 1.0 for an uncalibrated run), ``top_classes`` string ``[B, min(5, C)]``,
``top_scores`` float32 ``[B, min(5, C)]`` and ``audio_missing`` bool ``[B]``: the audio input
was the silent one (``serve_media``: the audio-image(s) equal the silent audio-image of the
representation, :func:`maivar_tf.features.silent.silent_audio_image`; ``serve_waveform``: the
waveform is all zeros; ``serving_default``: the audio features equal the run's silent audio
features, allclose, when the run knows them, else False). Under ``data.on_missing_audio:
silence`` ``serve_waveform`` also takes an all-zero waveform shorter than ``audio.n_fft`` (a
clip without sound) and renders it as silence; under ``reject`` it fails the length check.

Frames go through :mod:`maivar_tf.ops` exactly as at decoding and extraction: shorter side to
``data.frame_short_side`` (:func:`~maivar_tf.ops.resize_short_side`, the same pixels when it
already is), then the centre crop of ``data.crop_size`` (frames that already are such squares,
what the input pipeline yields, are taken as they are) or TSN's ten crops. Inputs are checked
in the graph before any computation (:mod:`maivar_tf.serving.checks`): shapes, batch sizes,
sample rates, and that the float inputs hold no NaN or Inf.

The class names are a lookup table: built from a labels file (the SavedModel asset the
exporter wrote, :mod:`maivar_tf.serving.export`) or, in memory, from the list itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from maivar_tf import ops
from maivar_tf.calibration import check_temperature, scaled_softmax
from maivar_tf.features.silent import silent_audio_image, silent_vector
from maivar_tf.models.heads import AUDIO_INPUT, VIDEO_INPUT
from maivar_tf.serving import checks, segments
from maivar_tf.serving.selector import gather_segments
from maivar_tf.serving.signatures import (
    AUDIO_SEGMENTS_INPUT,
    OUTPUT_KEYS,
    SEGMENT_IMAGES,
    SEGMENT_OUTPUT_KEYS,
    SELECTION_OUTPUT_KEYS,
    SIGNATURE_FEATURES,
    SIGNATURE_MEDIA,
    SIGNATURE_WAVEFORM,
    SIGNATURES,
    TOP_K,
    UNKNOWN_CLASS,
    as_numpy_outputs,
    check_class_names,
    describe_signatures,
    input_signatures,
    label_table,
    output_keys,
)

__all__ = [
    "AUDIO_SEGMENTS_INPUT", "OUTPUT_KEYS", "SEGMENT_IMAGES", "SEGMENT_OUTPUT_KEYS",
    "SELECTION_OUTPUT_KEYS",
    "SIGNATURES", "SIGNATURE_FEATURES", "SIGNATURE_MEDIA", "SIGNATURE_WAVEFORM", "TOP_K",
    "UNKNOWN_CLASS", "ServingModule", "as_numpy_outputs", "check_class_names",
    "describe_signatures", "input_signatures", "label_table", "output_keys",
]

#: Tolerances of ``serving_default``'s "the audio features are the silent ones".
SILENT_RTOL, SILENT_ATOL = 1e-4, 1e-4


def _fusion_inputs(fusion: Any) -> tuple[int | None, bool]:
    """``(K of the fusion model's video input or None, whether it is temporal binding)``."""
    names = [t.name.split(":")[0] for t in fusion.inputs]
    temporal = AUDIO_SEGMENTS_INPUT in names
    audio = AUDIO_SEGMENTS_INPUT if temporal else AUDIO_INPUT
    if VIDEO_INPUT not in names or audio not in names:
        raise ValueError(f"the fusion model has inputs {names}; expected {VIDEO_INPUT!r} and "
                         f"{AUDIO_INPUT!r} (or {AUDIO_SEGMENTS_INPUT!r} for temporal binding)")
    k = fusion.inputs[names.index(VIDEO_INPUT)].shape[1]
    return (None if k is None else int(k)), temporal


class ServingModule(tf.Module):
    """Media or features -> class probabilities, as ``tf.function`` s with fixed signatures.

    Args:
        fusion: the fusion model: inputs ``video_features`` ``[K, Dv]`` and ``audio_features``
            ``[Da]`` (or ``audio_segment_features`` ``[K, Da]``: temporal binding) -> logits
            ``[C]``.
        video: the video backbone's features callable (RGB 0..255 ``[N, c, c, 3]`` -> ``[N, Dv]``).
        audio: the audio backbone's features callable (RGB 0..255 ``[N, S, S, 3]`` -> ``[N, Da]``).
        class_names: the classes the fusion logits index.
        data: the data section the run was trained with (frame and audio-image preprocessing,
            ``on_missing_audio``).
        representation: the audio-image the audio features come from.
        num_segments: K (default ``data.num_segments``); must be the fusion model's.
        ten_crop: average the video features over TSN's ten crops (as extraction did).
        labels_file: the class names file the table reads (an export's asset); None fills
            the table from ``class_names``.
        temperature: the fusion logits are divided by it before the softmax (the run's
            calibration; 1.0: the plain softmax).
        silent_audio: float32 ``[Da]``, the audio features of the silent audio-image (from the
            run's features folder); None: ``serving_default`` cannot tell, says False.
        localiser: the localisation head (temporal binding): the fusion's inputs -> logits
            ``[K, C + 1]``; None: no segment outputs.
        selector: the run's segment selection (temporal binding); None: all K segments. A
            module with a selector does not serve the localiser.
        name: the module name.

    Raises:
        ValueError: bad class names, a fusion model without the two inputs, a K that is
            not the fusion model's, a temperature that is not a finite number > 0, a silent
            feature vector of the wrong width, or a localiser or a selector without temporal
            binding.
    """

    def __init__(self, fusion: Any, video: Any, audio: Any, class_names: Sequence[str],
                 data: Any, *, representation: str, num_segments: int | None = None,
                 ten_crop: bool = False, labels_file: str | None = None,
                 temperature: float = 1.0, silent_audio: Any = None, localiser: Any = None,
                 selector: Any = None, name: str = "maivar_serving"):
        super().__init__(name=name)
        self.class_names = check_class_names(class_names)
        self.num_segments = int(num_segments or data.num_segments)
        k, self.temporal = _fusion_inputs(fusion)
        if k is not None and k != self.num_segments:
            raise ValueError(f"the fusion model takes {k} segments but num_segments is "
                             f"{self.num_segments}; allowed: the K the run was trained with")
        if localiser is not None and not self.temporal:
            raise ValueError("a localiser needs a temporal-binding fusion model (inputs "
                             f"{VIDEO_INPUT!r}, {AUDIO_SEGMENTS_INPUT!r})")
        if selector is not None and not self.temporal:
            raise ValueError("segment selection (model.selection) needs a temporal-binding "
                             f"fusion model (inputs {VIDEO_INPUT!r}, {AUDIO_SEGMENTS_INPUT!r})")
        self.fusion, self.video, self.audio, self.data = fusion, video, audio, data
        self.selector = selector
        self.localiser = None if selector is not None else localiser
        self.representation = str(representation)
        self.temperature = check_temperature(temperature)
        self.ten_crop = bool(ten_crop)
        self.crop_size = int(data.crop_size)
        self.short_side = int(data.frame_short_side)
        self.image_size = int(data.audio.image_size)
        self.sample_rate = int(data.audio.sample_rate)
        self.video_dim, self.audio_dim = int(video.dim), int(audio.dim)
        self.silence = data.on_missing_audio == "silence"
        self.segment_seconds = float(data.audio.segment_seconds)
        self.silent_image = silent_audio_image(self.representation, data.audio)
        self.silent_audio = None if silent_audio is None else silent_vector(
            silent_audio, self.audio_dim, "ServingModule")
        self.top_k = min(TOP_K, len(self.class_names))
        self.output_keys = output_keys(self.localiser is not None, selector is not None)
        self.label_table = label_table(self.class_names, labels_file)
        specs = self.input_signatures()

        def function(fn, signature):
            return tf.function(fn, input_signature=specs[signature], autograph=False)

        # keyword names of the in-memory functions = the input names of the signatures
        if selector is not None:
            features = (self._serve_preview_features if selector.topk
                        else self._serve_segment_features)
            media = self._serve_segment_media
            media_features = self._segment_media_features
        elif self.temporal:
            features, media = self._serve_segment_features, self._serve_segment_media
            media_features = self._segment_media_features
        else:
            features, media = self._serve_features, self._serve_media
            media_features = self._media_features
        self.serving_default = function(features, SIGNATURE_FEATURES)
        self.serve_media = function(media, SIGNATURE_MEDIA)
        self.serve_waveform = function(self._serve_waveform, SIGNATURE_WAVEFORM)
        self.media_features = function(media_features, SIGNATURE_MEDIA)

    # -- description -----------------------------------------------------------------------

    @property
    def audio_input(self) -> str:
        """The name of the audio features input (``audio_features`` or, temporal binding,
        ``audio_segment_features``)."""
        return AUDIO_SEGMENTS_INPUT if self.temporal else AUDIO_INPUT

    @property
    def media_audio_input(self) -> str:
        """The name of ``serve_media``'s audio input (``audio_image`` or
        ``audio_segment_images``)."""
        return SEGMENT_IMAGES if self.temporal else "audio_image"

    def input_signatures(self) -> dict[str, list[tf.TensorSpec]]:
        """Each signature's named ``tf.TensorSpec`` list (see :func:`input_signatures`)."""
        topk = self.selector is not None and self.selector.topk
        return input_signatures(self.num_segments, self.video_dim, self.audio_dim,
                                self.image_size, temporal=self.temporal,
                                preview_dim=self.selector.preview_dim if topk else 0)

    def signatures(self) -> dict[str, Any]:
        """Signature name -> its ``tf.function`` (what the exporter writes)."""
        return {SIGNATURE_FEATURES: self.serving_default, SIGNATURE_MEDIA: self.serve_media,
                SIGNATURE_WAVEFORM: self.serve_waveform}

    # -- graph pieces ------------------------------------------------------------------------

    def prepare_frames(self, frames: tf.Tensor, segments: int | None = None) -> tf.Tensor:
        """uint8 ``[B, K, H, W, 3]`` (``segments`` of them, default K) -> what
        :func:`video_features` crops.

        Without ten crop: the centre ``crop_size`` squares ``[B, K, c, c, 3]`` (frames that
        already are such squares are used as they are); with ten crop: the whole frames,
        shorter side ``frame_short_side``.
        """
        resized = ops.resize_short_side
        k, c = segments or self.num_segments, self.crop_size
        if self.ten_crop:
            return tf.ensure_shape(resized(frames, self.short_side), [None, k, None, None, 3])
        shape = tf.shape(frames)
        is_crop = tf.logical_and(tf.equal(shape[2], c), tf.equal(shape[3], c))
        out = tf.cond(is_crop, lambda: tf.identity(frames),
                      lambda: ops.center_crop(resized(frames, self.short_side), c))
        return tf.ensure_shape(out, [None, k, c, c, 3])

    def video_features(self, frames: tf.Tensor, segments: int | None = None) -> tf.Tensor:
        """uint8 ``[B, K, H, W, 3]`` -> float32 ``[B, K, Dv]`` (as feature extraction);
        ``segments``: the frames are that many (the selected ones), not K."""
        from maivar_tf.models.backbones import video_features

        return video_features(self.video, self.prepare_frames(frames, segments),
                              self.crop_size, self.ten_crop)

    def audio_features(self, audio_image: tf.Tensor, segments: int | None = None
                       ) -> tf.Tensor:
        """uint8 ``[B, S, S, 3]`` -> float32 ``[B, Da]``; per segment (temporal binding)
        uint8 ``[B, K, S, S, 3]`` -> float32 ``[B, K, Da]`` (``segments`` instead of K)."""
        if not self.temporal:
            return self.audio(audio_image)
        s = self.image_size
        feats = self.audio(tf.reshape(audio_image, [-1, s, s, 3]))
        return tf.reshape(feats, [-1, segments or self.num_segments, self.audio_dim])

    def _cut(self, waveform: tf.Tensor) -> tf.Tensor:
        max_seconds = float(self.data.audio.max_seconds)
        if max_seconds > 0:
            waveform = waveform[:, :int(round(max_seconds * self.sample_rate))]
        if self.silence:  # an all-zero waveform may be shorter than the STFT window
            n_fft = int(self.data.audio.n_fft)
            waveform = tf.pad(waveform, [[0, 0], [0, tf.maximum(n_fft - tf.shape(waveform)[1],
                                                                0)]])
        return waveform

    def render_audio_image(self, waveform: tf.Tensor) -> tf.Tensor:
        """float32 ``[B, N]`` -> uint8 ``[B, S, S, 3]`` with the shared TF renderer; per segment
        (temporal binding) ``[B, K, S, S, 3]`` from the windows around TSN's centre times."""
        from maivar_tf.data.audio_image import render_audio_image

        cfg, s = self.data.audio, self.image_size
        if not self.temporal:
            return tf.cast(render_audio_image(self._cut(waveform), self.representation, cfg),
                           tf.uint8)
        duration = tf.cast(tf.shape(waveform)[1], tf.float32) / float(self.sample_rate)
        times = segments.centre_times(duration, self.num_segments)
        windows = segments.segment_waveforms(self._cut(waveform), times, self.sample_rate,
                                             self.segment_seconds)
        flat = tf.reshape(windows, [-1, tf.shape(windows)[2]])
        images = tf.cast(render_audio_image(flat, self.representation, cfg), tf.uint8)
        return tf.reshape(images, [-1, self.num_segments, s, s, 3])

    def _feature_inputs(self, video_features, audio_features) -> dict[str, tf.Tensor]:
        return {VIDEO_INPUT: video_features, self.audio_input: audio_features}

    def logits(self, video_features: tf.Tensor, audio_features: tf.Tensor) -> tf.Tensor:
        """The fusion model's logits ``[B, C]`` (a selecting module: the k-segment copy's, on
        the k selected segments' features)."""
        inputs = self._feature_inputs(video_features, audio_features)
        fusion = self.fusion if self.selector is None else self.selector.fusion
        return tf.cast(fusion(inputs, training=False), tf.float32)

    def segment_logits(self, video_features: tf.Tensor, audio_features: tf.Tensor
                       ) -> tf.Tensor | None:
        """The localiser's logits ``[B, K, C + 1]`` (None without a localiser)."""
        if self.localiser is None:
            return None
        feeds = self._feature_inputs(video_features, audio_features)
        names = [t.name.split(":")[0] for t in self.localiser.inputs]
        inputs = {n: feeds[n] for n in names} if set(names) <= set(feeds) else feeds
        return tf.cast(self.localiser(inputs, training=False), tf.float32)

    def outputs(self, logits: tf.Tensor, audio_missing: tf.Tensor,
                segment_logits: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """The signature outputs (:data:`OUTPUT_KEYS`, and :data:`SEGMENT_OUTPUT_KEYS` with
        ``segment_logits``) from the fusion logits ``[B, C]``."""
        probabilities = scaled_softmax(logits, self.temperature)
        scores, index = tf.math.top_k(probabilities, k=self.top_k)
        classes = self.label_table.lookup(tf.cast(index, tf.int64))
        out = {"probabilities": probabilities, "top_classes": classes, "top_scores": scores,
               "audio_missing": tf.reshape(audio_missing, [-1])}
        if segment_logits is not None:
            seg = tf.nn.softmax(segment_logits, axis=-1)
            out.update(segment_scores=seg, segment_event=1.0 - seg[..., -1])
        return out

    def _classify(self, video_features, audio_features, audio_missing):
        return self.outputs(self.logits(video_features, audio_features), audio_missing,
                            self.segment_logits(video_features, audio_features))

    # -- segment selection (a module with a selector) -------------------------------------

    def _classify_media(self, frames, images, audio_missing):
        """The K frames and audio-images -> outputs; a selecting module gathers the k
        selected ones (:meth:`SegmentSelector.select_media`) before any backbone runs."""
        if self.selector is None:
            return self._classify(self.video_features(frames), self.audio_features(images),
                                  audio_missing)
        index = self.selector.select_media(images)
        f, a = (gather_segments(x, index) for x in (frames, images))
        k = self.selector.k
        return self.selected_outputs(self.video_features(f, k), self.audio_features(a, k), index,
                              audio_missing)

    def selected_outputs(self, video_features, audio_features, index, audio_missing):
        """The k selected segments' features -> the outputs and ``selected_segments``."""
        return {**self.outputs(self.logits(video_features, audio_features), audio_missing),
                "selected_segments": index}

    # -- audio missing -----------------------------------------------------------------------

    def silent_images(self, audio: tf.Tensor) -> tf.Tensor:
        """bool ``[B]``: every audio-image of the row is the silent one."""
        silent = tf.constant(self.silent_image)
        equal = tf.equal(audio, silent)
        return tf.reduce_all(tf.reshape(equal, [tf.shape(audio)[0], -1]), axis=1)

    def silent_features(self, audio_features: tf.Tensor) -> tf.Tensor:
        """bool ``[B]``: the row's audio features equal the silent ones (False when unknown)."""
        batch = tf.shape(audio_features)[0]
        if self.silent_audio is None:
            return tf.zeros([batch], tf.bool)
        silent = tf.constant(self.silent_audio)
        close = tf.abs(audio_features - silent) <= SILENT_ATOL + SILENT_RTOL * tf.abs(silent)
        return tf.reduce_all(tf.reshape(close, [batch, -1]), axis=1)

    # -- the signatures' bodies ---------------------------------------------------------------

    def _checked_media(self, signature: str, frames, audio_image):
        f = checks.check_shape(frames, [None, self.num_segments, None, None, 3], signature,
                               "frames", "uint8")
        s, name = self.image_size, self.media_audio_input
        pattern = [None, self.num_segments, s, s, 3] if self.temporal else [None, s, s, 3]
        a = checks.check_shape(audio_image, pattern, signature, name, "uint8")
        f, a = checks.check_batch(signature, **{"frames": f, name: a})
        return checks.check_frame_area(f, signature), a

    def _checked_features(self, video_features, audio_features):
        sig, name = SIGNATURE_FEATURES, self.audio_input
        v = checks.check_shape(video_features, [None, self.num_segments, self.video_dim], sig,
                               VIDEO_INPUT, "float32")
        pattern = ([None, self.num_segments, self.audio_dim] if self.temporal
                   else [None, self.audio_dim])
        a = checks.check_shape(audio_features, pattern, sig, name, "float32")
        v, a = checks.check_batch(sig, **{VIDEO_INPUT: v, name: a})
        return checks.check_finite(v, sig, VIDEO_INPUT), checks.check_finite(a, sig, name)

    def _serve_features(self, video_features, audio_features):
        v, a = self._checked_features(video_features, audio_features)
        if self.selector is not None:  # uniform: TSN's k of the K
            index = self.selector.indices(tf.shape(v)[0])
            return self.selected_outputs(gather_segments(v, index), gather_segments(a, index), index,
                                  self.silent_features(a))
        return self._classify(v, a, self.silent_features(a))

    def _serve_preview_features(self, video_features, audio_segment_features,
                                preview_features):
        """``audio_topk``: the scorer on the preview features picks the k of the K."""
        sig = SIGNATURE_FEATURES
        v, a = self._checked_features(video_features, audio_segment_features)
        p = checks.check_shape(preview_features, [None, self.num_segments,
                                                  self.selector.preview_dim], sig,
                               "preview_features", "float32")
        v, p = checks.check_batch(sig, **{VIDEO_INPUT: v, "preview_features": p})
        p = checks.check_finite(p, sig, "preview_features")
        index = self.selector.indices(tf.shape(v)[0], self.selector.scores(p))
        return self.selected_outputs(gather_segments(v, index), gather_segments(a, index), index,
                              self.silent_features(a))

    def _media_features(self, frames, audio_image):
        f, a = self._checked_media(SIGNATURE_MEDIA, frames, audio_image)
        return self.video_features(f), self.audio_features(a)

    def _serve_media(self, frames, audio_image):
        f, a = self._checked_media(SIGNATURE_MEDIA, frames, audio_image)
        return self._classify_media(f, a, self.silent_images(a))

    def _serve_segment_features(self, video_features, audio_segment_features):
        return self._serve_features(video_features, audio_segment_features)

    def _serve_segment_media(self, frames, audio_segment_images):
        return self._serve_media(frames, audio_segment_images)

    def _segment_media_features(self, frames, audio_segment_images):
        return self._media_features(frames, audio_segment_images)

    def _serve_waveform(self, frames, waveform, sample_rate):
        sig = SIGNATURE_WAVEFORM
        f = checks.check_shape(frames, [None, self.num_segments, None, None, 3], sig, "frames",
                               "uint8")
        w = checks.check_shape(waveform, [None, None], sig, "waveform", "float32")
        r = checks.check_shape(sample_rate, [None], sig, "sample_rate", "int32")
        f, w, r = checks.check_batch(sig, frames=f, waveform=w, sample_rate=r)
        w = checks.check_finite(w, sig, "waveform")
        w = checks.check_waveform(w, r, expected_rate=self.sample_rate,
                                  min_samples=int(self.data.audio.n_fft), signature=sig,
                                  silent_ok=self.silence)
        f = checks.check_frame_area(f, sig)
        missing = tf.reduce_all(tf.equal(w, 0.0), axis=1)
        image = self.render_audio_image(w)
        rows = tf.reshape(missing, [-1] + [1] * (image.shape.rank - 1))
        image = tf.where(rows, tf.constant(self.silent_image), image)
        return self._classify_media(f, image, missing)

"""SavedModel export for TF Serving (``maivar export``), and the serving graph itself.

One :class:`ServingModel` holds what a trained run needs to classify a clip: the fusion MLP
(Algorithm 1's last model), the two frozen backbones **with the exact weights the training
features were extracted with**, the class list and the preprocessing settings. Its three graph
functions are both what :func:`export_run` writes as SavedModel signatures and what
``maivar predict --run-dir`` runs in memory, so a served model and a local prediction compute
the same thing:

========================  ====================================================================
signature                 inputs (named)                                    backbones
========================  ====================================================================
``serving_default``       ``video_features`` float32 ``[B, K, 1024]``,       no
                          ``audio_features`` float32 ``[B, 1536]``
``serve_media``           ``frames`` uint8 ``[B, K, H, W, 3]`` (any H, W),  yes
                          ``audio_image`` uint8 ``[B, 299, 299, 3]``
``serve_waveform``        ``frames``, ``waveform`` float32 ``[B, N]`` (mono), yes (+ audio-image
                          ``sample_rate`` int32 ``[B]``                       rendered in graph)
========================  ====================================================================

Every signature returns ``probabilities`` float32 ``[B, C]`` (softmax of the fusion logits),
``top_classes`` string ``[B, 5]`` and ``top_scores`` float32 ``[B, 5]``. The class names travel
inside the SavedModel as the asset ``labels.txt`` read by a lookup table. Frames are resized so
their shorter side is ``data.frame_short_side`` (skipped when it already is) and centre-cropped
to ``data.crop_size`` (or TSN's ten crops with ``model.ten_crop``) exactly as feature extraction
does. Shapes and sample rates are checked inside each signature before any computation, so a bad
request fails with a message naming the input and the expected shape rather than deep inside a
backbone.

The export is written with :class:`keras.export.ExportArchive` (which keeps the input names;
``tf.saved_model.save`` on a Keras 3 model would not) to ``EXPORT_DIR/<model_name>/<version>/``,
the layout TF Serving watches, through a temporary folder renamed at the end so the server never
sees a half-written version.

Example:
    >>> from maivar_tf.config import load_config
    >>> cfg = load_config("configs/synthetic.yaml")
    >>> path = export_run(cfg, run_dir="runs/synthetic", export_dir="export")  # doctest: +SKIP
    >>> served = tf.saved_model.load(str(path))                               # doctest: +SKIP
    >>> served.signatures["serve_media"](frames=..., audio_image=...)          # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maivar_tf.config import ExperimentConfig, config_from_json_dict

#: Signature names (``serving_default`` is TF Serving's default signature).
SIGNATURE_FEATURES = "serving_default"
SIGNATURE_MEDIA = "serve_media"
SIGNATURE_WAVEFORM = "serve_waveform"
SIGNATURES = (SIGNATURE_FEATURES, SIGNATURE_MEDIA, SIGNATURE_WAVEFORM)
#: Output keys of every signature.
OUTPUT_KEYS = ("probabilities", "top_classes", "top_scores")
#: How many classes ``top_classes``/``top_scores`` name (fewer when there are fewer classes).
TOP_K = 5
#: The label asset inside the SavedModel (``assets/labels.txt``, one class per line).
LABELS_ASSET = "labels.txt"
#: Export metadata next to the SavedModel (``assets.extra/`` is ignored by TF Serving).
EXPORT_INFO = "assets.extra/maivar_export.json"
#: Where features_dir keeps the backbones the features were extracted with.
BACKBONES_SUBDIR = "backbones"
VIDEO_BACKBONE_FILE = "video.weights.h5"
AUDIO_BACKBONE_FILE = "audio.weights.h5"
RUN_INFO = "run_info.json"

_VERSION_RE = re.compile(r"^\d+$")
logger = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """A run that cannot be exported or served as asked; the message says why and what to do."""


# ----------------------------------------------------------------------------- the serving model


@dataclass
class ServingModel:
    """Everything needed to go from media (or features) to class probabilities.

    Args:
        fusion: the fusion MLP: inputs ``video_features`` ``[K, 1024]`` and ``audio_features``
            ``[1536]`` -> logits ``[C]``.
        video_backbone: BNInception, RGB 0..255 ``[B, crop, crop, 3]`` -> ``[B, 1024]``.
        audio_backbone: InceptionResNetV2, RGB 0..255 ``[B, 299, 299, 3]`` -> ``[B, 1536]``.
        class_names: the classes the fusion logits index.
        cfg: the experiment (``cfg.data`` gives the frame and audio-image preprocessing).
        num_segments: K, the segments the fusion model was trained on.
        representation: the audio-image the audio features come from.
        ten_crop: average the video features over TSN's ten crops (as extraction did).
        provenance: where the pieces came from (recorded in the export metadata).
    """

    fusion: Any
    video_backbone: Any
    audio_backbone: Any
    class_names: tuple[str, ...]
    cfg: ExperimentConfig
    num_segments: int
    representation: str
    ten_crop: bool = False
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import tensorflow as tf

        self.class_names = tuple(str(c) for c in self.class_names)
        if not self.class_names:
            raise ExportError("ServingModel: empty class list")
        bad = [c for c in self.class_names if "\n" in c or not c]
        if bad:
            raise ExportError(f"ServingModel: class names must be non-empty single lines; got "
                              f"{bad[:3]!r}")
        self._table = None
        self._labels_file: str | None = None
        self.video_dim = int(self.video_backbone.output_shape[-1])
        self.audio_dim = int(self.audio_backbone.output_shape[-1])
        self.crop_size = int(self.cfg.data.crop_size)
        self.short_side = int(self.cfg.data.frame_short_side)
        self.image_size = int(self.cfg.data.audio.image_size)
        self.sample_rate = int(self.cfg.data.audio.sample_rate)
        self._fusion_inputs = [t.name.split(":")[0] for t in self.fusion.inputs]
        k = self.fusion.inputs[self._fusion_input_index("video_features")].shape[1]
        if k is not None and int(k) != int(self.num_segments):
            raise ExportError(f"the fusion model takes {k} segments but num_segments is "
                              f"{self.num_segments}; allowed: the K the run was trained with")
        self.top_k = min(TOP_K, len(self.class_names))
        self._tf = tf
        # Each network is traced once as its own function and called from every signature,
        # so an export holds (and traces) each backbone once rather than once per signature.
        c, s = self.crop_size, self.image_size
        self._video_fn = tf.function(
            lambda x: tf.cast(self.video_backbone(x, training=False), tf.float32),
            input_signature=[tf.TensorSpec([None, c, c, 3], tf.float32)], autograph=False)
        self._audio_fn = tf.function(
            lambda x: tf.cast(self.audio_backbone(x, training=False), tf.float32),
            input_signature=[tf.TensorSpec([None, s, s, 3], tf.float32)], autograph=False)

    # -- label table --------------------------------------------------------------------

    def _fusion_input_index(self, name: str) -> int:
        if name not in self._fusion_inputs:
            raise ExportError(f"the fusion model has inputs {self._fusion_inputs}; expected "
                              "'video_features' and 'audio_features'")
        return self._fusion_inputs.index(name)

    def write_labels(self, path: str | Path) -> Path:
        """Writes the class names, one per line, in logit order."""
        path = Path(path)
        path.write_text("".join(f"{c}\n" for c in self.class_names))
        return path

    def label_table(self, labels_file: str | Path | None = None):
        """The index -> class-name lookup table (built once; from ``labels_file`` if given).

        For an export, ``labels_file`` is the ``labels.txt`` that becomes the SavedModel asset
        (read by a text-file initializer); in memory the table is filled from the list.
        """
        tf = self._tf
        if self._table is not None and (labels_file is None
                                        or str(labels_file) == self._labels_file):
            return self._table
        with tf.init_scope():  # a resource of the model, never of the graph being traced
            if labels_file is None:
                initializer = tf.lookup.KeyValueTensorInitializer(
                    tf.range(len(self.class_names), dtype=tf.int64),
                    tf.constant(self.class_names, tf.string))
            else:
                initializer = tf.lookup.TextFileInitializer(
                    str(labels_file), key_dtype=tf.int64,
                    key_index=tf.lookup.TextFileIndex.LINE_NUMBER, value_dtype=tf.string,
                    value_index=tf.lookup.TextFileIndex.WHOLE_LINE)
            self._table = tf.lookup.StaticHashTable(initializer, default_value="<unknown>")
        self._labels_file = None if labels_file is None else str(labels_file)
        return self._table

    # -- checks ------------------------------------------------------------------------

    def _check_shape(self, x, pattern: Sequence[int | None], signature: str, name: str,
                     dtype: str):
        """``x`` with a control dependency on an assertion that its shape matches ``pattern``.

        ``pattern`` lists each dimension, ``None`` for "any" (the batch, H, W, N). The check
        works at any rank (a regex over the shape string), so a wrong rank also gets the message.
        """
        tf = self._tf
        dims = ",".join(r"\d+" if d is None else str(int(d)) for d in pattern)
        want = "[" + ", ".join("batch" if i == 0 and d is None else ("any" if d is None else
                                                                      str(d))
                               for i, d in enumerate(pattern)) + "]"
        shape_str = tf.strings.reduce_join(tf.strings.as_string(tf.shape(x)), separator=",")
        ok = tf.strings.regex_full_match(shape_str, dims)
        msg = f"{signature}: input {name} must be {dtype} {want}; got shape"
        check = tf.debugging.Assert(ok, [msg, tf.shape(x)], summarize=8, name=f"check_{name}")
        with tf.control_dependencies([check]):
            return tf.identity(x)

    def _check_batch(self, signature: str, **tensors):
        """Asserts every input has the same batch size; returns the tensors (in kwargs order)."""
        tf = self._tf
        names = list(tensors)
        first = tf.shape(tensors[names[0]])[0]
        checks = []
        for n in names[1:]:
            checks.append(tf.debugging.Assert(
                tf.equal(tf.shape(tensors[n])[0], first),
                [f"{signature}: inputs {names[0]} and {n} must have the same batch size; "
                 f"got", first, tf.shape(tensors[n])[0]]))
        nonempty = tf.debugging.Assert(
            tf.greater(first, 0), [f"{signature}: empty batch (batch size 0)"])
        with tf.control_dependencies([*checks, nonempty]):
            return [tf.identity(tensors[n]) for n in names]

    # -- graph pieces ------------------------------------------------------------------

    def resize_short_side(self, frames):
        """uint8 ``[B, K, H, W, 3]`` -> shorter side ``data.frame_short_side`` (as decoding does).

        A no-op (the very same pixels) when the shorter side already has that length, which
        is the case for frames coming out of :func:`maivar_tf.data.video.load_clip`.
        """
        tf = self._tf
        shape = tf.shape(frames)
        b, k, h, w = shape[0], shape[1], shape[2], shape[3]
        short = tf.minimum(h, w)
        target = tf.constant(self.short_side, tf.int32)

        def resized():
            scale = tf.cast(target, tf.float64) / tf.cast(short, tf.float64)
            nh = tf.maximum(target, tf.cast(tf.round(tf.cast(h, tf.float64) * scale), tf.int32))
            nw = tf.maximum(target, tf.cast(tf.round(tf.cast(w, tf.float64) * scale), tf.int32))
            flat = tf.reshape(frames, tf.stack([b * k, h, w, 3]))
            out = tf.image.resize(flat, tf.stack([nh, nw]), method="bilinear", antialias=True)
            out = tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)
            return tf.reshape(out, tf.stack([b, k, nh, nw, 3]))

        return tf.cond(tf.equal(short, target), lambda: tf.identity(frames), resized)

    def prepare_frames(self, frames):
        """uint8 ``[B, K, H, W, 3]`` -> the crops the video backbone sees.

        Frames are resized so the shorter side is ``data.frame_short_side`` (skipped when it
        already is), then centre-cropped to ``data.crop_size`` (``[B, K, c, c, 3]``) like the
        input pipeline's evaluation path; with ``ten_crop``, TSN's ten crops
        ``[10, B, K, c, c, 3]`` as feature extraction takes them. Frames that already are
        ``crop_size`` squares (what the input pipeline yields) are used as they are.
        """
        from maivar_tf.data.input_pipeline import center_crop

        tf = self._tf
        c = self.crop_size
        if self.ten_crop:
            from maivar_tf.features import ten_crop

            return ten_crop(self.resize_short_side(frames), c)
        shape = tf.shape(frames)
        is_crop = tf.logical_and(tf.equal(shape[2], c), tf.equal(shape[3], c))
        out = tf.cond(is_crop, lambda: tf.identity(frames),
                      lambda: center_crop(self.resize_short_side(frames), c))
        return tf.ensure_shape(out, [None, self.num_segments, c, c, 3])

    def video_features(self, frames):
        """uint8 ``[B, K, H, W, 3]`` -> float32 ``[B, K, 1024]`` (as feature extraction)."""
        tf = self._tf
        crops = self.prepare_frames(frames)
        c, k, d = self.crop_size, self.num_segments, self.video_dim
        flat = tf.reshape(crops, [-1, c, c, 3])
        feats = self._video_fn(tf.cast(flat, tf.float32))
        if self.ten_crop:
            return tf.reduce_mean(tf.reshape(feats, [10, -1, k, d]), axis=0)
        return tf.reshape(feats, [-1, k, d])

    def audio_features(self, audio_image):
        """uint8 ``[B, 299, 299, 3]`` -> float32 ``[B, 1536]``."""
        tf = self._tf
        return self._audio_fn(tf.cast(audio_image, tf.float32))

    def render_audio_image(self, waveform):
        """float32 ``[B, N]`` -> uint8 ``[B, 299, 299, 3]`` with the shared TF renderer."""
        tf = self._tf
        from maivar_tf.data.audio_image import render_audio_image

        max_seconds = float(self.cfg.data.audio.max_seconds)
        if max_seconds > 0:
            waveform = waveform[:, :int(round(max_seconds * self.sample_rate))]
        return tf.cast(render_audio_image(waveform, self.representation, self.cfg.data.audio),
                       tf.uint8)

    def logits(self, video_features, audio_features):
        """The fusion MLP's logits ``[B, C]``."""
        tf = self._tf
        inputs = {"video_features": video_features, "audio_features": audio_features}
        return tf.cast(self.fusion(inputs, training=False), tf.float32)

    def outputs(self, logits) -> dict[str, Any]:
        """``probabilities``, ``top_classes``, ``top_scores`` from logits ``[B, C]``."""
        tf = self._tf
        probabilities = tf.nn.softmax(logits, axis=-1)
        scores, index = tf.math.top_k(probabilities, k=self.top_k)
        classes = self.label_table().lookup(tf.cast(index, tf.int64))
        return {"probabilities": probabilities, "top_classes": classes, "top_scores": scores}

    # -- the three signatures ------------------------------------------------------------

    def serve_features(self, video_features, audio_features):
        """``serving_default``: backbone features -> outputs."""
        sig = SIGNATURE_FEATURES
        v = self._check_shape(video_features, [None, self.num_segments, self.video_dim], sig,
                              "video_features", "float32")
        a = self._check_shape(audio_features, [None, self.audio_dim], sig, "audio_features",
                              "float32")
        v, a = self._check_batch(sig, video_features=v, audio_features=a)
        return self.outputs(self.logits(v, a))

    def media_features(self, frames, audio_image):
        """``(video_features [B, K, 1024], audio_features [B, 1536])`` from media (no checks)."""
        return self.video_features(frames), self.audio_features(audio_image)

    def serve_media(self, frames, audio_image):
        """``serve_media``: decoded frames and a rendered audio-image -> outputs."""
        sig = SIGNATURE_MEDIA
        f = self._check_shape(frames, [None, self.num_segments, None, None, 3], sig, "frames",
                              "uint8")
        a = self._check_shape(audio_image, [None, self.image_size, self.image_size, 3], sig,
                              "audio_image", "uint8")
        f, a = self._check_batch(sig, frames=f, audio_image=a)
        f = self._check_min_side(f, sig)
        return self.outputs(self.logits(self.video_features(f), self.audio_features(a)))

    def serve_waveform(self, frames, waveform, sample_rate):
        """``serve_waveform``: frames and a mono waveform (audio-image rendered in graph)."""
        tf = self._tf
        sig = SIGNATURE_WAVEFORM
        f = self._check_shape(frames, [None, self.num_segments, None, None, 3], sig, "frames",
                              "uint8")
        w = self._check_shape(waveform, [None, None], sig, "waveform", "float32")
        r = self._check_shape(sample_rate, [None], sig, "sample_rate", "int32")
        f, w, r = self._check_batch(sig, frames=f, waveform=w, sample_rate=r)
        rate_ok = tf.debugging.Assert(
            tf.reduce_all(tf.equal(r, self.sample_rate)),
            [f"{sig}: input sample_rate must be {self.sample_rate} Hz (audio.sample_rate of the "
             f"trained model) for every waveform; resample first; got", r])
        n_min = int(self.cfg.data.audio.n_fft)
        long_ok = tf.debugging.Assert(
            tf.greater_equal(tf.shape(w)[1], n_min),
            [f"{sig}: input waveform needs at least {n_min} samples (audio.n_fft); got",
             tf.shape(w)[1]])
        with tf.control_dependencies([rate_ok, long_ok]):
            w = tf.identity(w)
        f = self._check_min_side(f, sig)
        image = self.render_audio_image(w)
        return self.outputs(self.logits(self.video_features(f), self.audio_features(image)))

    def _check_min_side(self, frames, signature: str):
        tf = self._tf
        shape = tf.shape(frames)
        ok = tf.logical_and(tf.greater(shape[2], 0), tf.greater(shape[3], 0))
        check = tf.debugging.Assert(ok, [f"{signature}: input frames has an empty height or width; "
                                         "got shape", shape])
        with tf.control_dependencies([check]):
            return tf.identity(frames)

    # -- specs -------------------------------------------------------------------------

    def input_signatures(self) -> dict[str, list]:
        """Each signature's named ``tf.TensorSpec`` list, in argument order."""
        tf = self._tf
        k, s = self.num_segments, self.image_size
        frames = tf.TensorSpec([None, k, None, None, 3], tf.uint8, name="frames")
        return {
            SIGNATURE_FEATURES: [
                tf.TensorSpec([None, k, self.video_dim], tf.float32, name="video_features"),
                tf.TensorSpec([None, self.audio_dim], tf.float32, name="audio_features"),
            ],
            SIGNATURE_MEDIA: [
                frames,
                tf.TensorSpec([None, s, s, 3], tf.uint8, name="audio_image"),
            ],
            SIGNATURE_WAVEFORM: [
                frames,
                tf.TensorSpec([None, None], tf.float32, name="waveform"),
                tf.TensorSpec([None], tf.int32, name="sample_rate"),
            ],
        }

    def signature_functions(self) -> dict[str, Any]:
        """Signature name -> the Python function implementing it."""
        return {SIGNATURE_FEATURES: self.serve_features, SIGNATURE_MEDIA: self.serve_media,
                SIGNATURE_WAVEFORM: self.serve_waveform}

    def tf_functions(self) -> dict[str, Any]:
        """Signature name -> a ``tf.function`` with the export's input signature (cached).

        Also ``media_features``: ``serve_media``'s backbone half, returning the two feature
        tensors, so ``maivar predict`` can time backbones and head separately.
        """
        if getattr(self, "_tf_functions", None) is None:
            tf = self._tf
            specs = self.input_signatures()
            self._tf_functions = {
                name: tf.function(fn, input_signature=specs[name], autograph=False)
                for name, fn in self.signature_functions().items()}
            # The backbones alone (``serve_media`` minus the head), for timed predictions.
            self._tf_functions["media_features"] = tf.function(
                self.media_features, input_signature=specs[SIGNATURE_MEDIA], autograph=False)
        return self._tf_functions

    def export_info(self) -> dict[str, Any]:
        """Metadata written to ``assets.extra/maivar_export.json``."""
        return {
            "class_names": list(self.class_names),
            "num_segments": self.num_segments,
            "representation": self.representation,
            "ten_crop": self.ten_crop,
            "top_k": self.top_k,
            "signatures": {name: [{"name": s.name, "dtype": s.dtype.name,
                                   "shape": [d if d is not None else -1 for d in s.shape]}
                                  for s in specs]
                           for name, specs in self.input_signatures().items()},
            "outputs": list(OUTPUT_KEYS),
            "provenance": self.provenance,
            "config": self.cfg.to_dict(),
        }


# ----------------------------------------------------------------------------- loading a run


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    """``run_dir/run_info.json`` (empty dict when the run has none)."""
    path = Path(run_dir) / RUN_INFO
    return json.loads(path.read_text()) if path.exists() else {}


def _first(info: Mapping[str, Any], *keys: str, default=None):
    for k in keys:
        if k in info and info[k] not in (None, ""):
            return info[k]
    return default


def load_backbones(features_dir: str | Path, cfg: ExperimentConfig | None = None):
    """The video and audio backbones exactly as they were when the features were extracted.

    Looks, in order, for the weights ``maivar extract`` saved beside the features
    (``features_dir/backbones/{video,audio}.weights.h5``, or the paths ``feature_info.json``
    records), then for the weights file or ``imagenet`` spec that ``feature_info.json`` says
    the features were made with. Randomly initialised (``none``) backbones that were not saved
    cannot be rebuilt: their features would not match, so that is an error.

    Args:
        features_dir: the features folder of the run.
        cfg: the experiment (``data.crop_size`` is BNInception's input side).

    Returns:
        ``(video_backbone, audio_backbone, provenance)``.

    Raises:
        ExportError: the backbones the features came from cannot be recovered.
    """
    from maivar_tf.models.bn_inception import build_video_backbone
    from maivar_tf.models.inception_resnet_v2 import build_audio_backbone

    features_dir = Path(features_dir)
    crop = int(cfg.data.crop_size) if cfg is not None else 224

    def build_video(spec):  # the input side follows data.crop_size, as at extraction
        return build_video_backbone(spec, image_size=crop)

    info_path = features_dir / "feature_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    if not info:
        raise ExportError(f"{info_path} not found: the backbones the run's features were "
                          "extracted with are unknown; run `maivar extract` (or point "
                          "data.features_dir at the features the run was trained on)")
    saved = info.get("backbone_weights") or info.get("backbones") or {}
    provenance: dict[str, Any] = {"features_dir": str(features_dir)}
    models = {}
    for kind, build, fname, allow_imagenet in (
            ("video", build_video, VIDEO_BACKBONE_FILE, False),
            ("audio", build_audio_backbone, AUDIO_BACKBONE_FILE, True)):
        candidates = []
        if isinstance(saved, Mapping) and saved.get(kind):
            p = Path(str(saved[kind]))
            candidates.append(p if p.is_absolute() else features_dir / p)
        candidates.append(features_dir / BACKBONES_SUBDIR / fname)
        path = next((p for p in candidates if p.is_file()), None)
        if path is not None:
            models[kind] = build(str(path))
            provenance[f"{kind}_backbone"] = str(path)
            continue
        desc = str(info.get(f"{kind}_backbone", ""))
        spec = _spec_from_description(desc, allow_imagenet)
        if spec is None:
            raise ExportError(
                f"cannot recover the {kind} backbone the features in {features_dir} were "
                f"extracted with (recorded as {desc or 'nothing'!r}, and no "
                f"{features_dir / BACKBONES_SUBDIR / fname}): randomly initialised ('none') "
                "weights must be saved at extraction time; re-run `maivar extract` into a "
                "fresh data.features_dir and retrain")
        models[kind] = build(spec)
        provenance[f"{kind}_backbone"] = spec
    return models["video"], models["audio"], provenance


def _spec_from_description(desc: str, allow_imagenet: bool) -> str | None:
    """``BNInception:/path|size|mtime`` -> the path if that file is unchanged; ``imagenet``."""
    if ":" not in desc:
        return None
    _, rest = desc.split(":", 1)
    if rest == "imagenet":
        return "imagenet" if allow_imagenet else None
    if rest in ("none", "") or desc.startswith("injected:"):
        return None
    parts = rest.split("|")
    path = Path(parts[0])
    if not path.is_file():
        return None
    if len(parts) == 3:
        st = path.stat()
        if str(st.st_size) != parts[1] or str(int(st.st_mtime)) != parts[2]:
            return None
    return str(path)


#: The data settings that decide what pixels and audio-images a model sees.
_PREPROCESSING_FIELDS = ("num_segments", "frame_short_side", "crop_size", "jpeg_quality", "audio")


def _run_config(cfg: ExperimentConfig, info: Mapping[str, Any], run_dir: Path
                ) -> ExperimentConfig:
    """The config the run was trained with (``run_info.json``), else ``cfg``.

    The preprocessing must be the training one, whatever ``--config`` says: a mismatch is
    logged and the run's settings win.
    """
    recorded = info.get("config")
    if not recorded:
        return cfg
    try:
        run_cfg = config_from_json_dict(recorded)
    except Exception as e:  # an older or hand-edited record: fall back to the given config
        logger.warning("%s: cannot read the recorded config (%s); using the given one",
                       run_dir / RUN_INFO, e)
        return cfg
    diff = [f for f in _PREPROCESSING_FIELDS
            if getattr(run_cfg.data, f) != getattr(cfg.data, f)]
    if diff:
        logger.warning("the given config's data.%s differ from the run's (%s); exporting with "
                       "the settings the run was trained with", ", data.".join(diff),
                       run_dir / RUN_INFO)
    return run_cfg


def load_serving_model(cfg: ExperimentConfig, run_dir: str | Path, *,
                       features_dir: str | Path | None = None,
                       backbones: tuple[Any, Any] | None = None) -> ServingModel:
    """Builds the :class:`ServingModel` of a trained run.

    Args:
        cfg: the experiment. The run's own ``run_info.json`` wins for the class list, K, the
            representation and the preprocessing (the config the run was trained with).
        run_dir: the folder ``maivar train`` wrote (``fusion.keras``, ``run_info.json``).
        features_dir: where the run's features (and their backbones) are; default: the
            ``data.features_dir`` the run recorded when it exists, else ``cfg``'s.
        backbones: ``(video, audio)`` Keras models to use instead of loading them (tests).

    Raises:
        ExportError: the run or its backbones cannot be found or do not fit together.
        FileNotFoundError: ``run_dir`` does not exist or the run is incomplete.
    """
    from maivar_tf.training import load_run

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {str(run_dir)!r} does not exist; train first "
                                "(`maivar train`) or pass --run-dir")
    run = load_run(run_dir)
    info = read_run_info(run_dir)
    class_names = tuple(_first(info, "class_names", default=()) or ())
    if not class_names:
        raise ExportError(f"{run_dir / RUN_INFO} names no classes; retrain with `maivar train`")
    run_cfg = _run_config(cfg, info, run_dir)
    representation = str(_first(info, "representation", default=run_cfg.model.representation))
    num_segments = int(_first(info, "num_segments", default=run_cfg.data.num_segments))
    if features_dir is None:
        candidates = [Path(run_cfg.data.features_dir), Path(cfg.data.features_dir)]
        features_dir = next((p for p in candidates if (p / "feature_info.json").exists()),
                            candidates[0])
    features_dir = Path(features_dir)
    provenance: dict[str, Any] = {"run_dir": str(run_dir.resolve())}
    ten_crop = bool(run_cfg.model.ten_crop)
    fi_path = features_dir / "feature_info.json"
    if fi_path.exists():
        fi = json.loads(fi_path.read_text())
        ten_crop = bool(fi.get("ten_crop", ten_crop))
        if "num_segments" in fi and int(fi["num_segments"]) != num_segments:
            raise ExportError(f"{fi_path} has K={fi['num_segments']} but the run was trained "
                              f"with K={num_segments}; pass the features the run was "
                              "trained on")
    if backbones is None:
        video, audio, prov = load_backbones(features_dir, run_cfg)
        provenance.update(prov)
    else:
        video, audio = backbones
        provenance["backbones"] = "injected"
    if run_cfg.data.num_segments != num_segments:
        run_cfg = dataclasses.replace(
            run_cfg, data=dataclasses.replace(run_cfg.data, num_segments=num_segments))
    return ServingModel(fusion=run.fusion, video_backbone=video, audio_backbone=audio,
                        class_names=class_names, cfg=run_cfg, num_segments=num_segments,
                        representation=representation, ten_crop=ten_crop,
                        provenance=provenance)


# ----------------------------------------------------------------------------- export


def next_version(model_dir: str | Path) -> int:
    """The next free integer version under ``model_dir`` (1 when there is none)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return 1
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and
                _VERSION_RE.match(p.name)]
    return max(versions, default=0) + 1


def export_serving_model(model: ServingModel, export_dir: str | Path, model_name: str,
                         version: int | None = None) -> Path:
    """Writes ``model`` as a SavedModel to ``export_dir/model_name/version/``.

    Args:
        model: the serving model.
        export_dir: the model base path's parent (TF Serving's ``--model_base_path`` is
            ``export_dir/model_name``).
        model_name: the served model's name.
        version: an integer version; default: the next free one.

    Returns:
        The version folder.

    Raises:
        ExportError: ``version`` already exists, is negative, or ``model_name`` is not a plain
            folder name.
    """
    import keras

    if not model_name or "/" in model_name or model_name in (".", ".."):
        raise ExportError(f"model name {model_name!r}: allowed: a plain folder name")
    model_dir = Path(export_dir) / model_name
    if version is None:
        version = next_version(model_dir)
    if int(version) < 0:
        raise ExportError(f"version {version}: allowed: an integer >= 0")
    final = model_dir / str(int(version))
    if final.exists():
        raise ExportError(f"{final} already exists; pass another --version or leave it out "
                          f"for the next free one ({next_version(model_dir)})")
    model_dir.mkdir(parents=True, exist_ok=True)
    # TF Serving only loads all-digit folders: build under a dot-name, rename when complete.
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir))
    memory_table = (model._table, model._labels_file)
    try:
        labels = model.write_labels(tmp / LABELS_ASSET)
        table = model.label_table(labels)
        archive = keras.export.ExportArchive()
        # The endpoints capture every variable they use; tracking the Keras models as well
        # would only make the archive walk (and re-trace) them. The table must be tracked.
        archive.track(table)
        specs = model.input_signatures()
        for name, fn in model.signature_functions().items():
            archive.add_endpoint(name, fn, input_signature=specs[name])
        out = tmp / "model"
        archive.write_out(str(out), verbose=False)
        (out / "assets.extra").mkdir(exist_ok=True)
        info = model.export_info()
        info["model_name"] = model_name
        info["version"] = int(version)
        (out / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
        os.replace(out, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        model._table, model._labels_file = memory_table  # back to the in-memory table
    return final


def export_run(cfg: ExperimentConfig, run_dir: str | Path, export_dir: str | Path = "export",
               model_name: str | None = None, version: int | None = None, *,
               features_dir: str | Path | None = None) -> Path:
    """``maivar export``: a trained run -> ``export_dir/<model_name>/<version>/`` SavedModel.

    Args:
        cfg: the experiment the run was trained with.
        run_dir: the trained run (``fusion.keras``, ``run_info.json``).
        export_dir: TF Serving's model base path's parent.
        model_name: default ``cfg.name``.
        version: default the next free integer.
        features_dir: the run's features (for the backbones); default as in
            :func:`load_serving_model`.

    Returns:
        The written version folder.
    """
    model = load_serving_model(cfg, run_dir, features_dir=features_dir)
    return export_serving_model(model, export_dir, model_name or cfg.name, version)


# ----------------------------------------------------------------------------- reading back


def read_export_info(saved_model_dir: str | Path) -> dict[str, Any]:
    """The metadata :func:`export_serving_model` wrote beside a SavedModel."""
    path = Path(saved_model_dir) / EXPORT_INFO
    if not path.exists():
        raise ExportError(f"{path} not found: {saved_model_dir} is not a `maivar export` "
                          "SavedModel version folder (EXPORT_DIR/<model_name>/<version>)")
    return json.loads(path.read_text())


def export_config(saved_model_dir: str | Path) -> ExperimentConfig:
    """The experiment config recorded in an export (preprocessing for ``maivar predict``)."""
    return config_from_json_dict(read_export_info(saved_model_dir)["config"])


def resolve_saved_model_dir(path: str | Path) -> Path:
    """A version folder, or a model folder (its highest version is taken)."""
    path = Path(path)
    if (path / "saved_model.pb").exists():
        return path
    if path.is_dir():
        versions = sorted(int(p.name) for p in path.iterdir()
                           if p.is_dir() and _VERSION_RE.match(p.name)
                           and (p / "saved_model.pb").exists())
        if versions:
            return path / str(versions[-1])
    raise FileNotFoundError(f"{str(path)!r} holds no SavedModel (saved_model.pb) nor numbered "
                            "version folders; pass EXPORT_DIR/<model_name>/<version>")


def as_numpy_outputs(outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Signature outputs -> numpy (class names decoded to ``str``)."""
    out = {}
    for k, v in outputs.items():
        a = np.asarray(v)
        if a.dtype.kind in ("O", "S"):
            a = np.vectorize(lambda s: s.decode() if isinstance(s, bytes) else str(s),
                             otypes=[object])(a).astype(str)
        out[k] = a
    return out

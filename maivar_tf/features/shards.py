"""Feature shards: their file names, their ``tf.train.Example`` codec, and reading one split.

The paper's heads (Shaikh et al. 2024, Sec. 3.4) train on frozen backbone features. They live
in ``features_dir`` as::

    video-<split>-SSSSS.tfrecord          {example/id, clip/label/index,
                                           video/features (K*D floats), video/num_segments,
                                           segment/label/index (K), segment/time (K),
                                           segment/has_spans, audio/missing}
    audio-<REP>-<split>-SSSSS.tfrecord    {example/id, clip/label/index, audio/features (D)}
    audio-<backbone>-<REP>-<split>-SSSSS.tfrecord
                                          the same, from another audio backbone than the
                                          default InceptionResNetV2 (model.audio_backbone)
    audio-[<backbone>-]<REP>_SEGMENTS-<split>-SSSSS.tfrecord
                                          {example/id, clip/label/index,
                                           audio/segment_features (K*D), audio/num_segments}:
                                          the audio backbone on each segment's audio-image,
                                          when the TFRecords hold them (data.segment_audio)
    feature_info.json                     a FeatureInfo (maivar_tf.artifacts); per audio
                                          backbone also its features of the silent
                                          audio-image of each representation (``silent``)

The codec is :mod:`maivar_tf.features.codec`.

The audio features of several backbones live side by side in one folder (the backbone
ablation of the paper's Sec. 5.2.1); ``load_features(..., audio_backbone=...)`` picks them.

:func:`load_features` reads one split back as a :class:`FeatureSet`, joining video and audio
**by example id, never by row position** (:func:`pair_by_id`): the authors' public
concatenated-feature classifier scored near chance, most likely because its two feature files
were not aligned row by row.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maivar_tf.artifacts import DEFAULT_AUDIO_BACKBONE, ArtifactError, FeatureInfo
from maivar_tf.config import REPRESENTATIONS
from maivar_tf.features.codec import (  # noqa: F401  (re-exported: the shard API lives here)
    FEATURE_KEYS,
    feature_example,
    read_audio_segment_shards,
    read_audio_shards,
    read_video_shards,
    write_audio_segment_shard,
    write_audio_shard,
    write_video_shard,
)

#: The optional per-row fields of a FeatureSet (``None`` or one row per id).
_OPTIONAL_ROWS = ("audio_segments", "segment_labels", "segment_times", "audio_missing")


class FeatureError(RuntimeError):
    """Feature shards that are missing, stale, inconsistent or cannot be paired."""


@dataclass(frozen=True)
class FeatureSet:
    """One split's features, video and audio paired by example id and sorted by id.

    Args:
        ids: example ids, ``str`` ``[N]``, sorted.
        video: BNInception segment features, float32 ``[N, K, Dv]``.
        audio: InceptionResNetV2 audio-image features, float32 ``[N, Da]``.
        labels: class indices, int64 ``[N]``.
        class_names: the class list the labels index.
        representation: which audio-image the audio features come from.
        audio_backbone: which audio backbone (``model.audio_backbone``) made them.
        audio_segments: per-segment audio features, float32 ``[N, K, Da]`` (only when loaded
            with ``load_features(..., segments=True)``).
        segment_labels: int64 ``[N, K]``, the span label of each event segment, -1 for
            background; None when no example of the split has spans.
        segment_times: float32 ``[N, K]`` seconds from the file start (the segments' frame
            timestamps); None for features extracted before they were stored.
        audio_missing: bool ``[N]``, the clip had no audio track (its audio is the silent one).
        silent_audio: float32 ``[Da]``, the audio backbone's features of this representation's
            silent audio-image (what a clip without sound gets); None when not extracted.
    """

    ids: np.ndarray
    video: np.ndarray
    audio: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    representation: str
    audio_backbone: str = DEFAULT_AUDIO_BACKBONE
    audio_segments: np.ndarray | None = None
    segment_labels: np.ndarray | None = None
    segment_times: np.ndarray | None = None
    audio_missing: np.ndarray | None = None
    silent_audio: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        optional = [f for f in _OPTIONAL_ROWS if getattr(self, f) is not None]
        for name in ("video", "audio", "labels", *optional):
            if len(getattr(self, name)) != n:
                raise ValueError(f"FeatureSet.{name} has {len(getattr(self, name))} rows; "
                                 f"expected {n} (one per id)")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(class_names)``)."""
        return len(self.class_names)

    @property
    def num_segments(self) -> int:
        """K, the segments per video."""
        return int(self.video.shape[1])

    def subset(self, index: np.ndarray | Sequence[int]) -> FeatureSet:
        """The rows at ``index`` (e.g. a validation split), keeping the class list (every
        per-row field follows)."""
        index = np.asarray(index)
        rows = {f: getattr(self, f)[index] for f in _OPTIONAL_ROWS
                if getattr(self, f) is not None}
        return dataclasses.replace(self, ids=self.ids[index], video=self.video[index],
                                   audio=self.audio[index], labels=self.labels[index], **rows)


# ----------------------------------------------------------------------------- file names


def video_shard_name(split: str, index: int) -> str:
    """File name of the video feature shard made from input shard ``index`` of ``split``."""
    return f"video-{split}-{index:05d}.tfrecord"


def _audio_prefix(representation: str, backbone: str, segments: bool = False) -> str:
    """``audio-<REP>`` for the default backbone (the names of version 2), else
    ``audio-<backbone>-<REP>``; ``<REP>_SEGMENTS`` for per-segment features."""
    named = "" if backbone == DEFAULT_AUDIO_BACKBONE else f"{backbone}-"
    return f"audio-{named}{representation.upper()}{'_SEGMENTS' if segments else ''}"


def audio_shard_name(representation: str, split: str, index: int,
                     backbone: str = DEFAULT_AUDIO_BACKBONE) -> str:
    """File name of one representation's audio feature shard for input shard ``index``,
    from audio backbone ``backbone`` (``audio-resnet18-MFCC-train-00000.tfrecord``; the default
    backbone's have no backbone in the name)."""
    return f"{_audio_prefix(representation, backbone)}-{split}-{index:05d}.tfrecord"


def audio_segment_shard_name(representation: str, split: str, index: int,
                             backbone: str = DEFAULT_AUDIO_BACKBONE) -> str:
    """File name of one representation's per-segment audio feature shard for input shard
    ``index`` (``audio-MFCC_SEGMENTS-train-00000.tfrecord``, other backbones
    ``audio-resnet18-MFCC_SEGMENTS-...``; no glob of the other shards matches it)."""
    return f"{_audio_prefix(representation, backbone, True)}-{split}-{index:05d}.tfrecord"


def _shard_files(features_dir: Path, split: str, representation: str | None,
                 backbone: str = DEFAULT_AUDIO_BACKBONE, segments: bool = False) -> list[Path]:
    """The split's video shards (``representation`` None) or audio shards, sorted."""
    digits = "[0-9]" * 5
    prefix = ("video" if representation is None
              else _audio_prefix(representation, backbone, segments))
    return sorted(features_dir.glob(f"{prefix}-{split}-{digits}.tfrecord"))


# ----------------------------------------------------------------------------- pairing


def _index_by_id(ids: np.ndarray, what: str) -> dict[str, int]:
    index: dict[str, int] = {}
    dups = []
    for row, i in enumerate(ids.tolist()):
        if i in index:
            dups.append(i)
        index[i] = row
    if dups:
        raise FeatureError(f"{what}: {len(dups)} duplicated example id(s), e.g. "
                           f"{', '.join(map(repr, dups[:5]))}; every example id must be unique")
    return index


def _unpaired_message(only_video: list[str], only_audio: list[str], where: str) -> str:
    parts = []
    if only_video:
        parts.append(f"{len(only_video)} video id(s) without audio features, e.g. "
                     f"{', '.join(map(repr, only_video[:5]))}")
    if only_audio:
        parts.append(f"{len(only_audio)} audio id(s) without video features, e.g. "
                     f"{', '.join(map(repr, only_audio[:5]))}")
    return (f"cannot pair video and audio features ({where}): " + "; ".join(parts)
            + ". Re-run `maivar extract` for this representation.")


def pair_by_id(video: dict[str, np.ndarray], audio: dict[str, np.ndarray], *,
               split: str = "?", representation: str = "?") -> dict[str, np.ndarray]:
    """Joins video and audio feature columns on example id; rows come out sorted by id.

    Args:
        video: ``{"ids", "labels", "video"}`` (any row order).
        audio: ``{"ids", "labels", "audio"}`` (any row order).
        split, representation: named in error messages.

    Returns:
        ``{"ids", "labels", "video", "audio"}`` sorted by id (and every other column of
        ``video``, e.g. ``segment_labels``, in the same order).

    Raises:
        FeatureError: an id without its partner (a few are listed), duplicated ids, or a label
            that differs between the two sides.
    """
    where = f"split {split!r}, representation {representation!r}"
    vi = _index_by_id(video["ids"], f"video features ({where})")
    ai = _index_by_id(audio["ids"], f"audio features ({where})")
    only_v, only_a = sorted(set(vi) - set(ai)), sorted(set(ai) - set(vi))
    if only_v or only_a:
        raise FeatureError(_unpaired_message(only_v, only_a, where))
    ids = sorted(vi)
    v_rows = np.array([vi[i] for i in ids], dtype=np.int64)
    a_rows = np.array([ai[i] for i in ids], dtype=np.int64)
    v_labels, a_labels = video["labels"][v_rows], audio["labels"][a_rows]
    bad = np.flatnonzero(v_labels != a_labels)
    if len(bad):
        eg = ", ".join(f"{ids[b]!r} (video {v_labels[b]}, audio {a_labels[b]})" for b in bad[:5])
        raise FeatureError(f"labels differ between video and audio features ({where}) for "
                           f"{len(bad)} id(s), e.g. {eg}")
    extra = {k: v[v_rows] for k, v in video.items() if k not in ("ids", "labels", "audio")}
    return {**extra, "ids": np.array(ids, dtype=str), "labels": v_labels.astype(np.int64),
            "audio": audio["audio"][a_rows]}


# ----------------------------------------------------------------------------- loading


def read_feature_info(features_dir: str | os.PathLike) -> FeatureInfo:
    """The folder's :class:`~maivar_tf.artifacts.FeatureInfo`.

    Raises:
        FeatureError: there is none (run ``maivar extract`` first), or it is unreadable or of
            an older layout (re-extract).
    """
    try:
        return FeatureInfo.read(features_dir)
    except FileNotFoundError as e:
        raise FeatureError(f"{e} (features_dir {os.fspath(features_dir)!r})") from e
    except ArtifactError as e:
        raise FeatureError(f"{e}; re-run `maivar extract` into a fresh data.features_dir") from e


def resolve_audio_backbone(info: FeatureInfo, audio_backbone: str | None) -> str:
    """The audio backbone to read: ``audio_backbone``, else the default when the folder has
    its features, else the folder's only one.

    Raises:
        FeatureError: the folder has no features of that backbone (or several, none given).
    """
    names = info.audio_names
    if audio_backbone is None:
        if DEFAULT_AUDIO_BACKBONE in names or len(names) == 1:
            return DEFAULT_AUDIO_BACKBONE if DEFAULT_AUDIO_BACKBONE in names else names[0]
        raise FeatureError(f"the features hold several audio backbones ({', '.join(names)}); "
                           "name one (model.audio_backbone)")
    if info.audio(audio_backbone) is None:
        raise FeatureError(
            f"no {audio_backbone!r} audio features; extracted audio backbones: "
            f"{', '.join(names)}. Run `maivar extract --set model.audio_backbone="
            f"{audio_backbone}`.")
    return audio_backbone


def _check_extracted(info: FeatureInfo, features_dir: Path, split: str,
                     representation: str, backbone: str, segments: bool = False) -> None:
    """Raises FeatureError unless the split's (per-segment, with ``segments``) audio features
    of ``representation`` from ``backbone`` were extracted, saying what to run."""
    if representation not in REPRESENTATIONS:
        raise FeatureError(f"unknown representation {representation!r}; allowed: "
                           f"{', '.join(REPRESENTATIONS)}")
    if split not in info.splits:
        raise FeatureError(f"no {split!r} features in {features_dir}; extracted splits: "
                           f"{', '.join(info.splits) or 'none'}")
    audio = info.audio(backbone)
    done = (audio.segment_representations if segments else audio.representations).get(split, ())
    if representation not in done:
        which = "" if backbone == DEFAULT_AUDIO_BACKBONE else f" --set model.audio_backbone={backbone}"
        kind, build = ("per-segment ", "Build the TFRecords with data.segment_audio=true, then "
                       "run") if segments else ("", "Run")
        raise FeatureError(
            f"no {kind}{representation!r} audio features ({backbone}) for split {split!r} in "
            f"{features_dir}; extracted: {', '.join(done) or 'none'}. "
            f"{build} `maivar extract --representations {representation}{which}`.")


def _per_clip_fields(paired: dict[str, np.ndarray]) -> dict[str, np.ndarray | None]:
    """The video shards' per-clip extras as FeatureSet fields (None where not stored)."""
    times = paired["segment_times"]
    return {"segment_labels": paired["segment_labels"] if paired["has_spans"].any() else None,
            "segment_times": None if np.isnan(times).any() else times,
            "audio_missing": paired["audio_missing"]}


def load_features(features_dir: str | os.PathLike, split: str, representation: str,
                  audio_backbone: str | None = None, segments: bool = False) -> FeatureSet:
    """Loads one split's video and audio features, joined by example id (never by position).

    Args:
        features_dir: the folder :func:`~maivar_tf.features.extract_features` wrote.
        split: ``train``, ``test`` or ``val``.
        representation: the audio-image whose audio features to pair with the video features.
        audio_backbone: whose audio features (``model.audio_backbone``); default: the default
            backbone's when the folder has them, else the folder's only audio backbone's.
        segments: also load the per-segment audio features (``FeatureSet.audio_segments``).

    Returns:
        A :class:`FeatureSet` sorted by example id, with its segment labels and times, the
        audio-missing flags and the silent audio features (see :class:`FeatureSet`).

    Raises:
        FeatureError: no features for that split/representation (or no per-segment ones with
            ``segments``), or ids that do not pair.
    """
    features_dir = Path(features_dir)
    info = read_feature_info(features_dir)
    backbone = resolve_audio_backbone(info, audio_backbone)
    _check_extracted(info, features_dir, split, representation, backbone)
    if segments:
        _check_extracted(info, features_dir, split, representation, backbone, segments=True)
    dim = info.audio(backbone).dim
    video = read_video_shards(_shard_files(features_dir, split, None), info.num_segments,
                              info.video_dim)
    audio = read_audio_shards(_shard_files(features_dir, split, representation, backbone), dim)
    paired = pair_by_id(video, audio, split=split, representation=representation)
    expected = info.splits[split].count
    if len(paired["ids"]) != int(expected):
        raise FeatureError(f"{features_dir}: {len(paired['ids'])} {split!r} examples paired, "
                           f"{FeatureInfo.FILE} says {expected}; re-run `maivar extract`")
    audio_segments = None
    if segments:
        seg = read_audio_segment_shards(
            _shard_files(features_dir, split, representation, backbone, segments=True),
            info.num_segments, dim)
        audio_segments = pair_by_id(
            {k: paired[k] for k in ("ids", "labels", "video")},
            {"ids": seg["ids"], "labels": seg["labels"], "audio": seg["audio_segments"]},
            split=split, representation=f"{representation} per segment")["audio"]
    silent = info.audio(backbone).silent.get(representation)
    return FeatureSet(ids=paired["ids"], video=paired["video"], audio=paired["audio"],
                      labels=paired["labels"], class_names=tuple(info.class_names),
                      representation=representation, audio_backbone=backbone,
                      audio_segments=audio_segments,
                      silent_audio=None if silent is None else np.asarray(silent, np.float32),
                      **_per_clip_fields(paired))

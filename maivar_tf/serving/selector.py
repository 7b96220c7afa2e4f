"""Segment selection in the serving graph: which k of the K segments the visual backbone sees.

Listen to Look (Gao et al., CVPR 2020) and SCSampler (Korbar et al., ICCV 2019) preview a
video with a cheap audio encoder and run the expensive visual network only on the most
salient moments. A temporal-binding run with ``model.selection`` and ``model.budget`` (k) is
served by a :class:`~maivar_tf.serving.module.ServingModule` holding a
:class:`SegmentSelector`:

* ``audio_topk``: the preview backbone (``model.preview_backbone``, MobileNetV3-Small) on the
  K per-segment audio-images, the run's saliency scorer (``run_dir/saliency.keras``) on its
  features ``[B, K, Dp]`` -> ``[B, K]`` saliency, then the top k (:func:`maivar_tf.selection.topk_rule`:
  ties broken by time, returned in time order; the rule the NumPy ``topk_indices`` runs too);
* ``uniform`` with k < K: TSN's k evenly spaced segments
  (:func:`maivar_tf.selection.uniform_indices`), no preview.

The k selected frames and audio-images are gathered before any backbone runs, so BNInception
and the fusion's per-segment audio backbone see k segments only, and the fusion head is its
k-segment copy (:func:`maivar_tf.selection.model_for_segments`: the same layers and weights,
the consensus over the selected segments). Every signature then also returns
``selected_segments`` int32 ``[B, k]``. A budget of 0 (all K) with ``uniform`` is no
selection; ``audio_topk`` with k = K selects all K (in time order) after running the preview.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from maivar_tf.config import SELECTION_MODES
from maivar_tf.selection import topk_rule
from maivar_tf.serving.signatures import PREVIEW_INPUT, SELECTION_OUTPUT_KEYS

__all__ = ["PREVIEW_INPUT", "SELECTION_MODES", "SELECTION_OUTPUT_KEYS", "SegmentSelector",
           "describe_selection", "effective_budget", "gather_segments", "uniform_index"]


def uniform_index(num_segments: int, k: int) -> list[int]:
    """TSN's k evenly spaced segments of K (:func:`maivar_tf.selection.uniform_indices`)."""
    from maivar_tf.selection import uniform_indices

    return [int(i) for i in uniform_indices(int(num_segments), int(k))]


def effective_budget(selection: str, budget: int, num_segments: int) -> int | None:
    """k when the module selects segments, else None (``uniform`` with all K)."""
    if selection not in SELECTION_MODES:
        raise ValueError(f"selection {selection!r}; allowed: {', '.join(SELECTION_MODES)}")
    k = int(budget) or int(num_segments)
    if not 0 < k <= int(num_segments):
        raise ValueError(f"budget {budget}; allowed: 0 (all) .. {num_segments}")
    if selection == "uniform" and k == int(num_segments):
        return None
    return k


def describe_selection(selection: str, budget: int, num_segments: int) -> dict:
    """``{"selection", "budget"}`` as served: ``uniform`` and 0 (all K) for no selection,
    else the mode and k (``audio_topk`` with budget 0 is k = K)."""
    k = effective_budget(selection, budget, num_segments)
    return ({"selection": "uniform", "budget": 0} if k is None
            else {"selection": str(selection), "budget": int(k)})


class SegmentSelector(tf.Module):
    """The selection of a served run: mode, k, the preview, the scorer and the k-segment head.

    Args:
        selection: ``uniform`` or ``audio_topk``.
        budget: k (1 .. K).
        num_segments: K.
        fusion: the run's K-segment fusion model (its k-segment copy is built here).
        preview: the preview backbone's
            :class:`~maivar_tf.models.backbones.BackboneFeatures` (``audio_topk``).
        scorer: the saliency scorer (``audio_topk``).
        segment_fusion: the k-segment fusion model to use instead of building it.

    Raises:
        ValueError: an unknown mode, a budget outside 1 .. K, or ``audio_topk`` without a
            preview backbone or a scorer.
    """

    def __init__(self, selection: str, budget: int, num_segments: int, fusion: Any, *,
                 preview: Any = None, scorer: Any = None, segment_fusion: Any = None):
        super().__init__(name="segment_selector")
        k = effective_budget(selection, budget, num_segments) or int(num_segments)
        self.selection, self.k, self.num_segments = str(selection), k, int(num_segments)
        if self.topk and (preview is None or scorer is None):
            raise ValueError("model.selection 'audio_topk' needs the preview backbone and the "
                             "saliency scorer (run_dir/saliency.keras); train the run with "
                             "model.selection=audio_topk")
        self.preview, self.scorer = (preview, scorer) if self.topk else (None, None)
        if self.topk:  # preview_features -> saliency [B, K]: the scorer's own rule
            from maivar_tf.models.saliency import saliency_model

            self.saliency = saliency_model(scorer)
        self.preview_dim = int(preview.dim) if self.topk else 0
        if segment_fusion is None:
            if k == self.num_segments:
                segment_fusion = fusion
            else:
                from maivar_tf.selection import model_for_segments

                segment_fusion = model_for_segments(fusion, k)
        self.fusion = segment_fusion

    @property
    def topk(self) -> bool:
        """Whether the selection is ``audio_topk`` (a preview in the graph)."""
        return self.selection == "audio_topk"

    def preview_features(self, images: tf.Tensor) -> tf.Tensor:
        """uint8 ``[B, K, S, S, 3]`` -> the preview backbone's float32 ``[B, K, Dp]``."""
        s = images.shape[2]
        feats = self.preview(tf.reshape(images, [-1, s, s, 3]))
        return tf.reshape(feats, [-1, self.num_segments, self.preview_dim])

    def scores(self, preview_features: tf.Tensor) -> tf.Tensor:
        """The saliency float32 ``[B, K]`` of the preview features ``[B, K, Dp]``
        (:func:`maivar_tf.models.saliency.saliency_model`: ``clip`` supervision, each
        segment's probability of the clip-level class; ``segments``, p(event))."""
        return tf.cast(self.saliency(preview_features, training=False), tf.float32)

    def select_media(self, audio_segment_images: tf.Tensor) -> tf.Tensor:
        """int32 ``[B, k]`` from the K per-segment audio-images uint8 ``[B, K, S, S, 3]``:
        the preview and the scorer on all K under ``audio_topk``, TSN's k under ``uniform``."""
        batch = tf.shape(audio_segment_images)[0]
        if not self.topk:
            return self.indices(batch)
        return self.indices(batch, self.scores(self.preview_features(audio_segment_images)))

    def indices(self, batch: tf.Tensor, scores: tf.Tensor | None = None) -> tf.Tensor:
        """int32 ``[B, k]``: the top k of ``scores`` (``audio_topk``), else TSN's k."""
        if self.topk:
            return topk_rule(scores, self.k)
        index = tf.constant(uniform_index(self.num_segments, self.k), tf.int32)
        return tf.tile(index[None], [batch, 1])


def gather_segments(x: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """``x`` ``[B, K, ...]`` -> ``[B, k, ...]`` at ``index`` ``[B, k]`` (per row)."""
    return tf.gather(x, index, axis=1, batch_dims=1)

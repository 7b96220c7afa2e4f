"""What ``maivar predict`` reports beyond the classes: action spans and selected segments.

* :func:`segment_report`: a localiser's per-segment outputs -> the action's time spans
  (``--segments``, :func:`maivar_tf.serving.segments.event_spans`);
* :func:`selected_report`: a selecting model's ``selected_segments`` -> their indices and
  times (``model.selection``, :mod:`maivar_tf.serving.selector`);
* :func:`selection_overrides`: the ``--set model.selection=... model.budget=...`` items that
  override a run's selection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["SELECTION_KEYS", "clip_duration", "segment_report", "selected_report",
           "selection_overrides"]


#: The ``--set`` keys that override a run's segment selection in ``maivar predict``.
SELECTION_KEYS = ("model.selection", "model.budget")


def selection_overrides(cfg, overrides: Sequence[str]) -> dict[str, Any]:
    """The ``model.selection`` / ``model.budget`` that ``--set`` items name, as ``cfg`` holds
    them (validated): ``{"selection": ..., "budget": ...}`` (only the keys given)."""
    keys = {str(o).split("=", 1)[0].strip() for o in overrides}
    return {k.split(".")[1]: getattr(cfg.model, k.split(".")[1]) for k in SELECTION_KEYS
            if k in keys}


def clip_duration(path: str) -> float | None:
    """The file's duration in seconds (the container's), None when it does not say."""
    from maivar_tf.data.container import open_media

    try:
        with open_media(path) as container:
            return container.duration / 1e6 if container.duration else None
    except Exception:  # the spans are then bounded by the segments only
        return None


def segment_report(out: Mapping[str, np.ndarray], clip,
                   class_names: Sequence[str]) -> dict[str, Any]:
    """A prediction's ``segments`` (see :class:`maivar_tf.predict.Prediction`) from the signature outputs."""
    from maivar_tf.serving.segments import event_spans

    scores = np.asarray(out["segment_scores"][0])
    times = clip.segment_times
    if times is None:
        raise ValueError("the record holds no segment times (segment/timestamps); rebuild "
                         "it with this version")
    times = np.asarray(times, np.float64)
    spans = event_spans(scores, times, class_names, clip_end_s=clip_duration(clip.file))
    return {"spans": spans, "segment_times_s": times.tolist(),
            "segment_event": np.asarray(out["segment_event"][0]).tolist()}


def selected_report(out: Mapping[str, np.ndarray], clip
                    ) -> tuple[list[int] | None, list[float] | None]:
    """``(selected segment indices, their times in s)`` of one clip's outputs (``(None,
    None)`` for a model that selects none; times None when the record has none)."""
    if "selected_segments" not in out:
        return None, None
    index = [int(i) for i in np.asarray(out["selected_segments"][0])]
    if clip.segment_times is None:
        return index, None
    return index, [float(np.asarray(clip.segment_times)[i]) for i in index]

"""The output files of an extraction run (:mod:`maivar_tf.features.extract`): the checks
before a feature shard is written, the ids an input shard holds, finished shards' sizes and
the temporary files an interrupted run left.

Every output shard is written under ``.<name>.tmp-<pid>`` (:data:`TMP_MARK`) and renamed when
complete; a re-run removes the leftovers (:func:`remove_stale_temps`).
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from maivar_tf.data import schema
from maivar_tf.features.shards import FeatureError

logger = logging.getLogger(__name__)

#: What marks a temporary output file: ``.<final name>.tmp-<pid>``.
TMP_MARK = ".tmp-"


def check_finite_features(shard: Path, name: str, ids: Sequence[bytes], feats: np.ndarray
                          ) -> None:
    """Raises FeatureError naming the examples whose features hold a NaN or an Inf.

    Args:
        shard: the input shard (for the message).
        name: the feature shard being written (which backbone, which representation).
        ids: the batch's example ids.
        feats: the backbone's features of the batch, one row per id.
    """
    bad = ~np.isfinite(feats.reshape(len(feats), -1)).all(axis=1)
    if bad.any():
        named = [i.decode() if isinstance(i, bytes) else str(i) for i in np.asarray(ids)[bad]]
        raise FeatureError(
            f"{shard}: non-finite features (NaN or Inf) for {len(named)} example(s) in {name}, "
            f"example id {', '.join(named[:5])}{' ...' if len(named) > 5 else ''}; "
            "refusing to write its features (check the backbone weights and the inputs)")


def shard_ids(shard: Path) -> list[bytes]:
    """The example ids of one input shard, in file order (context-only parse, no decoding)."""
    import tensorflow as tf

    spec = {schema.EXAMPLE_ID: tf.io.FixedLenFeature([], tf.string)}

    def parse(s):
        ctx, _ = tf.io.parse_single_sequence_example(s, context_features=spec)
        return ctx[schema.EXAMPLE_ID]

    return list(tf.data.TFRecordDataset(str(shard)).map(parse).as_numpy_iterator())


def count_records(path: Path) -> int:
    import tensorflow as tf

    return int(tf.data.TFRecordDataset(str(path)).reduce(np.int64(0), lambda n, _: n + 1))


def remove_stale_temps(out_dir: Path, names: Sequence[str]) -> None:
    for name in names:
        for leftover in glob.glob(str(out_dir / f".{name}{TMP_MARK}*")):
            logger.info("removing leftover temporary file %s", leftover)
            os.remove(leftover)

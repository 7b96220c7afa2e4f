"""Publishing the TFRecord job's output: staging, atomic moves, counts and ``dataset_info.json``.

The job writes every file into a staging folder inside ``output_dir``
(:func:`staging_dir`); only after the pipeline succeeded does :func:`publish_job` move the
shards and dead letters into place and write ``dataset_info.json`` last, so no partial shard
is ever visible and readers never see new shards described by an old ``dataset_info.json``.
Counts per (split, class) come from the job's Beam metrics, or from the written shards on a
runner that reports none. Every file operation goes through Beam's ``FileSystems``, so
``output_dir`` may be local or any filesystem Beam supports (``gs://...``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter

from beam.transforms import COUNTS_NAMESPACE, FAILED_GLOB, LOGGER, SHARD_GLOB
from maivar_tf.artifacts import DATASET_INFO, DatasetInfo
from maivar_tf.config import ExperimentConfig
from maivar_tf.data.schema import SCHEMA_VERSION

# ----------------------------------------------------------------------------- files


def join(*parts: str) -> str:
    """``FileSystems.join``: a path below a local or remote folder."""
    return FileSystems.join(*parts)


def mkdirs(path: str) -> None:
    """Creates ``path`` and its parents; a folder that exists already is fine."""
    try:
        FileSystems.mkdirs(path)
    except OSError:  # exists already
        pass


def match(pattern: str) -> list[str]:
    """The paths matching the glob ``pattern``, sorted."""
    result = FileSystems.match([pattern])[0]
    return sorted(m.path for m in result.metadata_list)


def read_lines(paths: Iterable[str]) -> list[str]:
    """The non-blank lines of every file in ``paths``, in order."""
    lines = []
    for path in paths:
        with FileSystems.open(path) as f:
            lines += [ln for ln in f.read().decode().splitlines() if ln.strip()]
    return lines


def write_text_atomic(path: str, text: str) -> None:
    """Writes ``path`` atomically where the filesystem allows (temp file + rename)."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with FileSystems.create(tmp) as f:
        f.write(text.encode())
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


@contextlib.contextmanager
def staging_dir(output_dir: str) -> Iterator[str]:
    """A fresh ``<output_dir>/.staging-<random>`` folder, deleted with its content on exit.

    ``output_dir`` is created if needed; the staging folder is removed whether the body
    succeeds, fails or returns early.
    """
    mkdirs(output_dir)
    staging = join(output_dir, f".staging-{uuid.uuid4().hex[:12]}")
    mkdirs(staging)
    try:
        yield staging
    finally:
        if FileSystems.exists(staging):
            FileSystems.delete([staging])


def publish(staging_dir: str, output_dir: str, include_shards: bool = True) -> dict[str, list[str]]:
    """Moves finished files from ``staging_dir`` into ``output_dir``, replacing old ones.

    Every old shard (of any split), dead-letter file and ``dataset_info.json`` is removed
    first, so the folder holds exactly this run's output (the caller then writes the new
    ``dataset_info.json``; readers never see new shards described by an old one). With
    ``include_shards=False`` only the dead letters are replaced and the old dataset stays.
    Files that are not the job's (other names) are never touched.

    Args:
        staging_dir: the finished staging folder.
        output_dir: the dataset folder.
        include_shards: ``False`` publishes only the dead letters (nothing succeeded).

    Returns:
        ``{"shards": [...], "failed": [...]}`` final paths.
    """
    new_shards = match(join(staging_dir, SHARD_GLOB)) if include_shards else []
    new_failed = match(join(staging_dir, FAILED_GLOB))
    stale = match(join(output_dir, FAILED_GLOB))
    if include_shards:
        stale += match(join(output_dir, SHARD_GLOB)) + match(join(output_dir, DATASET_INFO))
    if stale:
        FileSystems.delete(stale)
    moved = {"shards": [], "failed": []}
    for kind, paths in (("shards", new_shards), ("failed", new_failed)):
        dst = [join(output_dir, p.rsplit("/", 1)[-1]) for p in paths]
        if paths:
            FileSystems.rename(paths, dst)
        moved[kind] = dst
    return moved


def file_digest(path: str) -> str:
    """The SHA-256 hex digest of a file's bytes (read through ``FileSystems``, 1 MiB at a time)."""
    h = hashlib.sha256()
    with FileSystems.open(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- counts


def counts_from_shards(paths: Sequence[str]) -> dict[tuple[str, int], int]:
    """``{(split, label_index): count}`` by parsing written shards (runners without metrics).

    Args:
        paths: shard files.
    """
    import tensorflow as tf

    from maivar_tf.data import schema

    counts: dict[tuple[str, int], int] = {}
    for path in paths:
        for raw in tf.data.TFRecordDataset(path):
            ex = tf.train.SequenceExample.FromString(raw.numpy())
            feat = ex.context.feature
            key = (feat[schema.SPLIT].bytes_list.value[0].decode(),
                   int(feat[schema.LABEL_INDEX].int64_list.value[0]))
            counts[key] = counts.get(key, 0) + 1
    return counts


def success_counts(result) -> dict[tuple[str, int], int] | None:
    """``{(split, label_index): count}`` from the job's metrics (``None``: not reported).

    Committed values where the runner has them, else attempted ones.

    Args:
        result: the finished ``PipelineResult``.
    """
    try:
        counters = result.metrics().query(
            MetricsFilter().with_namespace(COUNTS_NAMESPACE))["counters"]
    except Exception:  # noqa: BLE001 - a runner without metrics support
        return None
    counts: dict[tuple[str, int], int] = {}
    for c in counters:
        split, label = c.key.metric.name.rsplit("/", 1)
        value = c.committed if c.committed is not None else c.attempted
        counts[(split, int(label))] = counts.get((split, int(label)), 0) + int(value or 0)
    return counts


def summarize(success: Mapping[tuple[str, int], int], failed_lines: Sequence[str],
              splits: Iterable[str], class_names: Sequence[str]) -> dict[str, Any]:
    """Counts per split and class, and failures by reason.

    Args:
        success: ``{(split, label_index): count}`` (:func:`success_counts`).
        failed_lines: the dead-letter JSON lines.
        splits: every split of the input (each gets an entry, maybe of zero).
        class_names: the dataset's classes.

    Returns:
        ``{"counts": {split: {"total", "per_class": {class: n}}},
        "failed": {"total", "by_reason": {reason: n}}}``.
    """
    counts: dict[str, dict[str, Any]] = {
        s: {"total": 0, "per_class": {c: 0 for c in class_names}} for s in sorted(set(splits))}
    for (split_name, label_index), n in sorted(success.items()):
        split = counts.setdefault(split_name, {"total": 0, "per_class": {}})
        name = class_names[label_index]
        split["per_class"][name] = split["per_class"].get(name, 0) + n
        split["total"] += n
    by_reason = Counter(json.loads(line)["reason"] for line in failed_lines)
    return {"counts": counts,
            "failed": {"total": sum(by_reason.values()), "by_reason": dict(sorted(
                by_reason.items()))}}


def num_written(summary: Mapping[str, Any]) -> int:
    """Videos written over every split of a :func:`summarize` result."""
    return sum(c["total"] for c in summary["counts"].values())


# ----------------------------------------------------------------------------- dataset_info


def make_dataset_info(cfg: ExperimentConfig, class_names: Sequence[str],
                      summary: Mapping[str, Any], shards: Sequence[str],
                      failed_files: Sequence[str], num_records: int) -> DatasetInfo:
    """The ``dataset_info.json`` record (the input pipeline checks ``schema_version``).

    Args:
        cfg: the experiment config the shards were built with (stored whole).
        class_names: the dataset's classes (label index order).
        summary: :func:`summarize`'s result.
        shards: the published shard paths (their file names are stored, by split, with the
            SHA-256 digest of each).
        failed_files: the published dead-letter paths.
        num_records: annotation records the job read.
    """
    shards_by_split: dict[str, list[str]] = {}
    for path in shards:
        name = path.rsplit("/", 1)[-1]
        shards_by_split.setdefault(name.rsplit("-", 3)[0], []).append(name)
    failed = dict(summary["failed"])
    failed["files"] = [p.rsplit("/", 1)[-1] for p in failed_files]
    return DatasetInfo(
        schema_version=SCHEMA_VERSION,
        config=cfg.to_dict(),
        class_names=tuple(class_names),
        num_records=num_records,
        counts=summary["counts"],
        failed=failed,
        shards={k: sorted(v) for k, v in sorted(shards_by_split.items())},
        digests={p.rsplit("/", 1)[-1]: file_digest(p) for p in sorted(shards)},
    )


def write_dataset_info(info: DatasetInfo, output_dir: str) -> str:
    """Writes ``info`` as ``<output_dir>/dataset_info.json`` atomically; returns the path.

    Through ``FileSystems``, so ``output_dir`` may be remote; the JSON keys keep the record's
    field order.
    """
    path = join(output_dir, DATASET_INFO)
    write_text_atomic(path, json.dumps(info.to_json(), indent=2, sort_keys=False) + "\n")
    return path


@dataclasses.dataclass(frozen=True)
class Published:
    """What :func:`publish_job` put in place.

    Attributes:
        summary: :func:`summarize`'s result.
        moved: :func:`publish`'s result (final shard and dead-letter paths).
        info: the ``dataset_info.json`` record written, or ``None`` when no video succeeded
            (then the old shards and ``dataset_info.json`` stay).
        info_path: where ``dataset_info.json`` was written (``None`` with ``info``).
    """

    summary: dict[str, Any]
    moved: dict[str, list[str]]
    info: DatasetInfo | None
    info_path: str | None

    @property
    def num_ok(self) -> int:
        """Videos written, over every split."""
        return num_written(self.summary)


def publish_job(result, staging: str, output_dir: str, *, exp: ExperimentConfig,
                class_names: Sequence[str], splits: Iterable[str],
                num_records: int) -> Published:
    """Counts a finished job, publishes its staged files and writes ``dataset_info.json``.

    Counts come from the job's metrics; when the runner reported none although not every
    video failed, they are read from the staged shards instead. Shards are published only
    when at least one video succeeded; the dead letters always are.

    Args:
        result: the finished ``PipelineResult``.
        staging: the staging folder the job wrote into.
        output_dir: the dataset folder.
        exp: the experiment config (stored in ``dataset_info.json``).
        class_names: the dataset's classes.
        splits: every split of the input.
        num_records: annotation records the job read.
    """
    failed_lines = read_lines(match(join(staging, FAILED_GLOB)))
    success = success_counts(result)
    if not success and len(failed_lines) < num_records:
        LOGGER.warning("the runner reported no success counts; reading them from the shards")
        success = counts_from_shards(match(join(staging, SHARD_GLOB)))
    summary = summarize(success or {}, failed_lines, splits, class_names)
    ok = num_written(summary)
    moved = publish(staging, output_dir, include_shards=ok > 0)
    info, info_path = None, None
    if ok:
        info = make_dataset_info(exp, class_names, summary, moved["shards"], moved["failed"],
                                 num_records)
        info_path = write_dataset_info(info, output_dir)
    return Published(summary=summary, moved=moved, info=info, info_path=info_path)

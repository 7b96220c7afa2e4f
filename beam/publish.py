"""Publishing the TFRecord job's output: staging, atomic moves, counts and ``dataset_info.json``.

The job writes every file into a staging folder *beside* ``output_dir``
(``<parent>/.<name>.staging/<run>``, :func:`staging_dir`), so a job killed at any point
leaves nothing of its own inside ``output_dir``. Only after the pipeline succeeded does
:func:`publish_job` count the staged shards, hash them and stage ``dataset_info.json``; then
:func:`publish` removes the old ``dataset_info.json``, replaces the old shards and dead
letters and moves the new ``dataset_info.json`` in last. Readers never see new shards
described by an old ``dataset_info.json``, and a job killed during those renames leaves a
folder without one, which every reader refuses and the next run replaces. The next run also
removes the staging folders of killed runs (:func:`remove_leftover_staging`). Counts per
(split, class) come from the job's Beam metrics, or from the staged shards on a runner that
reports none; so are the clips kept with silent audio (``counts[split]["audio_missing"]``).
Every file operation goes through Beam's ``FileSystems``, so ``output_dir`` may
be local or any filesystem Beam supports (``gs://...``). One job at a time per ``output_dir``.
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

from beam.transforms import (
    AUDIO_MISSING_NAMESPACE,
    COUNTS_NAMESPACE,
    FAILED_GLOB,
    LOGGER,
    SHARD_GLOB,
)
from maivar_tf.artifacts import DATASET_INFO, FEATURE_INFO, DatasetInfo
from maivar_tf.config import ExperimentConfig
from maivar_tf.data.schema import SCHEMA_VERSION
from maivar_tf.utils import owner_is_gone, owner_tag

#: The file naming a staging folder's writer (:func:`maivar_tf.utils.owner_tag`).
OWNER_FILE = "OWNER"

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


def staging_root(output_dir: str) -> str:
    """``<parent>/.<name>.staging``: where the runs writing ``output_dir`` stage their files.

    Beside ``output_dir``, never inside it; a filesystem or bucket root (no parent) stages in
    ``<output_dir>/.staging`` instead.
    """
    parent, name = FileSystems.split(output_dir.rstrip("/") or output_dir)
    if not name:
        return join(output_dir, ".staging")
    return join(parent, f".{name}.staging")


def _delete_if_exists(path: str) -> None:
    if FileSystems.exists(path):
        FileSystems.delete([path])


def remove_leftover_staging(output_dir: str) -> list[str]:
    """Deletes the staging folders of killed runs of ``output_dir``; returns them.

    A folder goes when the process its ``OWNER`` file names has ended on this host
    (:func:`maivar_tf.utils.owner_is_gone`); a running job's folder stays. Staging folders
    that earlier versions made inside ``output_dir`` (``.staging-*``) go too.
    """
    removed = []
    for owner in match(join(staging_root(output_dir), "*", OWNER_FILE)):
        with FileSystems.open(owner) as f:
            tag = f.read().decode(errors="replace")
        if owner_is_gone(tag):
            removed.append(owner.rsplit("/", 1)[0])
    prefix = join(output_dir, ".staging-")  # an earlier version's staging, always a killed run's
    removed += sorted({prefix + p[len(prefix):].split("/", 1)[0]
                       for p in match(prefix + "*/**") if p.startswith(prefix)})
    for folder in removed:
        LOGGER.info("removing the staging folder of a killed run: %s", folder)
        _delete_if_exists(folder)
    return removed


@contextlib.contextmanager
def staging_dir(output_dir: str) -> Iterator[str]:
    """A fresh ``<parent>/.<name>.staging/<random>`` folder, deleted with its content on exit.

    ``output_dir`` is created if needed and the staging folders of killed runs are removed
    first (:func:`remove_leftover_staging`). The folder holds an ``OWNER`` file naming this
    process and is removed whether the body succeeds, fails or returns early; so is the
    staging root when no other run uses it.
    """
    mkdirs(output_dir)
    remove_leftover_staging(output_dir)
    root = staging_root(output_dir)
    staging = join(root, uuid.uuid4().hex[:12])
    mkdirs(staging)
    with FileSystems.create(join(staging, OWNER_FILE)) as f:
        f.write(owner_tag().encode())
    try:
        yield staging
    finally:
        _delete_if_exists(staging)
        if not match(join(root, "**")):
            _delete_if_exists(root)


def _move_into(paths: Sequence[str], output_dir: str) -> list[str]:
    dst = [join(output_dir, p.rsplit("/", 1)[-1]) for p in paths]
    if paths:
        FileSystems.rename(list(paths), dst)
    return dst


def publish(staging_dir: str, output_dir: str, include_shards: bool = True) -> dict[str, list[str]]:
    """Moves finished files from ``staging_dir`` into ``output_dir``, replacing old ones.

    The old ``dataset_info.json`` is removed first, then every old shard (of any split) and
    dead-letter file; the new shards and dead letters move in, and a ``dataset_info.json``
    staged beside them moves in last. So the folder holds exactly this run's output, readers
    never see new shards described by an old ``dataset_info.json``, and an interrupted publish
    leaves no ``dataset_info.json`` (readers refuse the folder). With
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
    staged_info = match(join(staging_dir, DATASET_INFO)) if include_shards else []
    stale = match(join(output_dir, FAILED_GLOB))
    if include_shards:
        old_info = match(join(output_dir, DATASET_INFO))
        if old_info:  # first: it must never describe the new shards
            FileSystems.delete(old_info)
        stale += match(join(output_dir, SHARD_GLOB))
    if stale:
        FileSystems.delete(stale)
    moved = {"shards": _move_into(new_shards, output_dir),
             "failed": _move_into(new_failed, output_dir)}
    _move_into(staged_info, output_dir)  # last: the commit
    return moved


#: Globs of the feature shards ``--with_features`` writes (``maivar_tf.features.shards``).
FEATURE_GLOBS = ("video-*.tfrecord", "audio-*.tfrecord")


def retract_feature_info(features_dir: str) -> None:
    """Removes ``features_dir``'s ``feature_info.json`` (called before the TFRecords change), so
    readers refuse the old features until :func:`publish_features` moves the new record in."""
    _delete_if_exists(join(features_dir, FEATURE_INFO))


def publish_features(staging_dir: str, features_dir: str) -> list[str]:
    """Moves the staged feature shards and ``feature_info.json`` into ``features_dir``.

    As :func:`publish` does for the TFRecords: the old ``feature_info.json`` goes first, then
    every old feature shard (they describe other TFRecords), the new shards move in and the
    staged ``feature_info.json`` last; other files (``backbones/``) stay.

    Returns:
        The final shard paths.
    """
    new = sorted(p for g in FEATURE_GLOBS for p in match(join(staging_dir, g)))
    retract_feature_info(features_dir)
    stale = [p for g in FEATURE_GLOBS for p in match(join(features_dir, g))]
    if stale:
        FileSystems.delete(stale)
    moved = _move_into(new, features_dir)
    _move_into(match(join(staging_dir, FEATURE_INFO)), features_dir)  # last: the commit
    return moved


def file_digest(path: str) -> str:
    """The SHA-256 hex digest of a file's bytes (read through ``FileSystems``, 1 MiB at a time)."""
    h = hashlib.sha256()
    with FileSystems.open(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- counts


def counts_from_shards(paths: Sequence[str]
                       ) -> tuple[dict[tuple[str, int], int], dict[str, int]]:
    """The counts of the job's metrics, by parsing written shards (runners without metrics).

    Args:
        paths: shard files.

    Returns:
        ``({(split, label_index): count}, {split: examples with audio/missing set})``.
    """
    import tensorflow as tf

    from maivar_tf.data import schema

    counts: dict[tuple[str, int], int] = {}
    missing: dict[str, int] = {}
    for path in paths:
        for raw in tf.data.TFRecordDataset(path):
            feat = tf.train.SequenceExample.FromString(raw.numpy()).context.feature
            split = feat[schema.SPLIT].bytes_list.value[0].decode()
            key = (split, int(feat[schema.LABEL_INDEX].int64_list.value[0]))
            counts[key] = counts.get(key, 0) + 1
            if schema.AUDIO_MISSING in feat and feat[schema.AUDIO_MISSING].int64_list.value[0]:
                missing[split] = missing.get(split, 0) + 1
    return counts, missing


def _counters(result, namespace: str):
    try:
        return result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]
    except Exception:  # noqa: BLE001 - a runner without metrics support
        return None


def _value(counter) -> int:
    value = counter.committed if counter.committed is not None else counter.attempted
    return int(value or 0)


def success_counts(result) -> dict[tuple[str, int], int] | None:
    """``{(split, label_index): count}`` from the job's metrics (``None``: not reported).

    Committed values where the runner has them, else attempted ones.

    Args:
        result: the finished ``PipelineResult``.
    """
    counters = _counters(result, COUNTS_NAMESPACE)
    if counters is None:
        return None
    counts: dict[tuple[str, int], int] = {}
    for c in counters:
        split, label = c.key.metric.name.rsplit("/", 1)
        counts[(split, int(label))] = counts.get((split, int(label)), 0) + _value(c)
    return counts


def audio_missing_counts(result) -> dict[str, int]:
    """``{split: clips kept with silent audio}`` from the job's metrics (empty: none)."""
    counts: dict[str, int] = {}
    for c in _counters(result, AUDIO_MISSING_NAMESPACE) or ():
        counts[c.key.metric.name] = counts.get(c.key.metric.name, 0) + _value(c)
    return counts


def summarize(success: Mapping[tuple[str, int], int], failed_lines: Sequence[str],
              splits: Iterable[str], class_names: Sequence[str],
              audio_missing: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Counts per split and class, and failures by reason.

    Args:
        success: ``{(split, label_index): count}`` (:func:`success_counts`).
        failed_lines: the dead-letter JSON lines.
        splits: every split of the input (each gets an entry, maybe of zero).
        class_names: the dataset's classes.
        audio_missing: ``{split: n}`` clips kept with silent audio (:func:`audio_missing_counts`);
            given, every split gets an ``audio_missing`` count (maybe of zero).

    Returns:
        ``{"counts": {split: {"total", "per_class": {class: n}[, "audio_missing": n]}},
        "failed": {"total", "by_reason": {reason: n}}}``.
    """
    counts: dict[str, dict[str, Any]] = {
        s: {"total": 0, "per_class": {c: 0 for c in class_names}} for s in sorted(set(splits))}
    for (split_name, label_index), n in sorted(success.items()):
        split = counts.setdefault(split_name, {"total": 0, "per_class": {}})
        name = class_names[label_index]
        split["per_class"][name] = split["per_class"].get(name, 0) + n
        split["total"] += n
    if audio_missing is not None:
        for name, split in counts.items():
            split["audio_missing"] = int(audio_missing.get(name, 0))
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
        shards: the shard paths, staged or published (their file names are stored, by
            split, with the SHA-256 digest of each).
        failed_files: the dead-letter paths (their file names are stored).
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
                num_records: int, before_publish=None) -> Published:
    """Counts a finished job, stages ``dataset_info.json`` and publishes the staged files.

    Counts (and the clips kept with silent audio) come from the job's metrics; when the
    runner reported none although not every video failed, they are read from the staged
    shards instead. ``dataset_info.json`` (with
    every shard's digest) is written into the staging folder before anything in
    ``output_dir`` changes, and moved in last by :func:`publish`. Shards are published only
    when at least one video succeeded; the dead letters always are.

    Args:
        result: the finished ``PipelineResult``.
        staging: the staging folder the job wrote into.
        output_dir: the dataset folder.
        exp: the experiment config (stored in ``dataset_info.json``).
        class_names: the dataset's classes.
        splits: every split of the input.
        num_records: annotation records the job read.
        before_publish: called as ``before_publish(info, summary)`` once ``dataset_info.json``
            is staged and before anything in ``output_dir`` changes (``--with_features``
            stages ``feature_info.json`` there); not called when no video succeeded.
    """
    failed_lines = read_lines(match(join(staging, FAILED_GLOB)))
    success = success_counts(result)
    missing = audio_missing_counts(result)
    if not success and len(failed_lines) < num_records:
        LOGGER.warning("the runner reported no success counts; reading them from the shards")
        success, missing = counts_from_shards(match(join(staging, SHARD_GLOB)))
    summary = summarize(success or {}, failed_lines, splits, class_names, missing)
    ok = num_written(summary)
    info, info_path = None, None
    if ok:
        info = make_dataset_info(exp, class_names, summary, match(join(staging, SHARD_GLOB)),
                                 match(join(staging, FAILED_GLOB)), num_records)
        write_dataset_info(info, staging)
        if before_publish is not None:
            before_publish(info, summary)
        info_path = join(output_dir, DATASET_INFO)
    moved = publish(staging, output_dir, include_shards=ok > 0)
    return Published(summary=summary, moved=moved, info=info, info_path=info_path)

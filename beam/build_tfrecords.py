"""The Apache Beam job that turns annotated videos into TFRecord shards.

One ``tf.train.SequenceExample`` per video (schema in :mod:`maivar_tf.data.schema`): K TSN
segment frames as JPEG and the configured audio-images as PNG (the paper's Sec. 3.2). The
pipeline reads as a sentence::

    Create(annotation records) -> Reshuffle -> ProcessVideoDoFn
        -> per split: WriteToTFRecord  <output_dir>/<split>-SSSSS-of-NNNNN.tfrecord
        -> dead letters: WriteToText    <output_dir>/failed-SSSSS-of-NNNNN.jsonl
    Beam metrics count successes per (split, class) -> dataset_info.json

Everything is written into a staging folder inside ``output_dir`` and moved into place only
after the pipeline succeeded, so no partial shard is ever visible; ``dataset_info.json`` is
written last.

Run it with::

    python -m beam.build_tfrecords --runner=DirectRunner            # embedded data -> ./data/
    python -m beam.build_tfrecords --config configs/ucf51.yaml \\
        --direct_running_mode=multi_processing --direct_num_workers=2

Our flags choose the data; every other flag goes to Beam's ``PipelineOptions`` unchanged
(``--runner=DataflowRunner --project=... --temp_location=gs://...``, ``FlinkRunner``...).

``DirectRunner`` here means Beam's Python runner (FnApiRunner): since Beam 2.68,
``SwitchingDirectRunner`` first hands batch pipelines to the Prism runner, which downloads a Go
binary from GitHub. :class:`PrismFreeDirectRunner` makes the same choice minus Prism, and is
used whenever ``--runner`` is ``DirectRunner`` (or not given), so the job never downloads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import apache_beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import (
    PipelineOptions,
    StandardOptions,
)
from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner
from apache_beam.runners.runner import PipelineState

from maivar_tf.config import ConfigError, DataConfig, ExperimentConfig, load_config
from maivar_tf.data.annotations import VideoRecord, read_annotations
from maivar_tf.data.clips import clip_example_from_record, resolve_video_path
from maivar_tf.data.errors import MediaError
from maivar_tf.data.schema import SCHEMA_VERSION, to_sequence_example

LOGGER = logging.getLogger("beam.build_tfrecords")

#: The config used when ``--config`` is not given and this file exists (relative to the CWD).
DEFAULT_CONFIG = "configs/synthetic.yaml"
#: Tag of the dead-letter output of :class:`ProcessVideoDoFn`.
FAILED_TAG = "failed"
#: Beam shard name template: ``train-00000-of-00002.tfrecord``.
SHARD_TEMPLATE = "-SSSSS-of-NNNNN"
#: Glob of every shard file this job writes (any split).
SHARD_GLOB = "*-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9].tfrecord"
FAILED_PREFIX = "failed"
DATASET_INFO = "dataset_info.json"
METRICS_NAMESPACE = "maivar_tf"
#: Namespace of the per-(split, class) success counters, named ``<split>/<label_index>``.
COUNTS_NAMESPACE = "maivar_tf.counts"
_DIRECT_RUNNER_NAMES = {"direct", "directrunner", "switchingdirectrunner"}


# ----------------------------------------------------------------------------- runner


class PrismFreeDirectRunner(SwitchingDirectRunner):
    """Beam's DirectRunner without the Prism hand-off (so nothing is ever downloaded).

    ``SwitchingDirectRunner.run_pipeline`` (Beam >= 2.68) first tries ``PrismRunner``, whose
    job server fetches a Go binary from GitHub releases, and only then falls back to the
    Python runners. This runner makes the rest of that choice unchanged: the FnApiRunner for
    batch pipelines (which honours ``--direct_num_workers`` and ``--direct_running_mode``),
    the BundleBasedDirectRunner for streaming ones or ``TestStream``.
    """

    def run_pipeline(self, pipeline, options):
        from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

        if _needs_bundle_based_runner(pipeline, options):
            return BundleBasedDirectRunner().run_pipeline(pipeline, options)

        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.fn_api_runner import fn_runner
        from apache_beam.runners.portability.portable_runner import JobServiceHandle

        # As SwitchingDirectRunner does: workers see the pipeline options.
        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        provision_info = fn_runner.ExtendedProvisionInfo(
            beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
        return fn_runner.FnApiRunner(provision_info=provision_info).run_pipeline(
            pipeline, options)


def _needs_bundle_based_runner(pipeline, options) -> bool:
    """Streaming pipelines and TestStream need the BundleBasedDirectRunner."""
    if options.view_as(StandardOptions).streaming:
        return True
    from apache_beam.pipeline import PipelineVisitor
    from apache_beam.testing.test_stream import TestStream

    class _Visitor(PipelineVisitor):
        found = False

        def visit_transform(self, applied_ptransform):
            if isinstance(applied_ptransform.transform, TestStream):
                self.found = True

    visitor = _Visitor()
    pipeline.visit(visitor)
    return visitor.found


def local_runner_if_direct(options: PipelineOptions):
    """The runner to build the pipeline with: ours for DirectRunner, else Beam's by name.

    Args:
        options: the pipeline options; ``--runner`` unset or ``DirectRunner`` selects
            :class:`PrismFreeDirectRunner`.

    Returns:
        A runner instance, or ``None`` to let Beam create the named runner.
    """
    name = options.view_as(StandardOptions).runner
    if name is None or (isinstance(name, str) and name.lower() in _DIRECT_RUNNER_NAMES):
        return PrismFreeDirectRunner()
    return None


# ----------------------------------------------------------------------------- transforms


def _limit_tf_threads(threads: int) -> int:
    """Sets TF's intra-op threads in this worker process; returns the count in force.

    A no-op once TF has run an op in this process (then TF keeps its pools). The count
    matters beyond speed: TF's float reductions sum in a thread-dependent order, so
    audio-images rendered with different counts can differ by one level in a few pixels.
    The job therefore uses the same count (1) in every runner mode.
    """
    import tensorflow as tf

    if threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(2, threads))
        except RuntimeError:  # the TF runtime is already initialised in this process
            pass
    return tf.config.threading.get_intra_op_parallelism_threads()


def _worker_name() -> str:
    """``pid/thread`` of this DoFn instance, for progress lines."""
    return f"{os.getpid()}/{threading.get_native_id()}"


def warm_up_renderers(cfg: DataConfig) -> None:
    """Traces the one audio-image function :meth:`ProcessVideoDoFn.process` calls.

    ``audio_image.warm_up`` also traces one function per single representation (which this
    job never calls); each trace costs about a second per worker process, so only the
    combined function the job renders with is traced here.
    """
    import numpy as np

    from maivar_tf.data.audio_image import render_audio_images

    render_audio_images(np.zeros(2 * cfg.audio.n_fft, np.float32), cfg.representations,
                        cfg.audio)


def record_to_element(record) -> dict[str, Any]:
    """A :class:`VideoRecord` as a plain dict (what flows through ``Create``)."""
    return dataclasses.asdict(record)


class ProcessVideoDoFn(apache_beam.DoFn):
    """Decodes one video into a serialized SequenceExample, or a dead letter.

    Each split's serialized examples go to the tagged output named after the split, and every
    rejected video to :data:`FAILED_TAG` as ``{"input", "split", "label", "reason",
    "message", "example_id"}``. Beam metrics count successes (``videos_ok``) and failures per
    reason (``failed_<reason>``) in the ``maivar_tf`` namespace, and successes per split and
    class (``<split>/<label_index>``) in :data:`COUNTS_NAMESPACE`; ``dataset_info.json`` is
    made from those (a counting branch of transforms would cost more than the metrics).

    Args:
        cfg: the data section (K, frame size, JPEG quality, representations, audio config).
        mode: TSN sampling mode, ``center`` (deterministic) or ``random``.
        tf_threads: TF intra-op threads per worker process (0 leaves TF's default); keep it
            equal across runs for bit-identical audio-images.
        log_every: log a progress line every this many videos per worker (0: never).
    """

    def __init__(self, cfg: DataConfig, mode: str = "center", tf_threads: int = 1,
                 log_every: int = 25):
        super().__init__()
        self._cfg = cfg
        self._mode = mode
        self._tf_threads = tf_threads
        self._log_every = log_every

    def setup(self) -> None:
        """Once per worker: small TF thread pools, warmed-up audio-image renderers."""
        t0 = time.monotonic()
        threads = _limit_tf_threads(self._tf_threads)
        warm_up_renderers(self._cfg)
        LOGGER.info("worker %s: set up in %.1fs (TF intra-op threads: %s)", _worker_name(),
                    time.monotonic() - t0, threads or "all cores")
        self._ok = Metrics.counter(METRICS_NAMESPACE, "videos_ok")
        self._failed = {}
        self._per_class = {}
        self._processed = 0
        self._t0 = time.monotonic()

    def _count_failure(self, reason: str) -> None:
        if reason not in self._failed:
            self._failed[reason] = Metrics.counter(METRICS_NAMESPACE, f"failed_{reason}")
        self._failed[reason].inc()

    def _count_success(self, split: str, label_index: int) -> None:
        key = f"{split}/{label_index}"
        if key not in self._per_class:
            self._per_class[key] = Metrics.counter(COUNTS_NAMESPACE, key)
        self._per_class[key].inc()
        self._ok.inc()

    def process(self, element: Mapping[str, Any]) -> Iterator[Any]:
        record = VideoRecord(**element)
        try:
            clip = clip_example_from_record(record, self._cfg, mode=self._mode)
            serialized = to_sequence_example(clip).SerializeToString()
        except Exception as e:  # noqa: BLE001 - every failure becomes a dead letter
            if isinstance(e, MediaError):
                reason, message = e.reason, e.message
            else:
                reason = "decode_error"
                message = f"{record.path}: {type(e).__name__}: {e}"
            self._count_failure(reason)
            yield apache_beam.pvalue.TaggedOutput(FAILED_TAG, {
                "input": resolve_video_path(record.path, self._cfg.video_root),
                "split": record.split,
                "label": record.label_string,
                "reason": reason,
                "message": message,
                "example_id": record.example_id,
            })
        else:
            self._count_success(record.split, int(record.label_index))
            yield apache_beam.pvalue.TaggedOutput(record.split, serialized)
        self._processed += 1
        if self._log_every and self._processed % self._log_every == 0:
            elapsed = time.monotonic() - self._t0
            LOGGER.info("worker %s: %d videos processed (%.2f videos/s)", _worker_name(),
                        self._processed, self._processed / max(elapsed, 1e-9))


def dead_letter_to_json(dead_letter: Mapping[str, Any]) -> str:
    """One ``failed-*.jsonl`` line (keys sorted, so runs compare equal)."""
    return json.dumps(dict(dead_letter), sort_keys=True)


def build_pipeline(pipeline: apache_beam.Pipeline, elements: Sequence[Mapping[str, Any]],
                   cfg: DataConfig, staging_dir: str, splits: Iterable[str],
                   mode: str = "center", tf_threads: int = 1) -> None:
    """Adds the whole job to ``pipeline``, writing every file under ``staging_dir``.

    Args:
        pipeline: the Beam pipeline to extend.
        elements: the annotation records as dicts (:func:`record_to_element`).
        cfg: the data section.
        staging_dir: where shards and dead letters are written.
        splits: the split names present in ``elements`` (one shard set each).
        mode: TSN sampling mode.
        tf_threads: TF intra-op threads per worker (0: TF's default).
    """
    splits = sorted(set(splits))
    results = (
        pipeline
        | "Read records" >> apache_beam.Create(list(elements), reshuffle=False)
        | "Spread over workers" >> apache_beam.Reshuffle()
        | "Decode and render" >> apache_beam.ParDo(
            ProcessVideoDoFn(cfg, mode=mode, tf_threads=tf_threads)).with_outputs(
                FAILED_TAG, *splits)
    )
    for split in splits:
        _ = results[split] | f"Write {split}" >> apache_beam.io.WriteToTFRecord(
            os.path.join(staging_dir, split), file_name_suffix=".tfrecord",
            num_shards=cfg.num_shards, shard_name_template=SHARD_TEMPLATE)
    _ = (results[FAILED_TAG]
         | "Dead letters to JSON" >> apache_beam.Map(dead_letter_to_json)
         | "Write dead letters" >> apache_beam.io.WriteToText(
             os.path.join(staging_dir, FAILED_PREFIX), file_name_suffix=".jsonl",
             num_shards=1, shard_name_template=SHARD_TEMPLATE))


# ----------------------------------------------------------------------------- files


def _join(*parts: str) -> str:
    return FileSystems.join(*parts)


def _mkdirs(path: str) -> None:
    try:
        FileSystems.mkdirs(path)
    except OSError:  # exists already
        pass


def _match(pattern: str) -> list[str]:
    result = FileSystems.match([pattern])[0]
    return sorted(m.path for m in result.metadata_list)


def _read_lines(paths: Iterable[str]) -> list[str]:
    lines = []
    for path in paths:
        with FileSystems.open(path) as f:
            lines += [ln for ln in f.read().decode().splitlines() if ln.strip()]
    return lines


def _write_text(path: str, text: str) -> None:
    """Writes ``path`` atomically where the filesystem allows (temp file + rename)."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with FileSystems.create(tmp) as f:
        f.write(text.encode())
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def publish(staging_dir: str, output_dir: str, include_shards: bool = True) -> dict[str, list[str]]:
    """Moves finished files from ``staging_dir`` into ``output_dir``, replacing old ones.

    Every old shard (of any split), dead-letter file and ``dataset_info.json`` is removed
    first, so the folder holds exactly this run's output (the caller then writes the new
    ``dataset_info.json``; readers never see new shards described by an old one). With
    ``include_shards=False`` only the dead letters are replaced and the old dataset stays.

    Args:
        staging_dir: the finished staging folder.
        output_dir: the dataset folder.
        include_shards: ``False`` publishes only the dead letters (nothing succeeded).

    Returns:
        ``{"shards": [...], "failed": [...]}`` final paths.
    """
    new_shards = _match(_join(staging_dir, SHARD_GLOB)) if include_shards else []
    new_failed = _match(_join(staging_dir, f"{FAILED_PREFIX}-*.jsonl"))
    stale = _match(_join(output_dir, f"{FAILED_PREFIX}-*.jsonl"))
    if include_shards:
        stale += _match(_join(output_dir, SHARD_GLOB)) + _match(_join(output_dir, DATASET_INFO))
    if stale:
        FileSystems.delete(stale)
    moved = {"shards": [], "failed": []}
    for kind, paths in (("shards", new_shards), ("failed", new_failed)):
        dst = [_join(output_dir, p.rsplit("/", 1)[-1]) for p in paths]
        if paths:
            FileSystems.rename(paths, dst)
        moved[kind] = dst
    return moved


# ----------------------------------------------------------------------------- dataset_info


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


def make_dataset_info(cfg: ExperimentConfig, class_names: Sequence[str],
                      summary: Mapping[str, Any], shards: Sequence[str],
                      failed_files: Sequence[str], num_records: int) -> dict[str, Any]:
    """The ``dataset_info.json`` content (the input pipeline checks ``schema_version``)."""
    shards_by_split: dict[str, list[str]] = {}
    for path in shards:
        name = path.rsplit("/", 1)[-1]
        shards_by_split.setdefault(name.rsplit("-", 3)[0], []).append(name)
    failed = dict(summary["failed"])
    failed["files"] = [p.rsplit("/", 1)[-1] for p in failed_files]
    return {
        "schema_version": SCHEMA_VERSION,
        "config": cfg.to_dict(),
        "class_names": list(class_names),
        "num_records": num_records,
        "counts": summary["counts"],
        "failed": failed,
        "shards": {k: sorted(v) for k, v in sorted(shards_by_split.items())},
    }


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """Our flags; anything else is left for Beam's ``PipelineOptions``."""
    p = argparse.ArgumentParser(
        prog="python -m beam.build_tfrecords",
        allow_abbrev=False,  # a Beam flag that prefixes one of ours must still reach Beam
        description="Build TFRecord shards (one SequenceExample per video) with Apache Beam. "
                    "Unknown flags go to Beam (--runner, --direct_num_workers, ...).")
    p.add_argument("--config", default=None,
                   help=f"experiment YAML (default: {DEFAULT_CONFIG} if present, else defaults)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (repeatable), e.g. --set data.num_segments=4")
    p.add_argument("--dataset", help="data.dataset: synthetic, ucf101, ucf51, kinetics_sounds, csv")
    p.add_argument("--video_root", help="data.video_root: the folder holding the videos")
    p.add_argument("--annotations", help="data.annotations: annotation folder or CSV file")
    p.add_argument("--output_dir", help="data.output_dir: where shards and dataset_info go")
    p.add_argument("--num_shards", help="data.num_shards: shards per split (0: runner decides)")
    p.add_argument("--num_segments", help="data.num_segments: K frames per video")
    p.add_argument("--representations", help="data.representations: comma-separated list")
    p.add_argument("--split", help="data.split: the UCF101 train/test split number (1-3)")
    p.add_argument("--limit", type=int, default=0,
                   help="only the first N annotation records (tests, benchmarks)")
    p.add_argument("--mode", default="center", choices=("center", "random"),
                   help="TSN frame sampling (center is deterministic)")
    p.add_argument("--tf_threads", type=int, default=1,
                   help="TF intra-op threads per worker process (default 1 in every runner "
                        "mode, so audio-images are bit-identical however the job is run; "
                        "0: TF's default)")
    return p


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    out = list(args.set)
    for flag in ("dataset", "video_root", "annotations", "output_dir"):
        value = getattr(args, flag)
        if value is not None:
            out.append(f"data.{flag}={json.dumps(value)}")  # quoted: a YAML string
    for flag in ("num_shards", "num_segments", "split"):
        value = getattr(args, flag)
        if value is not None:
            out.append(f"data.{flag}={value}")
    if args.representations is not None:
        reps = [r.strip() for r in args.representations.split(",") if r.strip()]
        out.append(f"data.representations={json.dumps(reps)}")
    return out


def load_job_config(args: argparse.Namespace) -> ExperimentConfig:
    """The experiment config: ``--config`` (or the default file), ``--set``, then our flags."""
    path = args.config
    if path is None and Path(DEFAULT_CONFIG).exists():
        path = DEFAULT_CONFIG
    return load_config(path, overrides=_flag_overrides(args))


def _configure_logging() -> None:
    if not LOGGER.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        LOGGER.addHandler(handler)
        LOGGER.propagate = False  # Beam/absl may have configured the root logger too
    LOGGER.setLevel(logging.INFO)


def _print_summary(info: Mapping[str, Any] | None, summary: Mapping[str, Any],
                   moved: Mapping[str, list[str]], output_dir: str, seconds: float) -> None:
    print(f"Beam job finished in {seconds:.1f}s; output in {output_dir}")
    for split, c in summary["counts"].items():
        nshards = len((info or {}).get("shards", {}).get(split, []))
        print(f"  {split}: {c['total']} examples in {nshards} shards "
              f"({_join(output_dir, split)}{'-*-of-*.tfrecord'})")
    failed = summary["failed"]
    reasons = ", ".join(f"{k}: {v}" for k, v in failed["by_reason"].items()) or "none"
    print(f"  failed: {failed['total']} ({reasons})"
          + (f" -> {', '.join(moved['failed'])}" if failed["total"] else ""))
    if info is not None:
        print(f"  dataset info: {_join(output_dir, DATASET_INFO)}")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the job.

    Args:
        argv: command-line arguments (``sys.argv[1:]`` when ``None``).

    Returns:
        0 when at least one video was written, 1 when none was (or the job failed),
        2 on an invalid flag or config value (the message names the field).
    """
    parser = build_parser()
    try:
        args, beam_args = parser.parse_known_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a bad flag (2)
        return int(e.code or 0)
    try:
        exp = load_job_config(args)
    except (ConfigError, FileNotFoundError) as e:
        print(f"invalid config: {e}", file=sys.stderr)
        return 2
    for flag in ("limit", "tf_threads"):
        if getattr(args, flag) < 0:
            print(f"--{flag}: invalid value {getattr(args, flag)}; allowed: an integer >= 0",
                  file=sys.stderr)
            return 2
    cfg = exp.data
    _configure_logging()

    try:
        if cfg.dataset == "synthetic":
            from maivar_tf.data.synthetic import generate_dataset

            generate_dataset(cfg.video_root, cfg.synth, progress=True)
        annotations = read_annotations(cfg)
    except ConfigError as e:
        print(f"invalid config: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"cannot read the annotations of {cfg.dataset!r}: {e}", file=sys.stderr)
        return 1
    records = list(annotations.records)
    if args.limit:
        records = records[:args.limit]
    if not records:
        print(f"no annotation records for {cfg.dataset!r} (video_root={cfg.video_root!r}, "
              f"annotations={cfg.annotations!r})", file=sys.stderr)
        return 1
    splits = sorted({r.split for r in records})
    LOGGER.info("%d records (%s) -> %s", len(records),
                ", ".join(f"{s}: {sum(r.split == s for r in records)}" for s in splits),
                cfg.output_dir)

    t0 = time.monotonic()
    options = PipelineOptions(beam_args)
    runner = local_runner_if_direct(options)
    output_dir = cfg.output_dir
    _mkdirs(output_dir)
    staging = _join(output_dir, f".staging-{uuid.uuid4().hex[:12]}")
    _mkdirs(staging)
    try:
        pipeline = apache_beam.Pipeline(runner=runner, options=options)
        build_pipeline(pipeline, [record_to_element(r) for r in records], cfg, staging, splits,
                       mode=args.mode, tf_threads=args.tf_threads)
        try:
            result = pipeline.run()
            state = result.wait_until_finish()
        except Exception:  # noqa: BLE001 - a runner failure; nothing is published
            LOGGER.exception("the Beam pipeline failed; nothing was published")
            return 1
        if state != PipelineState.DONE:
            print(f"the Beam pipeline ended in state {state}; nothing was published",
                  file=sys.stderr)
            return 1
        failed_lines = _read_lines(_match(_join(staging, f"{FAILED_PREFIX}-*.jsonl")))
        success = success_counts(result)
        if not success and len(failed_lines) < len(records):
            # The runner reported no metrics although not every video failed: derive the
            # counts from what was written instead.
            LOGGER.warning("the runner reported no success counts; reading them from the "
                           "shards")
            success = counts_from_shards(_match(_join(staging, SHARD_GLOB)))
        summary = summarize(success, failed_lines, splits, annotations.class_names)
        ok = sum(c["total"] for c in summary["counts"].values())
        moved = publish(staging, output_dir, include_shards=ok > 0)
        info = None
        if ok:
            info = make_dataset_info(exp, annotations.class_names, summary, moved["shards"],
                                     moved["failed"], len(records))
            _write_text(_join(output_dir, DATASET_INFO),
                        json.dumps(info, indent=2, sort_keys=False) + "\n")
        _print_summary(info, summary, moved, output_dir, time.monotonic() - t0)
        if not ok:
            print(f"no video succeeded out of {len(records)}; the dead letters say why: "
                  f"{', '.join(moved['failed'])}", file=sys.stderr)
            return 1
        return 0
    finally:
        if FileSystems.exists(staging):
            FileSystems.delete([staging])


if __name__ == "__main__":
    sys.exit(main())

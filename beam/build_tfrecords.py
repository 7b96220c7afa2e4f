"""The Apache Beam job that turns annotated videos into TFRecord shards (its command line).

One ``tf.train.SequenceExample`` per video (schema in :mod:`maivar_tf.data.schema`): K TSN
segment frames as JPEG and the configured audio-images as PNG (the paper's Sec. 3.2). The
job is made of four modules: this one (flags, config, ``main``), :mod:`beam.transforms` (the
pipeline), :mod:`beam.publish` (staging, atomic publish, counts, ``dataset_info.json``) and
:mod:`beam.runner` (the local runner). Its outputs in ``output_dir``:
``<split>-SSSSS-of-NNNNN.tfrecord`` shards, ``failed-SSSSS-of-NNNNN.jsonl`` dead letters
(one JSON object per rejected video, with its reason) and ``dataset_info.json``, written last.
Everything is written into a staging folder beside ``output_dir`` first and moved in only when
the pipeline succeeded, so a killed job leaves nothing of its own in ``output_dir`` (and the
next run removes its staging folder).

With ``--with_features`` (and ``--features_dir``, default ``data.features_dir``) the job also
runs the video and audio backbones through Beam's RunInference (:mod:`beam.features`) and
publishes the feature shards and ``feature_info.json`` that ``maivar extract`` would write from
its TFRecords, staged beside ``features_dir`` and moved in after the TFRecords; videos whose
inference fails become dead letters (``inference_failed``, ``non_finite_features``) and are
left out of both.

Run it with::

    python -m beam.build_tfrecords --runner=DirectRunner            # embedded data -> ./data/
    python -m beam.build_tfrecords --config configs/ucf51.yaml \\
        --direct_running_mode=multi_processing --direct_num_workers=2
    python -m beam.build_tfrecords --with_features --features_dir data/features

Our flags choose the data; every other flag goes to Beam's ``PipelineOptions`` unchanged
(``--runner=DataflowRunner --project=... --temp_location=gs://...``, ``FlinkRunner``...).
``DirectRunner`` (or no ``--runner``) runs :class:`beam.runner.PrismFreeDirectRunner`, so the
job never downloads the Prism binary.

Exit codes: 0 when at least one video was written, 1 when none was (or the pipeline failed;
nothing is published then), 2 on an invalid flag or config value (the message names it) or
an unsupported runner (Dask, :func:`beam.runner.unsupported_runner`; docs/cluster.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Sequence

import apache_beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState

from beam.publish import Published, join, publish_job, staging_dir
from beam.runner import local_runner_if_direct, unsupported_runner
from beam.transforms import LOGGER, build_pipeline, record_to_element
from maivar_tf.config import (
    DEFAULT_CONFIG,
    ConfigError,
    DataConfig,
    ExperimentConfig,
    load_config,
    resolve_config_path,
)
from maivar_tf.data.annotations import VideoRecord, class_list_source, read_annotations


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
    p.add_argument("--dataset",
                   help="data.dataset: synthetic, ucf101, ucf51, ave, kinetics_sounds, csv")
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
    p.add_argument("--with_features", action="store_true",
                   help="also run the video and audio backbones (Beam RunInference) and write "
                        "the feature shards and feature_info.json maivar extract would write")
    p.add_argument("--features_dir",
                   help="data.features_dir: where --with_features publishes the features")
    return p


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    out = list(args.set)
    for flag in ("dataset", "video_root", "annotations", "output_dir", "features_dir"):
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
    return load_config(resolve_config_path(args.config), overrides=_flag_overrides(args))


def _configure_logging() -> None:
    if not LOGGER.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        LOGGER.addHandler(handler)
        LOGGER.propagate = False  # Beam/absl may have configured the root logger too
    LOGGER.setLevel(logging.INFO)


def _parse_and_load(argv: Sequence[str] | None
                    ) -> tuple[argparse.Namespace, list[str], ExperimentConfig] | int:
    """Flags and config, or the exit code (argparse's, or 2 on an invalid value)."""
    try:
        args, beam_args = build_parser().parse_known_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a bad flag (2)
        return int(e.code or 0)
    refusal = unsupported_runner(PipelineOptions(list(beam_args)))
    if refusal:  # before anything is read or generated
        print(f"--runner: {refusal}", file=sys.stderr)
        return 2
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
    return args, beam_args, exp


def _read_records(cfg: DataConfig, limit: int) -> tuple[list[VideoRecord], list[str]] | int:
    """The annotation records (generating the embedded dataset first), or the exit code."""
    try:
        if cfg.class_list:
            cfg.read_class_list()  # a bad list fails before anything is generated or read
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
    if limit:
        records = records[:limit]
    if not records:
        print(f"no annotation records for {cfg.dataset!r} (video_root={cfg.video_root!r}, "
              f"annotations={cfg.annotations!r})", file=sys.stderr)
        return 1
    return records, list(annotations.class_names)


def _run_pipeline(cfg: DataConfig, records: Sequence[VideoRecord], splits: Sequence[str],
                  staging: str, beam_args: Sequence[str], mode: str, tf_threads: int,
                  features=None):
    """Builds and runs the pipeline into ``staging``; its result, or ``None`` if it failed."""
    options = PipelineOptions(list(beam_args))
    pipeline = apache_beam.Pipeline(runner=local_runner_if_direct(options), options=options)
    build_pipeline(pipeline, [record_to_element(r) for r in records], cfg, staging, splits,
                   mode=mode, tf_threads=tf_threads, features=features)
    try:
        result = pipeline.run()
        state = result.wait_until_finish()
    except Exception:  # noqa: BLE001 - a runner failure; nothing is published
        LOGGER.exception("the Beam pipeline failed; nothing was published")
        return None
    if state != PipelineState.DONE:
        print(f"the Beam pipeline ended in state {state}; nothing was published",
              file=sys.stderr)
        return None
    return result


def _print_summary(published: Published, cfg: DataConfig, seconds: float) -> None:
    output_dir = cfg.output_dir
    info, summary, moved = published.info, published.summary, published.moved
    print(f"Beam job finished in {seconds:.1f}s; output in {output_dir}")
    for split, c in summary["counts"].items():
        nshards = len(info.shards.get(split, [])) if info is not None else 0
        silent = (f", {c['audio_missing']} kept with silent audio"
                  if c.get("audio_missing") else "")
        print(f"  {split}: {c['total']} examples in {nshards} shards "
              f"({join(output_dir, split)}{'-*-of-*.tfrecord'}{silent})")
    failed = summary["failed"]
    reasons = ", ".join(f"{k}: {v}" for k, v in failed["by_reason"].items()) or "none"
    print(f"  failed: {failed['total']} ({reasons})"
          + (f" -> {', '.join(moved['failed'])}" if failed["total"] else ""))
    if info is not None:
        print(f"  classes ({len(info.class_names)}, {class_list_source(cfg)}): "
              + ", ".join(info.class_names))
        print(f"  dataset info: {published.info_path}")


def _prepare_features(exp: ExperimentConfig, records: Sequence[VideoRecord],
                      splits: Sequence[str], staging: str):
    """``--with_features``: the plan and backbones (:func:`beam.feature_plan.prepare_features`),
    or 2 after printing why the config cannot extract."""
    from beam.feature_plan import prepare_features
    from beam.transforms import shard_count
    from maivar_tf.features.preview import needs_preview
    from maivar_tf.features.shards import FeatureError
    from maivar_tf.models.precision import PrecisionError

    if needs_preview(exp):
        print("invalid config: --with_features does not extract the preview backbone of "
              "model.selection: audio_topk; run `maivar extract` on the TFRecords instead",
              file=sys.stderr)
        return 2
    cfg = exp.data
    totals = {s: shard_count(cfg.num_shards, sum(r.split == s for r in records)) for s in splits}
    try:
        return prepare_features(exp, staging, cfg.features_dir, totals)
    except (FeatureError, PrecisionError, ValueError, FileNotFoundError) as e:
        print(f"invalid config: --with_features: {e}", file=sys.stderr)
        return 2


def run_job(exp: ExperimentConfig, records: Sequence[VideoRecord], class_names: Sequence[str],
            beam_args: Sequence[str] = (), *, mode: str = "center", tf_threads: int = 1,
            with_features: bool = False) -> int:
    """Runs the pipeline on ``records``, publishes its output and prints a summary.

    Args:
        exp: the experiment config (its data section drives the job; all of it is stored).
        records: the annotation records to process (at least one).
        class_names: the dataset's classes (label index order).
        beam_args: flags for Beam's ``PipelineOptions`` (``--runner=...``, ...).
        mode: TSN sampling mode, ``center`` or ``random``.
        tf_threads: TF intra-op threads per worker process (0: TF's default).
        with_features: also run the backbones (:mod:`beam.features`) and publish the feature
            shards and ``feature_info.json`` into ``data.features_dir`` (staged beside it,
            moved in after the TFRecords).

    Returns:
        0 when at least one video was written, else 1 (nothing but the dead letters is
        published then; after a pipeline failure, nothing at all); 2 when ``with_features``
        cannot run with this config.
    """
    from beam.feature_plan import stage_feature_info
    from beam.publish import publish_features, retract_feature_info

    cfg = exp.data
    splits = sorted({r.split for r in records})
    LOGGER.info("%d records (%s) -> %s", len(records),
                ", ".join(f"{s}: {sum(r.split == s for r in records)}" for s in splits),
                cfg.output_dir)
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        staging = stack.enter_context(staging_dir(cfg.output_dir))
        plan, hook = None, None
        if with_features:
            fstaging = stack.enter_context(staging_dir(cfg.features_dir))
            prepared = _prepare_features(exp, records, splits, fstaging)
            if isinstance(prepared, int):
                return prepared
            plan, pairs = prepared

            def hook(info, summary):
                stage_feature_info(plan, exp, pairs, info, summary)
                retract_feature_info(cfg.features_dir)
        result = _run_pipeline(cfg, records, splits, staging, beam_args, mode, tf_threads,
                               features=plan)
        if result is None:
            return 1
        published = publish_job(result, staging, cfg.output_dir, exp=exp,
                                class_names=class_names, splits=splits,
                                num_records=len(records), before_publish=hook)
        if plan is not None and published.info is not None:
            shards = publish_features(plan.staging, cfg.features_dir)
            print(f"  features: {len(shards)} shards -> {cfg.features_dir}")
    _print_summary(published, cfg, time.monotonic() - t0)
    if not published.num_ok:
        print(f"no video succeeded out of {len(records)}; the dead letters say why: "
              f"{', '.join(published.moved['failed'])}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the job.

    Args:
        argv: command-line arguments (``sys.argv[1:]`` when ``None``).

    Returns:
        0 when at least one video was written, 1 when none was (or the job failed),
        2 on an invalid flag or config value (the message names the field).
    """
    loaded = _parse_and_load(argv)
    if isinstance(loaded, int):
        return loaded
    args, beam_args, exp = loaded
    _configure_logging()
    read = _read_records(exp.data, args.limit)
    if isinstance(read, int):
        return read
    records, class_names = read
    return run_job(exp, records, class_names, beam_args, mode=args.mode,
                   tf_threads=args.tf_threads, with_features=args.with_features)


if __name__ == "__main__":
    sys.exit(main())

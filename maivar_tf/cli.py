"""The ``maivar`` command: synth, build, extract, train, evaluate, ablate (sweep), export,
predict, demo.

MAiVAR (Shaikh et al. 2024) end to end: the embedded dataset, the Beam TFRecord job, frozen
backbone features, Algorithm 1's three heads, evaluation, the ablations over seeds (the Table 3
sweep among them), export for TF Serving and prediction on video files.

Contracts:

* This is the only module that reads argparse namespaces; every command turns its flags into
  typed arguments of a library function.
* The config is ``--config`` or, without it, the default of
  :func:`maivar_tf.config.resolve_config_path`, resolved once here and handed on (also to the
  Beam job and predict); ``--set section.key=value`` overrides are validated like the YAML. An
  invalid config exits 2 with one line naming the field (or, for YAML that cannot be read, the
  file or ``--set`` item, line and column), before TensorFlow is imported.
* TensorFlow is imported through :func:`maivar_tf.console.import_tensorflow_quietly`, so a
  normal run prints no oneDNN / CUDA / absl start-up lines; ``--verbose`` (before or after the
  command) shows them.
* Errors that explain themselves (a missing file, a run or features that do not fit) print one
  ``maivar: ...`` line and exit 1 instead of a traceback.

Example:
    maivar demo                                   # the whole pipeline on the embedded dataset
    maivar train --config configs/ucf51.yaml --set train.fusion.epochs=10
    maivar predict clip.mp4 --run-dir runs/synthetic --json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maivar_tf.ablation_report import AXES
from maivar_tf.config import DEFAULT_CONFIG

#: One flag: ``(names, argparse keyword arguments)``.
Flag = tuple[tuple[str, ...], dict[str, Any]]


def _flag(*names: str, **kwargs: Any) -> Flag:
    return names, kwargs


_TRAINED_RUN = _flag("--run-dir", default=None, help="trained run (default: train.output_dir)")
_OUTPUT_RUN = _flag("--run-dir", default=None, help="output folder (default: train.output_dir)")
def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: expected at least 1")
    return value


_SEEDS = _flag("--seeds", type=_at_least_one, default=3,
               help="seeds per value: train.seed + 0 .. N-1 (default: 3)")


@dataclass(frozen=True)
class Command:
    """One sub-command.

    Args:
        name: what follows ``maivar``.
        help: one line for ``maivar --help``.
        run: ``run(args, cfg, cfg_path) -> exit code``; ``cfg`` is the loaded config when
            ``loads_config``, else None; ``cfg_path`` the resolved config file (or None).
        flags: the command's own flags.
        exclusive: flags of which at most one may be given.
        loads_config: load and validate the config before importing TensorFlow.
        passthrough: unknown arguments go to the callee (Beam, the converter).
        tensorflow: the command uses TensorFlow (imported quietly first).
    """

    name: str
    help: str
    run: Callable[[argparse.Namespace, Any, str | None], int]
    flags: tuple[Flag, ...] = ()
    exclusive: tuple[Flag, ...] = ()
    loads_config: bool = True
    passthrough: bool = False
    tensorflow: bool = True


# ----------------------------------------------------------------------------- typed steps


def _train(cfg, run_dir: Path):
    from maivar_tf.end_to_end import train_from_config

    return train_from_config(cfg, run_dir)


def _evaluate(cfg, run_dir: Path, audio: str | None = None) -> dict:
    from maivar_tf.end_to_end_eval import evaluation_features_dir
    from maivar_tf.evaluation import evaluate_run

    return evaluate_run(run_dir, evaluation_features_dir(cfg, run_dir),
                        cfg.model.representation, audio=audio)


def _print_accuracies(report: dict) -> None:
    from maivar_tf.calibration import format_calibration
    from maivar_tf.evaluation import STREAMS

    print("\nTest accuracy (top-1):")
    for name in STREAMS:
        m = report["models"][name]
        label = name if name == "fusion" else f"{name}-only"
        print(f"  {label:<11} {100 * m['top1']:6.2f}%   (top-5 {100 * m['top5']:6.2f}%, "
              f"mean class {100 * m['mean_class_accuracy']:6.2f}%)")
    if report.get("calibration"):
        print(format_calibration(report))
    loc = report.get("localisation")
    if loc and loc.get("segment_accuracy") is not None:
        print(f"Localisation ({loc['num_segments']} segments, {loc['num_event_segments']} in "
              f"the spans): segment accuracy {100 * loc['segment_accuracy']:.2f}%, event/"
              f"background {100 * loc['event_accuracy']:.2f}% (every segment an event "
              f"{100 * loc['baseline_all_event']:.2f}%, every segment background "
              f"{100 * loc['baseline_all_background']:.2f}%)")


def _build_tfrecords(cfg_path: str | None, overrides: Sequence[str],
                     beam_args: Sequence[str] = ()) -> int:
    """The Beam job (DirectRunner unless ``beam_args`` say otherwise) on the resolved config."""
    from beam.build_tfrecords import main as build_main

    argv = ["--runner=DirectRunner"] + ([f"--config={cfg_path}"] if cfg_path else [])
    for item in overrides:
        argv += ["--set", item]
    return build_main(argv + list(beam_args))


def demo(cfg, cfg_path: str | None, overrides: Sequence[str], run_dir: Path) -> int:
    """Synth -> Beam TFRecords -> features -> Algorithm 1 -> evaluation, printing accuracies.

    Returns:
        0, or the Beam job's exit code when it failed.
    """
    from maivar_tf.data.synthetic import generate_dataset
    from maivar_tf.evaluation import STREAMS
    from maivar_tf.features import extract_features
    from maivar_tf.utils import write_json_atomic

    t0 = time.time()

    def step(title: str) -> None:
        print(f"\n=== [{time.time() - t0:6.1f}s] {title}", flush=True)

    step("1/5 generating the embedded dataset")
    generate_dataset(cfg.data.video_root, cfg.data.synth)
    step("2/5 building TFRecords with Apache Beam (DirectRunner)")
    rc = _build_tfrecords(cfg_path, overrides)
    if rc != 0:
        print(f"maivar: the Beam job failed (exit {rc})", file=sys.stderr)
        return rc
    step(f"3/5 extracting BNInception video and {cfg.model.audio_backbone} audio features"
         + (" (per segment too)" if cfg.data.segment_audio else ""))
    extract_features(cfg, representations=[cfg.model.representation])
    step(f"4/5 training Algorithm 1: audio MLP, VMLP, fusion ({cfg.model.fusion}) initialised "
         "from the VMLP" + (", then the localiser" if cfg.model.localisation else ""))
    run = _train(cfg, run_dir)
    step("5/5 evaluating on the test split")
    report = _evaluate(cfg, run.run_dir)
    _print_accuracies(report)
    summary: dict = {name: round(100 * report["models"][name]["top1"], 2) for name in STREAMS}
    summary["calibration"] = report.get("calibration", {})
    write_json_atomic(run.run_dir / "demo_summary.json", summary)
    print(f"\nreports and plots in {run.run_dir / 'eval'}; total {time.time() - t0:.0f}s")
    return 0


# ----------------------------------------------------------------------------- commands


def _run_dir(cfg, args: argparse.Namespace) -> Path:
    return Path(args.run_dir or cfg.train.output_dir)


def _representations(args: argparse.Namespace) -> list[str] | None:
    return args.representations.split(",") if args.representations else None


def _cmd_synth(args, cfg, cfg_path) -> int:
    from maivar_tf.data.synthetic import generate_dataset

    out = generate_dataset(args.out or cfg.data.video_root, cfg.data.synth)
    print(f"embedded dataset ready in {out}")
    return 0


def _cmd_build(args, cfg, cfg_path) -> int:
    from maivar_tf.config.loading import read_config_tree

    # unreadable YAML fails here like in every command; the job validates the values (its
    # own flags may complete them)
    read_config_tree(cfg_path, args.set)
    return _build_tfrecords(cfg_path, args.set, args.passthrough)


def _cmd_extract(args, cfg, cfg_path) -> int:
    from maivar_tf.features import extract_features

    print(f"features written to {extract_features(cfg, representations=_representations(args))}")
    return 0


def _cmd_train(args, cfg, cfg_path) -> int:
    run = _train(cfg, _run_dir(cfg, args))
    e2e = f" end to end (finetune {cfg.train.finetune})" if cfg.train.end_to_end else ""
    print(f"trained audio MLP, VMLP and fusion MLP ({cfg.model.fusion})" + e2e
          + (" and the localiser" if run.localiser is not None else "") + f" -> {run.run_dir}")
    c = run.info.calibration
    print(f"fusion temperature {run.temperature:.4g}: " + (
        f"fitted on {c['num_examples']} validation examples" if c.get("fitted") else c["note"]))
    return 0


def _cmd_evaluate(args, cfg, cfg_path) -> int:
    from maivar_tf.evaluation import EVAL_SUBDIR, REPORT_JSON, SILENT_EVAL_SUBDIR

    run_dir = _run_dir(cfg, args)
    if args.selection:
        return _evaluate_selection(cfg, run_dir, args.selection, args.budget)
    silent = args.audio == "silent"
    if silent:
        print("every clip's audio replaced by the silent audio-image's features")
    _print_accuracies(_evaluate(cfg, run_dir, audio=args.audio))
    from maivar_tf.efficiency import full_cost
    report = run_dir / (SILENT_EVAL_SUBDIR if silent else EVAL_SUBDIR) / REPORT_JSON
    print(f"{full_cost(run_dir, report)}\nreport: {report}")
    return 0


def _evaluate_selection(cfg, run_dir: Path, selection: str, budget: int | None) -> int:
    from maivar_tf.efficiency import evaluate_selection, format_selection, selection_eval_dir
    from maivar_tf.evaluation import REPORT_JSON

    k = cfg.model.budget if budget is None else budget
    report = evaluate_selection(run_dir, cfg.data.features_dir, selection, k)
    print(format_selection(report))
    print(f"report: {selection_eval_dir(run_dir, selection, report['k']) / REPORT_JSON}")
    return 0


def _cmd_select_curve(args, cfg, cfg_path) -> int:
    from maivar_tf.selection_curve import curve_command

    return curve_command(args.run_dirs or str(_run_dir(cfg, args)), cfg.data.features_dir,
                         args.budgets, args.modes, args.repeats, args.out)


def _ablate(cfg, over: str, values: list[str] | None, seeds: int) -> int:
    from maivar_tf.ablation import ABLATION_SUBDIR, run_ablation
    from maivar_tf.ablation_report import REPORT_FILES, format_ablation_table

    report = run_ablation(cfg, over, values, seeds)
    print(format_ablation_table(report))
    out = Path(cfg.train.output_dir) / ABLATION_SUBDIR
    print(f"{', '.join(REPORT_FILES)} in {out} (and {out / over}); "
          f"{len(report['cells'])} cells in {report['seconds']:.0f}s")
    return 0


def _cmd_ablate(args, cfg, cfg_path) -> int:
    return _ablate(cfg, args.over, args.values.split(",") if args.values else None, args.seeds)


def _cmd_sweep(args, cfg, cfg_path) -> int:
    return _ablate(cfg, "representation", _representations(args), args.seeds)


def _cmd_export(args, cfg, cfg_path) -> int:
    from maivar_tf.serving.export import export_run

    path = export_run(cfg, _run_dir(cfg, args), args.export_dir,
                      model_name=args.model_name or cfg.name, version=args.version)
    print(f"SavedModel written to {path}")
    return 0


def _cmd_predict(args, cfg, cfg_path) -> int:
    from maivar_tf.predict import predict_command

    return predict_command(args.videos, cfg_path=cfg_path, overrides=args.set,
                           run_dir=args.run_dir, saved_model=args.saved_model,
                           top_k=args.top_k, as_json=args.json, segments=args.segments)


def _cmd_convert_weights(args, cfg, cfg_path) -> int:
    from maivar_tf.convert import main as convert_main

    return convert_main(args.passthrough)


def _cmd_demo(args, cfg, cfg_path) -> int:
    return demo(cfg, cfg_path, args.set, _run_dir(cfg, args))


COMMANDS: tuple[Command, ...] = (
    Command("synth", "generate the embedded audio-visual dataset", _cmd_synth,
            (_flag("--out", default=None, help="output folder (default: data.video_root)"),),
            tensorflow=False),
    Command("build", "build TFRecords with the Beam job (extra args go to Beam)", _cmd_build,
            loads_config=False, passthrough=True),
    Command("extract", "extract backbone features from the TFRecords", _cmd_extract,
            (_flag("--representations", default=None,
                   help="comma list of audio-images to extract (default: data.representations)"),)),
    Command("train", "Algorithm 1: audio MLP, VMLP, fusion MLP (features or end to end)",
            _cmd_train, (_OUTPUT_RUN,)),
    Command("evaluate", "metrics, confusion matrix, t-SNE and report.json", _cmd_evaluate,
            (_TRAINED_RUN,
             _flag("--audio", default="original", choices=("original", "silent"),
                   help="silent: every clip's audio replaced by the silent one (report in "
                        "RUN_DIR/eval-silent)"),
             _flag("--selection", default=None, choices=("uniform", "audio_topk", "oracle"),
                   help="classify from --budget selected segments only, with MACs and wall "
                        "time per video (report in RUN_DIR/eval-selection-<mode>-k<k>)"),
             _flag("--budget", type=int, default=None,
                   help="k segments for --selection (default: model.budget; 0: all K)"))),
    Command("select-curve", "accuracy vs MACs per video of segment selection over runs",
            _cmd_select_curve,
            (_flag("--run-dirs", default=None,
                   help="comma list of run folders (one per seed), or a folder of runs such "
                        "as an ablation cell's seed-* (default: --run-dir)"),
             _TRAINED_RUN,
             _flag("--budgets", default="1,2,4,8", help="comma list of k (default: 1,2,4,8)"),
             _flag("--modes", default="uniform,audio_topk,oracle", help="comma list"),
             _flag("--repeats", type=int, default=5, help="timed calls per model"),
             _flag("--out", default=None,
                   help="output folder (default: <first run>/../selection_curve)"))),
    Command("ablate", "train+evaluate every value of one axis with N seeds (Table 3 +- std)",
            _cmd_ablate,
            (_flag("--over", required=True, choices=AXES, help="the model field to ablate"),
             _SEEDS,
             _flag("--values", default=None,
                   help="comma list (default: every fusion method (temporal_binding only with "
                        "data.segment_audio) / data.representations / every audio backbone / "
                        "modality_dropout 0,0.5)"))),
    Command("sweep", "alias of `ablate --over representation` (the paper's Table 3)", _cmd_sweep,
            (_flag("--representations", default=None,
                   help="comma list (default: data.representations)"), _SEEDS)),
    Command("export", "export the fusion model as a SavedModel for TF Serving", _cmd_export,
            (_TRAINED_RUN,
             _flag("--export-dir", default="export", help="EXPORT_DIR/<model_name>/<version>/"),
             _flag("--model-name", default=None, help="default: the config's name"),
             _flag("--version", type=int, default=None,
                   help="default: the next free version"))),
    Command("predict", "classify video files (top-5 classes)", _cmd_predict,
            (_flag("videos", nargs="+", help="video files"),
             _flag("--top-k", type=int, default=5),
             _flag("--json", action="store_true",
                   help="machine-readable output, one JSON document"),
             _flag("--segments", action="store_true",
                   help="also the time spans where the action is present (a run with a "
                        "localiser)")),
            exclusive=(_TRAINED_RUN, _flag("--saved-model", default=None,
                                           help="an exported SavedModel version folder")),
            loads_config=False),
    Command("convert-weights", "convert a PyTorch BNInception checkpoint to Keras weights",
            _cmd_convert_weights, loads_config=False, passthrough=True),
    Command("demo", "the whole pipeline on the embedded dataset", _cmd_demo, (_OUTPUT_RUN,)),
)


def _verbose_flag(p: argparse.ArgumentParser, default: Any) -> None:
    p.add_argument("--verbose", action="store_true", default=default,
                   help="show TensorFlow's native start-up logs (oneDNN, CUDA, absl)")


def _add_command(sub, cmd: Command) -> None:
    if cmd.name == "convert-weights":  # every argument, --help included, is the converter's
        p = sub.add_parser(cmd.name, help=cmd.help, add_help=False)
        p.set_defaults(command=cmd, subparser=p)
        return
    p = sub.add_parser(cmd.name, help=cmd.help)
    p.add_argument("--config", default=None,
                   help=f"experiment YAML (default: {DEFAULT_CONFIG} when present, else defaults)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (repeatable), e.g. --set train.video.epochs=5")
    _verbose_flag(p, argparse.SUPPRESS)
    for names, kwargs in cmd.flags:
        p.add_argument(*names, **kwargs)
    group = p.add_mutually_exclusive_group() if cmd.exclusive else None
    for names, kwargs in cmd.exclusive:
        group.add_argument(*names, **kwargs)
    p.set_defaults(command=cmd, subparser=p)


def build_parser() -> argparse.ArgumentParser:
    """The ``maivar`` argument parser (one sub-parser per :data:`COMMANDS` entry)."""
    parser = argparse.ArgumentParser(
        prog="maivar", description="MAiVAR: multimodal audio-image and video action recognition")
    _verbose_flag(parser, False)
    sub = parser.add_subparsers(dest="command_name", required=True)
    for cmd in COMMANDS:
        _add_command(sub, cmd)
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parses ``argv``; pass-through commands keep their unknown arguments in ``passthrough``."""
    args, rest = build_parser().parse_known_args(list(argv))
    if rest and not args.command.passthrough:
        args.subparser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.passthrough = rest
    return args


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that explain themselves: printed as one line instead of a traceback."""
    from maivar_tf.artifacts import ArtifactError, SchemaVersionError
    from maivar_tf.features import FeatureError
    from maivar_tf.models.weights import WeightsError
    from maivar_tf.runs import RunError

    return (FileNotFoundError, ArtifactError, SchemaVersionError, FeatureError, WeightsError,
            RunError)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``maivar``; returns the exit code (2: invalid config, 1: a one-line error)."""
    from maivar_tf.config import ConfigError, load_config, resolve_config_path
    from maivar_tf.console import VERBOSE_ENV, import_tensorflow_quietly

    args = parse_args(sys.argv[1:] if argv is None else argv)
    cmd: Command = args.command
    if args.verbose:
        os.environ[VERBOSE_ENV] = "1"
    try:
        cfg_path = resolve_config_path(getattr(args, "config", None))
        cfg = load_config(cfg_path, overrides=args.set) if cmd.loads_config else None
        if cmd.tensorflow and not {"-h", "--help"} & set(args.passthrough):
            import_tensorflow_quietly()
        return int(cmd.run(args, cfg, cfg_path) or 0)
    except ConfigError as e:
        print(f"maivar: invalid config: {e}", file=sys.stderr)
        return 2
    except _user_errors() as e:  # evaluated only when something was raised
        print(f"maivar: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

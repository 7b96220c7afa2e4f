"""The ``maivar`` command: synth, build, extract, train, evaluate, sweep, export, predict, demo.

Every sub-command takes ``--config configs/X.yaml`` (default: the embedded dataset's config) and
any number of ``--set section.key=value`` overrides, validated like the YAML itself. Heavy
imports (TensorFlow, Beam) happen inside the command that needs them, so ``maivar --help`` is
instant.

Example:
    maivar demo                                   # the whole pipeline on the embedded dataset
    maivar train --config configs/ucf51.yaml --set train.fusion_epochs=10
    maivar predict clip.mp4 --run-dir runs/synthetic --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

DEFAULT_CONFIG = "configs/synthetic.yaml"


def _load(args):
    from maivar_tf.config import load_config

    path = args.config
    if path is None and Path(DEFAULT_CONFIG).exists():
        path = DEFAULT_CONFIG
    return load_config(path, overrides=args.set or ())


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None,
                   help=f"experiment YAML (default: {DEFAULT_CONFIG} when present, else defaults)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (repeatable), e.g. --set train.vmlp_epochs=5")


def _beam_argv(cfg_path: str | None, overrides: Sequence[str], extra: Sequence[str]) -> list[str]:
    argv = ["--runner=DirectRunner"]
    if cfg_path:
        argv.append(f"--config={cfg_path}")
    for item in overrides:
        argv += ["--set", item]
    return argv + list(extra)


def cmd_synth(args) -> int:
    cfg = _load(args)  # config errors before the heavy imports
    from maivar_tf.data.synthetic import generate_dataset

    out = generate_dataset(args.out or cfg.data.video_root, cfg.data.synth)
    print(f"embedded dataset ready in {out}")
    return 0


def cmd_build(args) -> int:
    from beam.build_tfrecords import main as build_main

    return build_main(_beam_argv(args.config, args.set, args.beam_args))


def cmd_extract(args) -> int:
    cfg = _load(args)  # config errors before the heavy imports
    from maivar_tf.features import extract_features

    reps = args.representations.split(",") if args.representations else None
    out = extract_features(cfg, representations=reps)
    print(f"features written to {out}")
    return 0


def _run_dir(cfg, args) -> Path:
    return Path(getattr(args, "run_dir", None) or cfg.train.output_dir)


def cmd_train(args) -> int:
    cfg = _load(args)  # config errors before the heavy imports
    from maivar_tf.features import load_features
    from maivar_tf.training import run_algorithm1

    rep = cfg.model.representation
    train = load_features(cfg.data.features_dir, "train", rep)
    result = run_algorithm1(cfg, train, val=None, run_dir=_run_dir(cfg, args))
    print(f"trained audio MLP, VMLP and fusion MLP -> {result.run_dir}")
    return 0


def _evaluate(cfg, run_dir: Path) -> dict:
    from maivar_tf.evaluation import evaluate_models
    from maivar_tf.features import load_features
    from maivar_tf.runs import load_run

    run = load_run(run_dir)
    test = load_features(cfg.data.features_dir, "test", cfg.model.representation)
    models = {"video": run.vmlp, "audio": run.audio_mlp, "fusion": run.fusion}
    return evaluate_models(models, test, run_dir / "eval")


def _print_accuracies(report: dict) -> None:
    print("\nTest accuracy (top-1):")
    for name in ("video", "audio", "fusion"):
        m = report["models"][name]
        print(f"  {name + '-only' if name != 'fusion' else 'fusion':<11} {100 * m['top1']:6.2f}%"
              f"   (top-5 {100 * m['top5']:6.2f}%, mean class {100 * m['mean_class_accuracy']:6.2f}%)")


def cmd_evaluate(args) -> int:
    cfg = _load(args)  # config errors before the heavy imports
    run_dir = _run_dir(cfg, args)
    report = _evaluate(cfg, run_dir)
    _print_accuracies(report)
    print(f"report: {run_dir / 'eval' / 'report.json'}")
    return 0


def cmd_sweep(args) -> int:
    cfg = _load(args)  # config errors before the heavy imports
    from maivar_tf.experiments import representation_sweep

    reps = args.representations.split(",") if args.representations else None
    print(representation_sweep(cfg, representations=reps))
    return 0


def cmd_export(args) -> int:
    cfg = _load(args)  # config errors before the heavy imports
    from maivar_tf.export import export_run

    path = export_run(cfg, run_dir=_run_dir(cfg, args), export_dir=args.export_dir,
                      model_name=args.model_name or cfg.name, version=args.version)
    print(f"SavedModel written to {path}")
    return 0


def cmd_predict(args) -> int:
    from maivar_tf.predict import main as predict_main

    return predict_main(args)


def cmd_convert_weights(args) -> int:
    from maivar_tf.convert import main as convert_main

    return convert_main(args.convert_args)


def cmd_demo(args) -> int:
    """Synth -> Beam TFRecords -> features -> Algorithm 1 -> evaluation, printing accuracies."""
    cfg = _load(args)  # config errors before the heavy imports
    t0 = time.time()

    def step(title: str) -> None:
        print(f"\n=== [{time.time() - t0:6.1f}s] {title}", flush=True)

    step("1/5 generating the embedded dataset")
    from maivar_tf.data.synthetic import generate_dataset

    generate_dataset(cfg.data.video_root, cfg.data.synth)

    step("2/5 building TFRecords with Apache Beam (DirectRunner)")
    from beam.build_tfrecords import main as build_main

    rc = build_main(_beam_argv(args.config or (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).exists()
                                               else None), args.set, []))
    if rc != 0:
        print(f"the Beam job failed (exit {rc})", file=sys.stderr)
        return rc

    step("3/5 extracting BNInception video and InceptionResNetV2 audio features")
    from maivar_tf.features import extract_features

    extract_features(cfg, representations=[cfg.model.representation])

    step("4/5 training Algorithm 1: audio MLP, VMLP, fusion MLP initialised from the VMLP")
    from maivar_tf.features import load_features
    from maivar_tf.training import run_algorithm1

    train = load_features(cfg.data.features_dir, "train", cfg.model.representation)
    result = run_algorithm1(cfg, train, val=None, run_dir=_run_dir(cfg, args))

    step("5/5 evaluating on the test split")
    report = _evaluate(cfg, result.run_dir)
    _print_accuracies(report)
    summary = {name: round(100 * report["models"][name]["top1"], 2)
               for name in ("video", "audio", "fusion")}
    (result.run_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nreports and plots in {result.run_dir / 'eval'}; total {time.time() - t0:.0f}s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maivar", description="MAiVAR: multimodal audio-image and video action recognition")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate the embedded audio-visual dataset")
    _add_config_args(p)
    p.add_argument("--out", default=None, help="output folder (default: data.video_root)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("build", help="build TFRecords with the Beam job (extra args go to Beam)")
    _add_config_args(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("extract", help="extract backbone features from the TFRecords")
    _add_config_args(p)
    p.add_argument("--representations", default=None,
                   help="comma list of audio-images to extract (default: data.representations)")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("train", help="Algorithm 1: audio MLP, VMLP, then fusion MLP from the VMLP")
    _add_config_args(p)
    p.add_argument("--run-dir", default=None, help="output folder (default: train.output_dir)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="metrics, confusion matrix, t-SNE and report.json")
    _add_config_args(p)
    p.add_argument("--run-dir", default=None, help="trained run (default: train.output_dir)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("sweep", help="train+evaluate each audio-image representation (Table 3)")
    _add_config_args(p)
    p.add_argument("--representations", default=None, help="comma list (default: all six)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("export", help="export the fusion model as a SavedModel for TF Serving")
    _add_config_args(p)
    p.add_argument("--run-dir", default=None, help="trained run (default: train.output_dir)")
    p.add_argument("--export-dir", default="export", help="EXPORT_DIR/<model_name>/<version>/")
    p.add_argument("--model-name", default=None, help="default: the config's name")
    p.add_argument("--version", type=int, default=None, help="default: the next free version")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="classify video files (top-5 classes)")
    _add_config_args(p)
    p.add_argument("videos", nargs="+", help="video files")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--run-dir", default=None, help="trained run (default: train.output_dir)")
    src.add_argument("--saved-model", default=None, help="an exported SavedModel version folder")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--json", action="store_true", help="machine-readable output, one JSON document")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("convert-weights", add_help=False,
                       help="convert a PyTorch BNInception checkpoint to Keras weights")
    p.set_defaults(func=cmd_convert_weights)

    p = sub.add_parser("demo", help="the whole pipeline on the embedded dataset")
    _add_config_args(p)
    p.add_argument("--run-dir", default=None, help="output folder (default: train.output_dir)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    # Pass-through commands: everything after the command name belongs to the callee.
    if argv and argv[0] == "convert-weights":
        args = argparse.Namespace(func=cmd_convert_weights, convert_args=argv[1:])
    elif argv and argv[0] == "build":
        args, rest = parser.parse_known_args(argv)
        args.beam_args = rest
    else:
        args = parser.parse_args(argv)
    from maivar_tf.config import ConfigError

    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"maivar: invalid config: {e}", file=sys.stderr)
        return 2
    except _user_errors() as e:  # evaluated only when something was raised
        print(f"maivar: {e}", file=sys.stderr)
        return 1


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that explain themselves: printed as one line instead of a traceback."""
    from maivar_tf.data.input_pipeline import SchemaVersionError
    from maivar_tf.export import ExportError
    from maivar_tf.features import FeatureError
    from maivar_tf.models.weights import WeightsError

    return (FileNotFoundError, ExportError, FeatureError, WeightsError, SchemaVersionError)


if __name__ == "__main__":
    sys.exit(main())

"""Loading configs: YAML files plus dotted ``--set`` overrides, into validated sections.

Loading goes through :func:`from_dict`, which rejects unknown keys naming the section, the key
and the keys that are allowed; a key of the old flat layout (``train.vmlp_epochs``,
``model.ten_crop``...) fails naming its new place. A section given in part keeps the defaults
of the fields it leaves out (so ``train.fusion: {epochs: 5}`` keeps the fusion learning rate).
CLI overrides use dotted paths (``train.video.epochs=3``) and go through the same validation.
YAML is read with ``yaml.safe_load`` only (a ``!!python/...`` tag is refused, never run); a
syntax error or a refused tag is a :class:`ConfigError` naming the file (or the ``--set`` item),
the 1-based line and column, and the problem.

Example:
    >>> cfg = load_config("configs/synthetic.yaml", overrides=["train.video.epochs=2"])
    >>> cfg.train.video.epochs
    2
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from maivar_tf.config.sections import ConfigError, ExperimentConfig

#: The config used when none is given and this file exists (relative to the working directory).
DEFAULT_CONFIG = "configs/synthetic.yaml"

#: Keys of the flat layout before stage sections, and where each lives now.
MOVED_KEYS: dict[str, str] = {
    **{f"train.{old}_{field}": f"train.{new}.{dest}"
       for old, new in (("audio", "audio"), ("vmlp", "video"), ("fusion", "fusion"))
       for field, dest in (("epochs", "epochs"), ("lr", "learning_rate"),
                           ("batch_size", "batch_size"))},
    "train.extract_batch_size": "extract.batch_size",
    "model.ten_crop": "extract.ten_crop",
}


def resolve_config_path(path: str | Path | None) -> str | None:
    """The config file to load: ``path`` when given, else :data:`DEFAULT_CONFIG` if it exists.

    The one place where the default config is chosen (the ``maivar`` commands, predict and the
    Beam job all call it); ``None`` means the built-in defaults.
    """
    if path is not None:
        return str(path)
    return DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None


def _coerce_scalar(where: str, tp: Any, value: Any) -> Any:
    """A YAML scalar as ``bool``, ``int``, ``float`` or ``str``, or a ConfigError."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: invalid value {value!r}; allowed: true, false")
    if tp is int:
        try:
            ok = not isinstance(value, bool) and isinstance(value, (int, str, float))
            f = float(value) if ok else None
        except ValueError:
            f = None
        if f is None or f != int(f):
            raise ConfigError(f"{where}: invalid value {value!r}; allowed: an integer")
        return int(f)
    if tp is float:
        try:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: invalid value {value!r}; allowed: a number") from e
    if tp is str:
        if value is None:
            return "none"
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: invalid value {value!r}; allowed: a string")
        return str(value)
    return value


def _coerce(section: str, name: str, tp: Any, value: Any, default: Any = None) -> Any:
    """Turns a YAML value into the annotated type, or fails naming the field."""
    where = f"{section}.{name}" if section else name
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, section=where, base=default)
    origin = typing.get_origin(tp)
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_tp = typing.get_args(tp)[0]
        return tuple(_coerce(section, name, item_tp, v) for v in value)
    if origin in (typing.Union, types.UnionType):
        return value
    return _coerce_scalar(where, tp, value)


def _field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _reject_unknown(cls: type, data: Mapping[str, Any], section: str) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if not unknown:
        return
    where = f"{section}." if section else ""
    key = f"{where}{unknown[0]}"
    if key in MOVED_KEYS:
        raise ConfigError(f"{key}: moved to {MOVED_KEYS[key]} (the config groups each "
                          "training stage and the extraction settings in their own section)")
    raise ConfigError(f"{key}: unknown key; allowed keys"
                      f"{' in ' + section if section else ''}: {', '.join(names)}")


def from_dict(cls: type, data: Mapping[str, Any] | None, section: str = "",
              base: Any = None) -> Any:
    """Builds dataclass ``cls`` from a mapping, rejecting unknown and moved keys by name.

    Args:
        cls: the section class.
        data: the section's keys.
        section: its dotted name, for messages.
        base: an instance whose values fill the keys ``data`` leaves out (default: the
            class's defaults).
    """
    data = dict(data or {})
    _reject_unknown(cls, data, section)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        default = getattr(base, k) if base is not None else _field_default(fields[k])
        kwargs[k] = _coerce(section, k, hints[k], v, default)
    return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def _line_column(text: str, index: int) -> str:
    """``line L column C`` (1-based) of character ``index`` of ``text``."""
    line, line_start = text.count("\n", 0, index) + 1, text.rfind("\n", 0, index) + 1
    return f"line {line} column {index - line_start + 1}"


def _yaml_problem(e: yaml.YAMLError, text: str) -> str:
    """One line: ``line L column C: <problem>`` (1-based), plus where the construct began."""
    if isinstance(e, yaml.reader.ReaderError):  # a control character
        return f"{_line_column(text, e.position)}: {e.reason}"
    if not isinstance(e, yaml.MarkedYAMLError) or (e.problem_mark or e.context_mark) is None:
        return "- " + " ".join(str(e).split())
    problem = str(e.problem or e.context)
    if "tag:yaml.org,2002:python/" in problem:
        problem += " (a config holds plain values; Python tags are refused, never run)"
    elif e.context and e.problem and e.context_mark is not None:
        problem += (f" ({e.context} started at {_line_column(text, e.context_mark.index)})")
    mark = e.problem_mark or e.context_mark
    return f"{_line_column(text, mark.index)}: {problem}"


def parse_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load(text)``, or a one-line :class:`ConfigError` naming ``source``.

    Args:
        text: the YAML.
        source: what it came from, for the message (a file, ``--set key=value``).
    """
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source} {_yaml_problem(e, text)}") from None


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {p} is not a section")
    node[parts[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Applies ``a.b=value`` strings (values parsed as YAML scalars/lists) to a dict tree."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), parse_yaml(raw, f"--set {item}:") if raw else "")
    return tree


def read_config_tree(path: str | Path | None = None,
                     overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The YAML file plus dotted overrides as a plain dict tree, not yet validated.

    Raises:
        ConfigError: the file or an override is not YAML (naming the line and column), or
            the file is not a mapping.
        FileNotFoundError: the file does not exist.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 text (byte {e.start + 1}: {e.reason})"
                              ) from None
        loaded = parse_yaml(text, str(path))
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        tree = loaded or {}
    return apply_overrides(tree, overrides)


def load_config(path: str | Path | None = None,
                overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Loads and validates an :class:`ExperimentConfig` from YAML plus dotted overrides.

    Args:
        path: a YAML file; ``None`` gives the defaults (the embedded dataset).
        overrides: ``section.key=value`` strings applied after the file.

    Raises:
        ConfigError: naming the first bad key or value and what is allowed, or where the
            YAML cannot be read (file or ``--set`` item, line, column).
        FileNotFoundError: the file does not exist.
    """
    return from_dict(ExperimentConfig, read_config_tree(path, overrides))


def config_from_json_dict(data: Mapping[str, Any]) -> ExperimentConfig:
    """Reads back what :meth:`ExperimentConfig.to_dict` wrote (e.g. in dataset_info.json)."""
    return from_dict(ExperimentConfig, data)

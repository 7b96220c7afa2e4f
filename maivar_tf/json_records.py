"""The JSON codec of the artefact records: a frozen dataclass <-> a JSON object, by field.

:class:`JsonRecord` is the base of every record in :mod:`maivar_tf.artifacts`: ``to_json`` /
``from_json`` by field (nested records, tuples and mappings of records), reading and writing by
the record's file name. Unknown keys are ignored on reading, so older readers accept newer
files; a missing required key is an :class:`ArtifactError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from maivar_tf.utils import write_json_atomic

__all__ = ["ArtifactError", "JsonRecord", "load_json"]


class ArtifactError(ValueError):
    """An artefact file that is missing a key or holds a value of the wrong kind."""


def _decode_value(tp: Any, value: Any, where: str) -> Any:
    """JSON value -> the annotated type (records, tuples and mappings of records)."""
    if isinstance(tp, type) and issubclass(tp, JsonRecord):
        if not isinstance(value, Mapping):
            raise ArtifactError(f"{where}: expected an object, got {value!r}")
        return tp.from_json(value, source=where)
    origin = typing.get_origin(tp)
    if origin is tuple:
        return tuple(value)
    if origin in (Mapping, dict) and len(typing.get_args(tp)) == 2:
        value_tp = typing.get_args(tp)[1]
        if isinstance(value_tp, type) and issubclass(value_tp, JsonRecord):
            return {k: _decode_value(value_tp, v, f"{where}.{k}") for k, v in value.items()}
    return value


def _encode_value(value: Any) -> Any:
    if isinstance(value, JsonRecord):
        return value.to_json()
    if isinstance(value, tuple):
        return [_encode_value(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _encode_value(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class JsonRecord:
    """Base of the records: JSON round trip by field, reading and writing by file name."""

    FILE: ClassVar[str] = ""
    MISSING_HINT: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict, keys in field order."""
        return {f.name: _encode_value(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = ""):
        """The record from what :meth:`to_json` wrote; unknown keys are ignored.

        Raises:
            ArtifactError: a required key is missing (naming ``source`` and the key).
        """
        where = source or cls.FILE or cls.__name__
        if not isinstance(data, Mapping):
            raise ArtifactError(f"{where}: expected a JSON object, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                kwargs[f.name] = _decode_value(hints[f.name], data[f.name], f"{where}: {f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ArtifactError(f"{where}: missing key {f.name!r}")
        return cls(**kwargs)

    @classmethod
    def path(cls, folder: str | os.PathLike) -> Path:
        """Where this record's file lives inside ``folder``."""
        return Path(folder) / cls.FILE

    @classmethod
    def exists(cls, folder: str | os.PathLike) -> bool:
        """Whether ``folder`` holds this record's file."""
        return cls.path(folder).is_file()

    @classmethod
    def read(cls, folder: str | os.PathLike):
        """Reads the record from ``folder``.

        Raises:
            FileNotFoundError: the file does not exist (the message says what makes it).
            ArtifactError: the file is not valid JSON or lacks a key.
        """
        path = cls.path(folder)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {cls.MISSING_HINT}")
        return cls.from_json(load_json(path.read_text(), path), source=str(path))

    def write(self, folder: str | os.PathLike) -> Path:
        """Writes the record into ``folder`` atomically (readers never see half a file)."""
        path = self.path(folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, self.to_json())
        return path


def load_json(text: str, path: Any) -> Any:
    """``json.loads`` whose error is an :class:`ArtifactError` naming ``path``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: not valid JSON ({e})") from e

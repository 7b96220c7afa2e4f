"""Class lists: the ones shipped with maivar_tf and user files (one name a line, ``#`` comments).

Example:
    >>> from maivar_tf.resources import read_class_list
    >>> len(read_class_list("ucf51_classes.txt"))
    51
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def parse_class_list(text: str, source: str) -> tuple[str, ...]:
    """The class names of a class-list text, skipping blank lines and ``#`` comments.

    Args:
        text: the file's text.
        source: the file's name, for messages.

    Returns:
        The class names in file order.

    Raises:
        ValueError: no class name, or a name listed twice (naming both lines).
    """
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if name in first_line:
            raise ValueError(f"{source}:{lineno}: duplicate class name {name!r} (first at "
                             f"line {first_line[name]}); every class must be listed once")
        first_line[name] = lineno
    if not first_line:
        raise ValueError(f"{source}: no class names (one a line; blank lines and # comments "
                         "are skipped)")
    return tuple(first_line)


def read_class_list_file(path: str | os.PathLike) -> tuple[str, ...]:
    """Reads a user's class-list file (the format of the shipped lists).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: an empty list or a duplicate name (:func:`parse_class_list`).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: class-list file not found")
    return parse_class_list(p.read_text(encoding="utf-8-sig"), str(p))


def read_class_list(name: str) -> tuple[str, ...]:
    """Reads a shipped class list, skipping blank lines and ``#`` comments.

    Args:
        name: the file name inside ``maivar_tf/resources`` (e.g. ``"ucf51_classes.txt"``).

    Returns:
        The class names in file order.
    """
    text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
    return parse_class_list(text, name)

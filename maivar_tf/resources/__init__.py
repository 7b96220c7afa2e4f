"""Package data: class lists shipped with maivar_tf (one class name per line, ``#`` comments).

Example:
    >>> from maivar_tf.resources import read_class_list
    >>> len(read_class_list("ucf51_classes.txt"))
    51
"""

from __future__ import annotations

from importlib import resources


def read_class_list(name: str) -> tuple[str, ...]:
    """Reads a shipped class list, skipping blank lines and ``#`` comments.

    Args:
        name: the file name inside ``maivar_tf/resources`` (e.g. ``"ucf51_classes.txt"``).

    Returns:
        The class names in file order.
    """
    text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
    names = tuple(s for s in (line.strip() for line in text.splitlines())
                  if s and not s.startswith("#"))
    if len(set(names)) != len(names):
        raise ValueError(f"{name}: duplicate class names in a shipped class list")
    return names

"""File helpers shared by the MAiVAR pipeline's stages (Shaikh et al. 2024).

Contract: the JSON artefacts that hand one stage over to the next (``run_info.json``,
``feature_info.json``, evaluation reports) are written atomically, so a reader (or a resumed
run) never sees half a file, even when the writer is killed. Temporary folders of the long
jobs (the Beam job's staging, an export being written) are named after their writer
(:func:`owner_tag`), so the next run removes those of killed writers only
(:func:`owner_is_gone`).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_json_atomic(path: str | Path, data: Mapping[str, Any], *,
                      sort_keys: bool = False) -> None:
    """Writes ``data`` as indented JSON so readers never see a half-written file.

    The text goes to ``.<name>.tmp-<pid>`` beside ``path`` first (unique per process) and is
    renamed over ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=sort_keys) + "\n")
    os.replace(tmp, path)


def owner_tag() -> str:
    """``<host>-<pid>`` of this process: names a temporary folder after its writer."""
    return f"{socket.gethostname()}-{os.getpid()}"


def owner_is_gone(tag: str) -> bool:
    """Whether the process an :func:`owner_tag` names has ended.

    Only decidable on the same host: a tag of another host, or one that does not parse, counts
    as alive (its folder is left alone).
    """
    host, _, pid = tag.strip().rpartition("-")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False

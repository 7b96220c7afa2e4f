"""File helpers shared by the MAiVAR pipeline's stages (Shaikh et al. 2024).

Contract: the JSON artefacts that hand one stage over to the next (``run_info.json``,
``feature_info.json``, evaluation reports) are written atomically, so a reader (or a resumed
run) never sees half a file, even when the writer is killed.
"""

from __future__ import annotations

import json
import os
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

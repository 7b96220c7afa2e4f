"""The Beam job's config errors for YAML it cannot read: one line with file (or ``--set``
item), line and column, exit 2, nothing written, and a Python tag is never run."""

from __future__ import annotations

import pytest

import beam.build_tfrecords as job
from tests.test_config import BAD_YAML_KINDS, bad_yaml


@pytest.mark.parametrize("kind", BAD_YAML_KINDS)
def test_unreadable_yaml_exits_2_with_one_line(kind, capsys, tmp_path):
    flags, message, marker = bad_yaml(tmp_path, kind)
    out = tmp_path / "out"
    assert job.main([*flags, f"--output_dir={out}"]) == 2  # returned: no traceback
    assert capsys.readouterr().err.splitlines() == [f"invalid config: {message}"]
    assert not out.exists()
    assert not marker.exists()

"""What a person sees: known library noise is dropped unless --verbose asks for it."""

from __future__ import annotations

import os
import subprocess
import sys

from maivar_tf import console
from tests.conftest import REPO_ROOT

NOISE = "apitools not found"


def _stderr_of_beam_import(verbose: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != console.VERBOSE_ENV}
    if verbose:
        env[console.VERBOSE_ENV] = "1"
    done = subprocess.run([sys.executable, "-c", "import beam.build_tfrecords"], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=True)
    return done.stderr


def test_importing_the_beam_job_drops_beams_gcp_warning_unless_verbose():
    assert NOISE not in _stderr_of_beam_import(verbose=False)
    assert NOISE in _stderr_of_beam_import(verbose=True)


def test_only_known_noise_is_dropped(caplog):
    import logging

    before = len(logging.getLogger().filters)
    console.quiet_known_warnings()
    console.quiet_known_warnings()  # idempotent: one filter at most
    assert len(logging.getLogger().filters) - before <= 1
    with caplog.at_level(logging.WARNING):
        logging.warning("%s, and bigquery client libraries are not available", NOISE)
        logging.warning("a real warning")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["a real warning"]

"""Fixtures of the Beam job's tests: the Prism guard and one shared run of the whole job.

Every test (and the shared run) checks that Beam never took the Prism path, which downloads
a binary: Prism's entry points are patched for the whole package to record and refuse.
"""

from __future__ import annotations

import pytest

from beam import build_tfrecords
from tests.beam.jobdata import base_argv, make_bad_inputs, refusal, write_csv

#: The control tests that must see Prism entered (stock DirectRunner).
PRISM_CONTROL_TESTS = {"test_guard_detects_stock_direct_runner_taking_the_prism_path"}


@pytest.fixture(scope="package")
def prism_calls():
    """Every entry into the Prism runner or its binary download, recorded and refused."""
    from apache_beam.runners.portability import prism_runner

    calls: list[str] = []
    refuse = refusal(calls, "Prism must not be used")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(prism_runner.PrismRunner, "run_pipeline", refuse("run_pipeline"))
        mp.setattr(prism_runner.PrismJobServer, "_download_to_local_path",
                   staticmethod(refuse("download")))
        mp.setattr(prism_runner.PrismJobServer, "local_bin", classmethod(refuse("local_bin")))
        yield calls


@pytest.fixture(autouse=True)
def _never_prism(request, prism_calls):
    before = len(prism_calls)
    yield
    if request.node.originalname not in PRISM_CONTROL_TESTS:
        entered = prism_calls[before:]
        assert entered == [], f"the Prism runner was entered: {entered}"


@pytest.fixture(scope="package", autouse=True)
def _one_tf_thread():
    """TF in this process with the job's one intra-op thread, before any test runs an op.

    The in-process runs then render audio-images exactly as worker processes do, so their
    shards can be compared byte for byte (a no-op if another package started TF first).
    """
    from beam.transforms import limit_tf_threads

    limit_tf_threads(1)


@pytest.fixture(scope="package")
def job_inputs(tmp_path_factory):
    """``(root, csv_path, good)``: the real clips and every bad input kind, in one CSV."""
    root = tmp_path_factory.mktemp("job")
    bad = make_bad_inputs(root / "bad")
    csv_path = root / "annotations.csv"
    good = write_csv(csv_path, bad)
    return root, csv_path, good


@pytest.fixture(scope="package")
def built(job_inputs, prism_calls):
    """One full run of the job; stale files from an 'earlier run' sit in the output first.

    Returns:
        ``(exit code, output folder, good)`` (``good``: example id -> (label, split)).
    """
    root, csv_path, good = job_inputs
    out = root / "out1"
    out.mkdir()
    for stale in ("train-00000-of-00005.tfrecord", "val-00000-of-00001.tfrecord",
                  "failed-00000-of-00003.jsonl"):
        (out / stale).write_bytes(b"stale")
    (out / "notes.txt").write_text("not ours")
    before = len(prism_calls)
    rc = build_tfrecords.main(base_argv(csv_path, out))
    assert prism_calls[before:] == [], "the job's run entered the Prism runner"
    return rc, out, good

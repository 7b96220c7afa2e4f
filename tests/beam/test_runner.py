"""Tests of :mod:`beam.runner`: DirectRunner without Prism, and the runner choice by flag."""

from __future__ import annotations

import apache_beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to

from beam.runner import PrismFreeDirectRunner, local_runner_if_direct, needs_bundle_based_runner


def _tiny_pipeline(runner) -> None:
    with apache_beam.Pipeline(runner=runner) as p:
        out = p | apache_beam.Create([1, 2, 3]) | apache_beam.Map(lambda x: x * 2)
        assert_that(out, equal_to([2, 4, 6]))


def test_guard_detects_stock_direct_runner_taking_the_prism_path(prism_calls):
    """Control: Beam's own DirectRunner does enter Prism (so the guard can see it)."""
    before = len(prism_calls)
    _tiny_pipeline("DirectRunner")
    assert "run_pipeline" in prism_calls[before:]


def test_our_direct_runner_never_enters_prism(prism_calls):
    before = len(prism_calls)
    _tiny_pipeline(PrismFreeDirectRunner())
    assert prism_calls[before:] == []


def test_direct_runner_flag_selects_ours_and_other_runners_are_left_to_beam():
    for argv in (["--runner=DirectRunner"], ["--runner=direct"],
                 ["--runner=SwitchingDirectRunner"], []):
        assert isinstance(local_runner_if_direct(PipelineOptions(argv)), PrismFreeDirectRunner)
    assert local_runner_if_direct(PipelineOptions(["--runner=FlinkRunner"])) is None
    assert local_runner_if_direct(PipelineOptions(["--runner=DataflowRunner"])) is None


def test_streaming_and_test_stream_pipelines_take_the_bundle_based_runner():
    plain = apache_beam.Pipeline(options=PipelineOptions([]))
    _ = plain | apache_beam.Create([1])
    assert not needs_bundle_based_runner(plain, PipelineOptions([]))
    assert needs_bundle_based_runner(plain, PipelineOptions(["--streaming"]))

    options = PipelineOptions([])
    with apache_beam.Pipeline(runner=PrismFreeDirectRunner(), options=options) as p:
        out = (p | test_stream.TestStream().add_elements([1, 2]).advance_watermark_to_infinity()
               | apache_beam.Map(lambda x: x + 1))
        assert_that(out, equal_to([2, 3]))
        assert needs_bundle_based_runner(p, options)

"""Beam's local runner without the Prism hand-off: the one module that touches Beam internals.

``DirectRunner`` in this project means Beam's Python runner (FnApiRunner). Since Beam 2.68,
``SwitchingDirectRunner`` first hands batch pipelines to the Prism runner, whose job server
downloads a Go binary from GitHub. :class:`PrismFreeDirectRunner` makes the same choice minus
Prism; :func:`local_runner_if_direct` selects it whenever ``--runner`` is ``DirectRunner`` or
not given, so a local job never downloads anything. Every other runner (Dataflow, Flink,
Spark, ``PortableRunner``, Prism by its own name) is left to Beam by name: it takes Beam's
plain path, and nothing of this module runs there. The one exception is Beam's Dask runner,
which :func:`unsupported_runner` refuses (see :data:`DASK_REFUSAL`).

Contract: a pipeline run through :class:`PrismFreeDirectRunner` behaves as under Beam's own
``DirectRunner`` (same Python runners, same ``--direct_num_workers`` and
``--direct_running_mode`` semantics), except that ``PrismRunner`` is never entered.
"""

from __future__ import annotations

import apache_beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.pipeline import PipelineVisitor
from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner

#: ``--runner`` values (lower-cased) that mean Beam's local Python runner.
DIRECT_RUNNER_NAMES = frozenset({"direct", "directrunner", "switchingdirectrunner"})
#: The module of Beam's local runner, for ``--runner`` given as a dotted class path.
DIRECT_RUNNER_MODULE = "apache_beam.runners.direct.direct_runner"
#: ``--runner`` values (lower-cased, last component of a dotted path) naming the Dask runner.
DASK_RUNNER_NAMES = frozenset({"dask", "daskrunner"})
#: Why the Dask runner is refused (checked against Beam 2.77's ``DaskRunner``).
DASK_REFUSAL = (
    "the Dask runner is not supported: Beam's DaskRunner (checked with Beam 2.77) computes "
    "only the pipeline's last sink and does not split tagged outputs, so this job's shards "
    "and dead letters would mix or vanish. Use DirectRunner locally, or Dataflow, Flink or "
    "Spark (docs/cluster.md)")


class PrismFreeDirectRunner(SwitchingDirectRunner):
    """Beam's DirectRunner without the Prism hand-off (so nothing is ever downloaded).

    ``SwitchingDirectRunner.run_pipeline`` (Beam >= 2.68) first tries ``PrismRunner``, whose
    job server fetches a Go binary from GitHub releases, and only then falls back to the
    Python runners. This runner makes the rest of that choice unchanged: the FnApiRunner for
    batch pipelines (which honours ``--direct_num_workers`` and ``--direct_running_mode``),
    the BundleBasedDirectRunner for streaming ones or ``TestStream``.
    """

    def run_pipeline(self, pipeline, options):
        """Runs ``pipeline`` on the FnApiRunner, or the BundleBasedDirectRunner if it must."""
        from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

        if needs_bundle_based_runner(pipeline, options):
            return BundleBasedDirectRunner().run_pipeline(pipeline, options)

        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.fn_api_runner import fn_runner
        from apache_beam.runners.portability.portable_runner import JobServiceHandle

        # As SwitchingDirectRunner does: workers see the pipeline options.
        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        provision_info = fn_runner.ExtendedProvisionInfo(
            beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
        return fn_runner.FnApiRunner(provision_info=provision_info).run_pipeline(
            pipeline, options)


class _TestStreamFinder(PipelineVisitor):
    """Remembers whether a pipeline applies ``TestStream`` anywhere."""

    def __init__(self):
        self.found = False

    def visit_transform(self, applied_ptransform):
        from apache_beam.testing.test_stream import TestStream

        if isinstance(applied_ptransform.transform, TestStream):
            self.found = True


def needs_bundle_based_runner(pipeline: apache_beam.Pipeline,
                              options: PipelineOptions) -> bool:
    """Whether ``pipeline`` needs the BundleBasedDirectRunner (as Beam decides it).

    Args:
        pipeline: the pipeline about to run.
        options: its options.

    Returns:
        ``True`` for streaming pipelines and pipelines using ``TestStream``.
    """
    if options.view_as(StandardOptions).streaming:
        return True
    visitor = _TestStreamFinder()
    pipeline.visit(visitor)
    return visitor.found


def _runner_name(options: PipelineOptions) -> tuple[str, str] | None:
    """``(module, class name)`` of ``--runner``, lower-cased (module ``""`` for a bare name)."""
    name = options.view_as(StandardOptions).runner
    if not isinstance(name, str) or not name.strip():
        return None
    module, _, cls = name.strip().lower().rpartition(".")
    return module, cls


def is_direct_runner(options: PipelineOptions) -> bool:
    """Whether ``--runner`` is unset or names Beam's DirectRunner (by name or dotted path).

    Args:
        options: the pipeline options.
    """
    name = _runner_name(options)
    if name is None:
        return True
    module, cls = name
    return cls in DIRECT_RUNNER_NAMES and module in ("", DIRECT_RUNNER_MODULE)


def unsupported_runner(options: PipelineOptions) -> str | None:
    """Why this job refuses ``--runner``, or ``None`` if it may run there.

    Only Beam's Dask runner is refused (any case, bare or as a dotted class path such as
    ``apache_beam.runners.dask.dask_runner.DaskRunner``): :data:`DASK_REFUSAL`. Runners that
    need a job server download (Prism, Flink, Spark) are legitimate on a cluster and left to
    Beam.

    Args:
        options: the pipeline options.
    """
    name = _runner_name(options)
    if name is not None and name[1] in DASK_RUNNER_NAMES:
        return DASK_REFUSAL
    return None


def local_runner_if_direct(options: PipelineOptions):
    """The runner to build the pipeline with: ours for DirectRunner, else Beam's by name.

    Args:
        options: the pipeline options; ``--runner`` unset or naming Beam's DirectRunner
            (:func:`is_direct_runner`) selects :class:`PrismFreeDirectRunner`.

    Returns:
        A runner instance, or ``None`` to let Beam create the named runner (the plain path).
    """
    return PrismFreeDirectRunner() if is_direct_runner(options) else None

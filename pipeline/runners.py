"""The engine behind mixprep's local runs: Beam's FnApiRunner, never a binary fetched at run time.

Beam's ``DirectRunner`` (since 2.6x) first tries Prism, a Go runner whose binary it downloads from
GitHub when the pipeline starts, and falls back to the FnApiRunner when it cannot. So the same
command ran on Prism on a machine with internet and on the FnApiRunner without: two engines, one of
them never tested with mixprep. mixprep's local runs are built and measured on the FnApiRunner
(multi-process workers, input dealt out per worker: ``cache.local_workers``), so ``LocalRunner``
goes there directly. ``--runner=PrismRunner`` still asks for Prism by name.
"""

from __future__ import annotations

from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner

__all__ = ["LOCAL_RUNNER", "LocalRunner"]

LOCAL_RUNNER = "pipeline.runners.LocalRunner"  # what `mixprep` passes Beam for DirectRunner (or no runner)


class LocalRunner(SwitchingDirectRunner):
    """Beam's DirectRunner without its attempt at Prism; everything else as DirectRunner does it."""

    # DirectRunner.run_pipeline tries Prism unless this is set, as an interactive session sets it;
    # it gates nothing else. tests/test_runners.py checks that a run really takes the FnApiRunner.
    _is_interactive = True

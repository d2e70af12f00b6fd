"""Live curves: the fits and multipliers on the sweep's MLflow run, refreshed as cells finish.

A researcher watching a long sweep wants to see k converge and stop early. After a fresh
evaluation (results.csv was just rewritten), at most every `analysis.live_every_s` seconds,
the analysis is run again with a small bootstrap (`analysis.live_n_boot`) into
`<output>/analysis_live/`; its metrics go to the sweep's run with step = the number of
finished cells (so each metric is a curve over the sweep's progress) and its plots to
the run's `live/` folder, replaced each time. The end-of-sweep analysis is the one to
cite; a live fit that cannot be made yet (too few sizes) is skipped quietly. Nothing here
may stop the sweep: a failure is one warning, then live curves are off.
"""

from __future__ import annotations

import time
from pathlib import Path

from orchestrator.config import Config
from orchestrator.errors import one_line

LIVE_PLOTS = ("curves.png", "multipliers.png", "paired.png")


def fit_options(config: Config, n_boot: int):
    """The analysis's FitOptions for this sweep (analysis.*), with `n_boot` resamples: the
    final fit's and the live fits' differ only there."""
    from analysis import FitOptions

    return FitOptions(baseline=config.analysis.baseline, n_boot=n_boot,
                      level=config.analysis.level)


class LiveCurves:
    def __init__(self, config: Config, tracker, stream, clock=time.monotonic):
        self.config, self.tracker, self.stream, self.clock = config, tracker, stream, clock
        self.every = config.analysis.live_every_s
        self.on = config.analysis.enabled and self.every > 0 and tracker is not None
        self.last = -float("inf")
        self.refreshed = 0

    def cell_finished(self, results_csv: Path, cells_done: int) -> None:
        """Refresh if it is time; `cells_done`: finished cells, the metrics' step."""
        if not self.on or self.clock() - self.last < self.every:
            return
        self.last = self.clock()
        try:
            self._refresh(results_csv, cells_done)
        except Exception as exc:  # noqa: BLE001 - a display: never stop the sweep
            self.on = False
            self.stream.write(f"warning: live curves off ({one_line(exc)}); the final "
                              "analysis still runs\n")

    def _refresh(self, results_csv: Path, cells_done: int) -> None:
        from analysis import InputError, run_fit

        options = fit_options(self.config, self.config.analysis.live_n_boot)
        try:
            report = run_fit(results_csv, self.config.output_dir / "analysis_live", options)
        except InputError:              # e.g. the baseline has no finished cell yet
            return
        metrics = report.metrics()
        if not metrics:                 # nothing could be fitted yet
            return
        self.tracker.log_sweep_metrics(metrics, step=cells_done)
        plots = [p for p in report.files if p.name in LIVE_PLOTS]
        if plots and self.config.tracking.log_artifacts:
            self.tracker.log_sweep_files(plots, "live")
        self.refreshed += 1

"""What a running sweep prints on its driver: a line per epoch report and per trial end."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from ray import tune

from search.results import last_error_line


class EpochLines(tune.Callback):
    """One line on stdout per epoch report (trial, allocation, epoch, selection metric and the
    sweep's best so far), and one when a trial finishes, is stopped early or fails."""

    def __init__(self, cfg: Any) -> None:
        self.metric, self.mode = cfg.search.metrics[0], cfg.search.modes[0]
        self.epochs = cfg.pruning.epochs + (cfg.stage3.epochs if cfg.stage3 is not None else 0)
        self.best: float | None = None
        self.started = time.monotonic()

    def setup(self, **info: Any) -> None:
        # Tune pickles its callbacks with the sweep: a resumed driver starts its own clock.
        self.best, self.started = None, time.monotonic()

    def _say(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed // 60:02.0f}:{elapsed % 60:02.0f}] {text}", file=sys.stdout, flush=True)

    @staticmethod
    def _where(trial: Any) -> str:
        c = trial.config or {}
        if "language" not in c:
            return trial.trial_id
        return (
            f"{trial.trial_id} L {c['language']:.2f} V {c['visual']:.2f} X {c['cross']:.2f}"
            f" (s {c['sparsity']:.2f})"
        )

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if result.get("trial_complete"):
            return  # the end line says it
        value = result.get(self.metric)
        if isinstance(value, int | float) and math.isfinite(value):
            better = max if self.mode == "max" else min
            self.best = value if self.best is None else better(self.best, value)
        epochs = int((trial.config or {}).get("epochs", self.epochs))
        stage = "" if result.get("stage", "prune") == "prune" else f"{result['stage']} "
        shown = f"{value:.2f}" if isinstance(value, int | float) else "-"
        best = "-" if self.best is None else f"{self.best:.2f}"
        self._say(
            f"{self._where(trial)} {stage}epoch {result.get('epochs_done', '?')}/{epochs}:"
            f" {self.metric} {shown} (best so far {best})"
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        if result.get("trial_complete"):
            test = result.get("test_overall")
            tail = f", test {test:.2f}" if isinstance(test, int | float) else ""
            self._say(
                f"{self._where(trial)} finished: kept epoch {result.get('kept_epoch')}, "
                f"{self.metric} {result.get(self.metric, float('nan')):.2f}{tail}"
            )
        else:
            self._say(
                f"{self._where(trial)} stopped after {result.get('epochs_done', 0)} "
                "epochs (early stop, or the sweep is ending)"
            )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        line = last_error_line(trial, 300) or "see the trial's error file"
        self._say(f"{self._where(trial)} failed: {line}")

"""The deployment gate: may this candidate replace the champion?

Three checks, each named in the report so a refusal says which gate failed:

- ``signature``: the candidate takes the same input columns, of the same types, as the champion
  (a service built for the champion's requests can send them to the candidate);
- ``smoke``: on a fixed set of plausible rides the candidate predicts finite durations within
  ``(0, MAX_SMOKE_MINUTES]``;
- ``rmse``: on the same labelled holdout, the candidate's RMSE is not worse than the champion's
  by more than ``margin`` (relative). Both are scored with ``mlflow.models.evaluate`` (logged as
  runs of the ``taxi-duration-deploy`` experiment) and compared by
  ``mlflow.validate_evaluation_results`` with a ``MetricThreshold``: MLflow does the gating, we
  only choose the threshold. ``MetricThreshold(min_relative_change=…)`` asks the candidate to be
  *better* by a share in [0, 1], which cannot express "at most 1 % worse"; an absolute
  ``threshold = champion RMSE × (1 + margin)`` can.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from taxi_common.prepare import FEATURE_COLUMNS, TARGET

DEPLOY_EXPERIMENT = "taxi-duration-deploy"
METRIC = "root_mean_squared_error"
MAX_SMOKE_MINUTES = 180.0
#: Default margin: the candidate may be at most 1 % worse than the champion on the holdout.
DEFAULT_MARGIN = 0.01


@dataclass(frozen=True)
class Candidate:
    """A model the gate looks at: its registry version, the fitted pipeline, its input schema."""

    version: str
    pipeline: Any
    inputs: Sequence[tuple[str, str]] | None = None  # (column, type) from the model signature


@dataclass(frozen=True)
class GateCheck:
    """One gate: its name, whether it passed, and a one-line reason."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateReport:
    """Everything the gate decided, and on which numbers."""

    candidate_version: str
    champion_version: str | None
    holdout: str
    holdout_rows: int
    margin: float
    candidate_rmse: float | None
    champion_rmse: float | None
    checks: list[GateCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[str]:
        """The names of the checks that failed."""
        return [c.name for c in self.checks if not c.passed]

    def to_json(self) -> dict[str, Any]:
        """A plain dict for ``--json``."""
        return {**asdict(self), "passed": self.passed, "failed": self.failed}

    def lines(self) -> list[str]:
        """The report for a terminal, one line per check."""
        head = (f"candidate version {self.candidate_version} vs champion "
                f"{self.champion_version or '(none)'} on {self.holdout} "
                f"({self.holdout_rows} labelled trips), margin {self.margin:.1%}")
        body = [f"  {'pass' if c.passed else 'FAIL'}  {c.name}: {c.detail}" for c in self.checks]
        verdict = "gate passed" if self.passed else f"gate failed: {', '.join(self.failed)}"
        return [head, *body, verdict]


def smoke_rides() -> pd.DataFrame:
    """Plausible rides across the city: short, typical and long trips, airport runs included."""
    pairs = [(74, 75, 0.6), (41, 42, 1.1), (75, 236, 1.9), (166, 151, 0.9), (7, 7, 0.4),
             (95, 95, 1.2), (82, 138, 3.5), (74, 132, 16.8), (138, 230, 9.4), (181, 61, 2.7),
             (97, 65, 0.8), (244, 116, 1.0), (42, 247, 2.2), (129, 82, 1.4), (1, 264, 25.0)]
    frame = pd.DataFrame(pairs, columns=list(FEATURE_COLUMNS))
    return frame.astype({"PULocationID": "int64", "DOLocationID": "int64",
                         "trip_distance": "float64"})


def check_smoke(candidate: Candidate) -> GateCheck:
    """The candidate predicts finite, positive, bounded durations on :func:`smoke_rides`."""
    try:
        minutes = np.asarray(candidate.pipeline.predict(smoke_rides()), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - a model that cannot predict fails this gate
        return GateCheck("smoke", False, f"predict raised {type(exc).__name__}: {exc}"[:300])
    bad = ~np.isfinite(minutes) | (minutes <= 0) | (minutes > MAX_SMOKE_MINUTES)
    if bad.any():
        return GateCheck("smoke", False, f"{int(bad.sum())} of {len(minutes)} smoke rides got a "
                         f"duration outside (0, {MAX_SMOKE_MINUTES:g}] minutes "
                         f"(first: {minutes[bad][0]!r})")
    return GateCheck("smoke", True, f"{len(minutes)} smoke rides predicted "
                     f"{minutes.min():.1f}-{minutes.max():.1f} minutes")


def signature_inputs(signature: Any) -> list[tuple[str, str]] | None:
    """``[(column, type)]`` of an MLflow ``ModelSignature``'s inputs, or None without one."""
    if signature is None or signature.inputs is None:
        return None
    return [(spec.name, getattr(spec.type, "name", str(spec.type)))
            for spec in signature.inputs.inputs]


def check_signature(candidate: Candidate, champion: Candidate | None) -> GateCheck:
    """The candidate's input columns and types are the champion's (or the service's columns)."""
    if candidate.inputs is None:
        return GateCheck("signature", False, f"version {candidate.version} was logged without a "
                         "signature: log it with one (level 3 does)")
    names = [name for name, _ in candidate.inputs]
    if sorted(names) != sorted(FEATURE_COLUMNS):
        return GateCheck("signature", False, f"inputs {names} are not the service's "
                         f"{list(FEATURE_COLUMNS)}")
    if champion is not None and champion.inputs is not None \
            and sorted(candidate.inputs) != sorted(champion.inputs):
        return GateCheck("signature", False, f"inputs {sorted(candidate.inputs)} differ from "
                         f"champion {champion.version}'s {sorted(champion.inputs)}")
    return GateCheck("signature", True, ", ".join(f"{n}: {t}" for n, t in candidate.inputs))


def evaluate_on_holdout(pipeline: Any, holdout: pd.DataFrame, *, tracking_uri: str,
                        experiment_id: str, run_name: str,
                        tags: Mapping[str, str] | None = None) -> Any:
    """``mlflow.models.evaluate`` of ``pipeline``'s predictions on ``holdout``, as a new run.

    The predictions are computed here with the native pipeline and handed over as a column
    (``predictions=``), so MLflow scores exactly what the service would serve.
    """
    import mlflow

    from level3_training.tracking import tracking_uri_scope

    # Only the two columns MLflow scores: with the feature columns, its default evaluator would
    # also try SHAP on them (and fails on categorical zones).
    data = pd.DataFrame({
        "prediction": np.asarray(pipeline.predict(holdout[list(FEATURE_COLUMNS)]),
                                 dtype=np.float64),
        TARGET: holdout[TARGET].to_numpy(dtype=np.float64)})
    # mlflow.models.evaluate has no client-bound form: the fluent run needs the global URI,
    # restored afterwards. Its INFO lines and the SHAP notice are noise in a gate report.
    quiet = logging.getLogger("mlflow.models.evaluation")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with tracking_uri_scope(tracking_uri), \
                mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                                 tags=dict(tags or {})):
            return mlflow.models.evaluate(data=data, predictions="prediction", targets=TARGET,
                                          model_type="regressor", evaluators=["default"])
    finally:
        quiet.setLevel(level)


def check_rmse(candidate_result: Any, champion_result: Any | None, margin: float) -> GateCheck:
    """``mlflow.validate_evaluation_results`` with threshold champion RMSE × (1 + margin)."""
    import mlflow
    from mlflow.models import MetricThreshold
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    candidate_rmse = float(candidate_result.metrics[METRIC])
    if champion_result is None:
        return GateCheck("rmse", True, f"RMSE {candidate_rmse:.4f}; no champion to compare with")
    champion_rmse = float(champion_result.metrics[METRIC])
    limit = champion_rmse * (1.0 + margin)
    thresholds = {METRIC: MetricThreshold(threshold=limit, greater_is_better=False)}
    detail = (f"RMSE {candidate_rmse:.4f} vs champion {champion_rmse:.4f} "
              f"(limit {limit:.4f} = champion + {margin:.1%})")
    try:
        mlflow.validate_evaluation_results(thresholds, candidate_result, None)
    except ModelValidationFailedException:
        return GateCheck("rmse", False, detail)
    return GateCheck("rmse", True, detail)


def run_gate(candidate: Candidate, champion: Candidate | None, holdout: pd.DataFrame, *,
             holdout_label: str, margin: float, tracking_uri: str,
             experiment_id: str) -> GateReport:
    """Every check of ``candidate`` against ``champion`` on ``holdout``; nothing is changed."""
    if not (0.0 <= margin < 1.0) or not math.isfinite(margin):
        from taxi_common.errors import BadInputError

        raise BadInputError(f"--margin {margin}: use a share from 0 to 1, e.g. 0.01 for 1 %")
    checks = [check_signature(candidate, champion), check_smoke(candidate)]
    tags = {"deploy.candidate": candidate.version, "deploy.holdout": holdout_label}
    cand_result = evaluate_on_holdout(candidate.pipeline, holdout, tracking_uri=tracking_uri,
                                      experiment_id=experiment_id,
                                      run_name=f"gate v{candidate.version} candidate",
                                      tags={**tags, "deploy.role": "candidate"})
    champ_result = None
    if champion is not None:
        champ_result = evaluate_on_holdout(champion.pipeline, holdout, tracking_uri=tracking_uri,
                                           experiment_id=experiment_id,
                                           run_name=f"gate v{candidate.version} champion "
                                           f"v{champion.version}",
                                           tags={**tags, "deploy.role": "champion",
                                                 "deploy.champion": champion.version})
    checks.append(check_rmse(cand_result, champ_result, margin))
    return GateReport(
        candidate_version=candidate.version,
        champion_version=champion.version if champion else None,
        holdout=holdout_label, holdout_rows=len(holdout), margin=margin,
        candidate_rmse=float(cand_result.metrics[METRIC]),
        champion_rmse=float(champ_result.metrics[METRIC]) if champ_result else None,
        checks=checks)

"""``level4 deploy``: gate the challenger (or a given version) against the champion, then promote.

The holdout is one prepared month that neither model chose itself on: by default the month after
the candidate's own validation month, with the candidate's data source, seed and scenario (read
from its lineage tags), so "recent labelled data" means the same rows for both models. Pass →
``champion`` moves to the candidate (the old one becomes ``previous``, audit tags say why and
who), and a running level-4 service follows within its reload interval. Fail → nothing changes,
and the report names the failing gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from level4_deployment.gate import DEFAULT_MARGIN, DEPLOY_EXPERIMENT, Candidate, GateReport
from taxi_common.errors import BadInputError
from taxi_common.months import next_month, parse_month
from taxi_common.settings import Settings

DEPLOY_ACTOR = "level4 deploy"


@dataclass(frozen=True)
class HoldoutSpec:
    """Which prepared month the gate scores both models on."""

    month: str
    source: str = "synthetic"
    color: str = "green"
    seed: int = 0
    scenario: str = "baseline"
    n_rows: int | None = None

    @property
    def label(self) -> str:
        """For reports: ``synthetic green 2021-03 (scenario baseline, seed 0)``."""
        extra = f" (scenario {self.scenario}, seed {self.seed})" if self.source == "synthetic" \
            else ""
        cap = f", first {self.n_rows} trips" if self.n_rows else ""
        return f"{self.source} {self.color} {self.month}{extra}{cap}"


@dataclass(frozen=True)
class DeployResult:
    """The gate's report, and the aliases after the decision."""

    report: GateReport
    promoted: bool
    aliases: dict[str, str | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A plain dict for ``--json``."""
        return {**self.report.to_json(), "promoted": self.promoted, "aliases": self.aliases}


def default_holdout(tags: dict[str, str], month: str | None = None,
                    n_rows: int | None = None) -> HoldoutSpec:
    """The holdout for a version with lineage ``tags``: ``month``, or the month after its
    validation month; the version's own source, color, seed and scenario."""
    if month is None:
        val_month = tags.get("data.val_month")
        if not val_month:
            raise BadInputError("the candidate has no data.val_month tag to pick a holdout "
                                "after: pass --holdout-month YYYY-MM")
        month = next_month(val_month)
    parse_month(month)
    cap = n_rows if n_rows is not None else _int_or_none(tags.get("data.n_rows_cap"))
    return HoldoutSpec(month=month, source=tags.get("data.source", "synthetic"),
                       color=tags.get("data.color", "green"),
                       seed=int(tags.get("data.seed", "0") or 0),
                       scenario=tags.get("data.scenario", "baseline") or "baseline",
                       n_rows=cap)


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def _candidate(client: Any, version: str) -> Candidate:
    from level3_training.registry import load_version
    from level4_deployment.gate import signature_inputs
    from level4_deployment.models import version_signature

    pinned, pipeline = load_version(client, version)
    return Candidate(pinned, pipeline, signature_inputs(version_signature(client, pinned)))


def deploy(settings: Settings, *, version: str | None = None, holdout_month: str | None = None,
           margin: float = DEFAULT_MARGIN, rows: int | None = None,
           dry_run: bool = False) -> DeployResult:
    """Gate ``version`` (default ``@challenger``) against ``@champion``; promote it on a pass."""
    from level3_training.evaluation import holdout
    from level3_training.registry import (
        CHALLENGER,
        CHAMPION,
        aliases,
        client_for,
        get_version,
        promote,
        resolve_version,
    )
    from level3_training.tracking import configure_tracking
    from level4_deployment.gate import run_gate

    client = client_for(settings.tracking_uri)
    target = resolve_version(client, version or CHALLENGER)
    champion_version = aliases(client).get(CHAMPION)
    if champion_version == target:
        raise BadInputError(f"version {target} is the champion already: nothing to deploy")
    spec = default_holdout(dict(get_version(client, target).tags or {}), holdout_month, rows)
    candidate = _candidate(client, target)
    champion = _candidate(client, champion_version) if champion_version else None
    rows_ = holdout(spec.month, settings, source=spec.source, color=spec.color, seed=spec.seed,
                    scenario=spec.scenario, n_rows=spec.n_rows)
    report = run_gate(candidate, champion, rows_, holdout_label=spec.label, margin=margin,
                      tracking_uri=settings.tracking_uri,
                      experiment_id=configure_tracking(settings, DEPLOY_EXPERIMENT))
    if not report.passed or dry_run:
        return DeployResult(report, False, dict(aliases(client)))
    moved = promote(client, target, reason=_reason(report), actor=DEPLOY_ACTOR)
    return DeployResult(report, True, dict(moved))


def _reason(report: GateReport) -> str:
    if report.champion_rmse is None:
        return (f"deploy gate passed on {report.holdout}: RMSE {report.candidate_rmse:.4f}, "
                "first champion")
    return (f"deploy gate passed on {report.holdout}: RMSE {report.candidate_rmse:.4f} vs "
            f"champion {report.champion_version}'s {report.champion_rmse:.4f} "
            f"(margin {report.margin:.1%})")

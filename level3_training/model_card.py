"""The model card of a registered version: intended use, data and lineage, metrics, limits, owner.

One Markdown text, written when the flow registers a version: it becomes the version's
description (the MLflow UI renders it) and ``model_card.md`` beside the model's files and in the
candidate's run. Pure text from the flow's summary: no MLflow here, so it is unit-tested as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from level3_training.candidates import CandidateResult

ARTIFACT = "model_card.md"
#: A model version's description holds at most 5,000 characters (PostgreSQL enforces it).
MAX_DESCRIPTION = 5000


@dataclass(frozen=True)
class CardContext:
    """What the card says besides the model: the data summary, the runs, the owner."""

    data: dict[str, Any]
    pipeline_run_id: str
    owner: str
    model_name: str


def _params(best: CandidateResult) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(best.best.params.items())) or "defaults"


def _intended_use(best: CandidateResult, ctx: CardContext) -> list[str]:
    return [
        "## Intended use",
        f"Predicts the duration, in minutes, of an NYC {ctx.data['color']} taxi trip from its "
        "pickup zone, drop-off zone and distance (`PULocationID`, `DOLocationID`, "
        "`trip_distance`), for trips like those of the training months. Registered by the "
        f"level-3 training flow as a candidate for `{ctx.model_name}`: promote it to "
        "`champion` only after comparing it with the current champion.",
        "Not for: fares, routes, trips outside the TLC zones, or durations outside 1-60 minutes.",
    ]


def _lineage(best: CandidateResult, ctx: CardContext) -> list[str]:
    data = ctx.data
    synthetic = data["source"] == "synthetic"
    generated = (f"; seed {data['seed']}, scenario `{data['scenario']}`" if synthetic else "")
    return [
        "## Training data and lineage",
        f"- source: {data['source']} {data['color']}{generated}; row cap per month: "
        f"{data['n_rows'] or 'none'}",
        f"- training: {', '.join(data['train_months'])}, {data['train_rows']} trips, "
        f"fingerprint `{data['train_fingerprint']}`",
        f"- validation: {data['val_month']}, {data['val_rows']} trips, "
        f"fingerprint `{data['val_fingerprint']}`",
        f"- model: `{best.name}` ({_params(best)}), best of {len(best.trials)} trials; "
        f"logged model `{best.model_id}`",
        f"- runs: candidate `{best.run_id}` under pipeline `{ctx.pipeline_run_id}`; "
        f"code `{data['code_version']}`",
    ]


def _metrics(best: CandidateResult, others: Sequence[CandidateResult]) -> list[str]:
    lines = ["## Metrics (minutes)", "| | RMSE | MAE |", "| --- | --- | --- |",
             f"| validation | {best.val_rmse:.4f} | {best.best.val['mae']:.4f} |",
             f"| training | {best.best.train['rmse']:.4f} | {best.best.train['mae']:.4f} |"]
    rivals = [c for c in others if c.name != best.name]
    if rivals:
        lines.append("Other candidates, validation RMSE: " + ", ".join(
            f"{c.name} {c.val_rmse:.4f}" for c in sorted(rivals, key=lambda c: c.val_rmse)))
    return lines


def _limitations(ctx: CardContext) -> list[str]:
    lines = [
        "## Limitations",
        "- The validation month chose both the hyper-parameters and the winning model, so its "
        "RMSE is slightly optimistic; a held-out month measures it honestly.",
        "- Trained on trips of 1-60 minutes only. A zone pair never seen in training gets no "
        "pair effect in the one-hot models; the tree models read zone IDs as numbers, so it "
        "gets the estimate of neighbouring IDs.",
        "- Trip patterns drift (congestion, new hotspots, data-quality faults): monitor the "
        "error on recent months and retrain.",
    ]
    if ctx.data["source"] == "synthetic":
        lines.append("- Synthetic data: calibrated on real months, but its figures are not "
                     "those of any real month.")
    return lines


def model_card(best: CandidateResult, candidates: Sequence[CandidateResult],
               ctx: CardContext) -> str:
    """The Markdown card of ``best``, chosen among ``candidates``."""
    sections = [
        [f"# {ctx.model_name}: {best.name} ({_params(best)})",
         f"Validation RMSE {best.val_rmse:.4f} min on {ctx.data['val_month']}, trained on "
         f"{', '.join(ctx.data['train_months'])}."],
        _intended_use(best, ctx), _lineage(best, ctx), _metrics(best, candidates),
        _limitations(ctx), ["## Owner", ctx.owner],
    ]
    return "\n\n".join("\n".join(section) for section in sections) + "\n"


def as_description(card: str) -> str:
    """``card`` as a version description: whole when it fits, else cut with a pointer to the
    full card (the ``model_card.md`` artifact)."""
    if len(card) <= MAX_DESCRIPTION:
        return card
    note = f"\n\n(cut: the full card is {ARTIFACT} beside the model)\n"
    return card[: MAX_DESCRIPTION - len(note)] + note

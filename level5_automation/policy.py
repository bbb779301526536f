"""The level-5 policy: when to retrain, on which data, when to promote, when to roll back.

One TOML file, read with ``tomllib`` and validated with msgspec (as level 4's monitoring
configuration is). The documented default ships in the package (``level5_automation/policy.toml``);
a user's file may leave keys out (they keep the default). A wrong key or value is one
:class:`PolicyError` that names the key and the fix:
``policy mine.toml: [watch] margin: expected `float` >= 0.0, got -1``.

The trigger thresholds are keyed by the names of level 4's daily monitoring metrics (the
``monitoring_metrics`` table: ``mae_ratio``, ``rmse_ratio``, ``drift_share``, …), so a policy
reads the same numbers a person reads on level 4's dashboard.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from taxi_common.errors import BadInputError
from taxi_common.toml_config import explain_validation_error, read_toml

DEFAULT_POLICY_NAME = "policy.toml"
#: Level 4's daily metrics a trigger may watch (``monitoring_metrics.metric``): bigger = worse.
TRIGGER_METRICS = ("mae_ratio", "rmse_ratio", "drift_share", "drift_prediction",
                   "drift_PULocationID", "drift_DOLocationID", "drift_trip_distance",
                   "missing_share")
APPROVAL_MODES = ("auto", "required")

Positive = Annotated[float, msgspec.Meta(gt=0)]
Share = Annotated[float, msgspec.Meta(ge=0, le=1)]
Days = Annotated[int, msgspec.Meta(ge=0, le=366)]
PositiveDays = Annotated[int, msgspec.Meta(ge=1, le=366)]
Rows = Annotated[int, msgspec.Meta(ge=0)]


class PolicyError(BadInputError):
    """A policy file that cannot be used."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


def _default_thresholds() -> dict[str, float]:
    return {"mae_ratio": 1.12, "rmse_ratio": 1.20, "drift_share": 0.5}


class Triggers(_Section):
    """What makes the loop retrain."""

    #: metric -> threshold: a monitored day whose value is above it is an alert, and an alert
    #: triggers a retrain (level 4's shipped thresholds by default).
    above: dict[str, float] = msgspec.field(default_factory=_default_thresholds)
    #: a monitored day with fewer labelled rows is not judged: level 4's drift thresholds were
    #: set on days of 1,000-2,000 rides, and on 500 the zones drift by sampling noise alone.
    min_labelled_rows: Rows = 1000
    #: at most one alert-triggered retrain every N days.
    cooldown_days: PositiveDays = 1
    #: the schedule: retrain when the last retrain is N days old (0: no schedule).
    every_days: Days = 7
    #: after a drift, while the champion was trained on fewer days than ``[window] days``,
    #: retrain every N days until a catch-up challenger is rejected (0: off): a model fitted
    #: on the first days of a new world is a stopgap until more of that world is labelled.
    catch_up_every_days: Days = 2
    #: a scheduled or catch-up retrain needs this many labelled rows newer than the
    #: champion's training data.
    min_new_rows: Rows = 1000


class Window(_Section):
    """Which labelled traffic a challenger learns from, and which it is judged on."""

    #: train on at most the last N days of labelled traffic (before the holdout).
    days: PositiveDays = 28
    #: the most recent N labelled days are the holdout: never trained on; challenger and
    #: champion are both scored on them, and they become the new champion's reference.
    holdout_days: PositiveDays = 1
    #: fewer labelled training rows than this: wait for more traffic instead of retraining.
    min_rows: Annotated[int, msgspec.Meta(ge=1)] = 1500
    #: never reach back before the first day of the latest alert streak (the world changed
    #: there; older traffic describes one that is gone).
    since_drift: bool = True


def _default_params() -> dict[str, dict[str, Any]]:
    return {"hist_gb": {"max_iter": 100}}


class Training(_Section):
    """How a challenger is fitted: level 2's model catalogue, level 3's random search."""

    #: names from level 2's catalogue (linear, ridge, lasso, random_forest, hist_gb).
    models: list[str] = msgspec.field(default_factory=lambda: ["hist_gb"])
    #: random-search trials per model (trial 0 = the catalogue defaults with ``params``).
    trials: Annotated[int, msgspec.Meta(ge=1, le=50)] = 1
    seed: int = 0
    #: model -> parameters that override the catalogue's defaults.
    params: dict[str, dict[str, Any]] = msgspec.field(default_factory=_default_params)


class Promotion(_Section):
    """The rule a challenger must pass to replace the champion."""

    #: on the same holdout, the challenger's RMSE must be at least this share below the
    #: champion's (MLflow's ``MetricThreshold(min_relative_change=…)``).
    min_improvement: Share = 0.01


class Watch(_Section):
    """After a promotion: roll back to ``previous`` when the new champion does worse live."""

    #: watch the first N days the new champion serves (0: no watch).
    days: Days = 3
    #: roll back when its RMSE on those days is more than this share above the previous
    #: champion's RMSE on the same rides.
    margin: Annotated[float, msgspec.Meta(ge=0)] = 0.05
    #: fewer labelled rides than this in the watched days: keep watching, decide nothing.
    min_rows: Rows = 500


class Approval(_Section):
    """Whether a person confirms a promotion."""

    #: auto: promote when the rule passes; required: wait for ``level5 approve VERSION``.
    mode: Literal["auto", "required"] = "auto"
    #: a promotion not approved within N days is rejected (0: wait forever).
    timeout_days: Days = 7


class Policy(_Section):
    """The whole policy (see ``policy.toml``)."""

    triggers: Triggers = msgspec.field(default_factory=Triggers)
    window: Window = msgspec.field(default_factory=Window)
    training: Training = msgspec.field(default_factory=Training)
    promotion: Promotion = msgspec.field(default_factory=Promotion)
    watch: Watch = msgspec.field(default_factory=Watch)
    approval: Approval = msgspec.field(default_factory=Approval)

    def to_dict(self) -> dict[str, Any]:
        """The policy as plain data (for JSON and the events' details)."""
        return msgspec.to_builtins(self)


def default_policy_path() -> Path:
    """The documented default shipped in the package."""
    return Path(str(files("level5_automation").joinpath(DEFAULT_POLICY_NAME)))



def _check_triggers(triggers: Triggers) -> None:
    for metric, threshold in triggers.above.items():
        if metric not in TRIGGER_METRICS:
            raise ValueError(f"[triggers.above] {metric}: not a level-4 monitoring metric; use "
                             f"one of {', '.join(TRIGGER_METRICS)}")
        if not threshold > 0:
            raise ValueError(f"[triggers.above] {metric}: expected `float` > 0.0, got "
                             f"{threshold!r} (leave the metric out to watch it no more)")


def _check_training(training: Training) -> None:
    """Model names from level 2's catalogue, no model twice, parameters the model takes."""
    from level2_devops.models import MODELS

    if not training.models:
        raise ValueError(f"[training] models: give at least one of {', '.join(MODELS)}")
    for name in training.models:
        if name not in MODELS:
            raise ValueError(f"[training] models: unknown model {name!r}; use one of "
                             f"{', '.join(MODELS)}")
    if len(set(training.models)) != len(training.models):
        raise ValueError(f"[training] models: a model is listed twice in {training.models}")
    for name, params in training.params.items():
        if name not in MODELS:
            raise ValueError(f"[training.params.{name}]: unknown model {name!r}; use one of "
                             f"{', '.join(MODELS)}")
        known = _regressor_parameters(name)
        for key in params:
            if key not in known:
                raise ValueError(f"[training.params.{name}] {key}: not a parameter of {name} "
                                 f"(it takes {', '.join(sorted(known))})")
        _try_parameters(name, params)


def _regressor_parameters(name: str) -> set[str]:
    """The constructor parameters of model ``name``'s regressor (imports scikit-learn)."""
    from level2_devops.models import build_model

    return set(build_model(name).named_steps["regress"].get_params(deep=False))


def _try_parameters(name: str, params: dict[str, Any]) -> None:
    """Fit ``name`` with ``params`` on a handful of rides: scikit-learn checks the values."""
    import pandas as pd

    from level2_devops.models import build_model

    rides = pd.DataFrame({"PULocationID": [74, 75, 41, 42] * 5,
                          "DOLocationID": [75, 74, 42, 41] * 5,
                          "trip_distance": [1.0, 2.0, 3.0, 4.0] * 5})
    try:
        build_model(name, params).fit(rides, rides["trip_distance"].to_numpy() * 4.0)
    except Exception as exc:  # noqa: BLE001 - scikit-learn's own message names the parameter
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"[training.params.{name}]: {name} refuses these parameters: "
                         f"{first}") from None


def parse_policy(data: dict[str, Any], source: str = "the policy") -> Policy:
    """Validate a parsed TOML document; :class:`PolicyError` names the key at fault."""
    try:
        policy = msgspec.convert(data, Policy)
        _check_triggers(policy.triggers)
        _check_training(policy.training)
    except msgspec.ValidationError as exc:
        hint = f"the keys are in {default_policy_path()}"
        raise PolicyError(f"policy {source}: " + explain_validation_error(
            exc, data, keys_hint=hint, choices=APPROVAL_MODES)) from None
    except ValueError as exc:
        raise PolicyError(f"policy {source}: {exc}") from None
    return policy


def load_policy(path: Path | None = None) -> Policy:
    """The policy in ``path`` (default: the one shipped in the package)."""
    path = Path(path) if path is not None else default_policy_path()
    data = read_toml(path, what="policy", default=default_policy_path(), error=PolicyError)
    return parse_policy(data, str(path))


def describe(policy: Policy) -> list[str]:
    """The policy in a few lines a person reads at a glance (``policy check`` prints them)."""
    t, w, tr, p, wa, a = (policy.triggers, policy.window, policy.training, policy.promotion,
                          policy.watch, policy.approval)
    above = ", ".join(f"{m} > {v:g}" for m, v in t.above.items()) or "none"
    schedule = f"every {t.every_days} days" if t.every_days else "no schedule"
    catch_up = (f"every {t.catch_up_every_days} days while catching up after a drift"
                if t.catch_up_every_days else "no catch-up")
    watch = (f"{wa.days} days, roll back when RMSE > previous x {1 + wa.margin:g}"
             if wa.days else "off")
    return [
        f"triggers: alert when {above} (days with >= {t.min_labelled_rows} labelled rows); "
        f"retrain on an alert at most every {t.cooldown_days} day(s), {schedule}, {catch_up} "
        f"(>= {t.min_new_rows} new labelled rows)",
        f"window: the last {w.days} labelled days before a {w.holdout_days}-day holdout, "
        f">= {w.min_rows} rows" + (", never before the latest drift" if w.since_drift else ""),
        f"training: {', '.join(tr.models)}, {tr.trials} trial(s) each, seed {tr.seed}",
        f"promotion: challenger RMSE at least {p.min_improvement:.1%} below the champion's "
        "on the holdout",
        f"watch: {watch}",
        f"approval: {a.mode}" + (f" (rejected after {a.timeout_days} days without an answer)"
                                 if a.mode == "required" and a.timeout_days else ""),
    ]

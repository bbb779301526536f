"""A/B analysis of champion vs challenger on the logged predictions joined with their actuals.

The design is fixed before the test starts (a fixed-horizon test):

- the metric is the **absolute error** of each served prediction, in minutes; the question is
  whether the challenger's mean absolute error differs from the champion's;
- the sample size per variant is chosen in advance by a power calculation
  (:func:`required_samples`: Cohen's d = 0.1, i.e. about 0.6 minutes on an absolute-error
  standard deviation of about 6 minutes; alpha = 0.05 two-sided; power = 0.8 → 1,571 rides per
  variant);
- the test runs once, on the first ``min_samples`` rides of each variant. Until both variants
  have them, the verdict is "not enough data" and no p-value is shown. Looking at the p-value
  every day and stopping at the first p < 0.05 ("peeking") inflates the false-positive rate far
  above 5%; a fixed horizon keeps it at alpha.

Statistics come from scipy: Welch's t-test on the absolute errors (``ttest_ind(equal_var=False)``)
and a seeded bootstrap confidence interval of the difference in MAE (``scipy.stats.bootstrap``).
Where the log holds shadow predictions (the other model's answer for the same ride), a paired
analysis (``ttest_rel`` and a paired bootstrap) compares both models on the same rides.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from taxi_common.errors import BadInputError

CHAMPION, CHALLENGER = "champion", "challenger"
EFFECT_SIZE = 0.1  # Cohen's d on the absolute errors: ~0.6 min when their sd is ~6 min
ALPHA = 0.05
POWER = 0.8
#: The power calculation behind DEFAULT_MIN_SAMPLES (a test recomputes it with statsmodels,
#: which takes 2-3 s to import, so it is not recomputed on every report).
POWER_CALCULATION = ("TTestIndPower().solve_power(effect_size=0.1, alpha=0.05, power=0.8, "
                     "alternative='two-sided') = 1570.73 -> 1571 rides per variant")
DEFAULT_MIN_SAMPLES = 1571
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
SEED = 0
NOT_ENOUGH_DATA = "not enough data"
NO_DIFFERENCE = "no significant difference"
CHALLENGER_BETTER = "challenger better"
CHALLENGER_WORSE = "challenger worse"


def required_samples(effect_size: float = EFFECT_SIZE, alpha: float = ALPHA,
                     power: float = POWER) -> int:
    """Rides per variant a two-sided Welch/Student t-test needs to detect ``effect_size``
    (Cohen's d) with probability ``power`` at level ``alpha`` (statsmodels ``TTestIndPower``)."""
    from statsmodels.stats.power import TTestIndPower

    n = TTestIndPower().solve_power(effect_size=effect_size, alpha=alpha, power=power,
                                    ratio=1.0, alternative="two-sided")
    return math.ceil(n)


def design(min_samples: int = DEFAULT_MIN_SAMPLES) -> dict[str, Any]:
    """The test's design, as fixed before it starts."""
    return {"metric": "absolute error (minutes)", "test": "Welch's t-test, two-sided",
            "effect_size_d": EFFECT_SIZE, "alpha": ALPHA, "power": POWER,
            "min_samples_per_variant": min_samples, "power_calculation": POWER_CALCULATION}


def _errors(frame: pd.DataFrame, prediction: str = "prediction") -> np.ndarray:
    return np.abs(frame[prediction].to_numpy(float) - frame["duration"].to_numpy(float))


def _variant_summary(frame: pd.DataFrame) -> dict[str, Any]:
    errors = _errors(frame)
    return {"n": int(len(frame)),
            "mae": float(errors.mean()) if len(frame) else None,
            "rmse": float(np.sqrt(np.mean(errors ** 2))) if len(frame) else None,
            "versions": {str(k): int(v) for k, v in
                         frame["model_version"].value_counts().sort_index().items()}}


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def _verdict(p_value: float, difference: float) -> str:
    if not p_value < ALPHA:  # also when p is NaN (no variation at all)
        return NO_DIFFERENCE
    return CHALLENGER_BETTER if difference < 0 else CHALLENGER_WORSE


def _unpaired_test(champion: np.ndarray, challenger: np.ndarray) -> dict[str, Any]:
    """Welch's t-test and a bootstrap CI of MAE(challenger) - MAE(champion)."""
    from scipy import stats

    welch = stats.ttest_ind(challenger, champion, equal_var=False)
    interval = stats.bootstrap((challenger, champion), _mean_difference, vectorized=True,
                               n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=CONFIDENCE,
                               method="percentile", batch=200,
                               rng=np.random.default_rng(SEED)).confidence_interval
    difference = float(challenger.mean() - champion.mean())
    return {"mae_difference": difference, "ci_low": float(interval.low),
            "ci_high": float(interval.high), "confidence": CONFIDENCE,
            "welch_t": float(welch.statistic), "p_value": float(welch.pvalue),
            "verdict": _verdict(float(welch.pvalue), difference)}


def _paired_errors(joined: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Absolute errors of champion and challenger on the same rides (shadow predictions)."""
    shadowed = joined[joined["shadow_prediction"].notna()
                      & joined["variant"].isin([CHAMPION, CHALLENGER])]
    served, shadow = _errors(shadowed), _errors(shadowed, "shadow_prediction")
    by_champion = (shadowed["variant"] == CHAMPION).to_numpy()
    return (np.where(by_champion, served, shadow), np.where(by_champion, shadow, served))


def _paired_test(champion: np.ndarray, challenger: np.ndarray) -> dict[str, Any]:
    """``ttest_rel`` and a paired bootstrap CI of the mean difference in absolute error."""
    from scipy import stats

    paired = stats.ttest_rel(challenger, champion)
    interval = stats.bootstrap((challenger - champion,), np.mean, vectorized=True,
                               n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=CONFIDENCE,
                               method="percentile", batch=200,
                               rng=np.random.default_rng(SEED)).confidence_interval
    difference = float(np.mean(challenger - champion))
    return {"mae_difference": difference, "ci_low": float(interval.low),
            "ci_high": float(interval.high), "confidence": CONFIDENCE,
            "t": float(paired.statistic), "p_value": float(paired.pvalue),
            "verdict": _verdict(float(paired.pvalue), difference)}


def _paired_section(joined: pd.DataFrame, min_samples: int) -> dict[str, Any] | None:
    champion, challenger = _paired_errors(joined)
    if not len(champion):
        return None
    section: dict[str, Any] = {"available": int(len(champion)), "analysed": 0,
                               "verdict": NOT_ENOUGH_DATA}
    if len(champion) >= min_samples:
        champion, challenger = champion[:min_samples], challenger[:min_samples]
        section.update(analysed=min_samples, mae_champion=float(champion.mean()),
                       mae_challenger=float(challenger.mean()),
                       **_paired_test(champion, challenger))
    return section


def ab_report(joined: pd.DataFrame, min_samples: int = DEFAULT_MIN_SAMPLES) -> dict[str, Any]:
    """Champion vs challenger on ``joined`` (``store.joined_predictions``: rows with a known
    duration, in logging order).

    The test uses the first ``min_samples`` rides of each variant; with fewer, the verdict is
    "not enough data" and no test is run.
    """
    if min_samples < 2:
        raise BadInputError(f"--min-samples {min_samples}: a test needs at least 2 per variant")
    labelled = joined[joined["duration"].notna()]
    by_variant = {name: labelled[labelled["variant"] == name] for name in (CHAMPION, CHALLENGER)}
    report: dict[str, Any] = {
        "design": design(min_samples),
        "variants": {name: _variant_summary(frame) for name, frame in by_variant.items()},
        "analysed_per_variant": 0, "test": None, "verdict": NOT_ENOUGH_DATA,
        "paired": _paired_section(labelled, min_samples),
    }
    if min(len(frame) for frame in by_variant.values()) >= min_samples:
        champion = _errors(by_variant[CHAMPION].iloc[:min_samples])
        challenger = _errors(by_variant[CHALLENGER].iloc[:min_samples])
        report["analysed_per_variant"] = min_samples
        report["test"] = _unpaired_test(champion, challenger)
        report["verdict"] = report["test"]["verdict"]
    return report


def peeking_false_positives(errors: np.ndarray, *, looks: int = 10,
                            min_samples: int = DEFAULT_MIN_SAMPLES, repeats: int = 2000,
                            seed: int = SEED) -> dict[str, float]:
    """Why peeking is wrong, measured: A/A tests (both arms drawn from the same ``errors``)
    checked at ``looks`` evenly spaced sample sizes up to ``min_samples``. Returns the share of
    tests declared significant when stopping at the first p < alpha, and at the fixed horizon
    only (about alpha)."""
    from scipy import stats

    rng = np.random.default_rng(seed)
    sizes = np.linspace(min_samples / looks, min_samples, looks).astype(int)
    peeking = fixed = 0
    for _ in range(repeats):
        a, b = rng.choice(errors, min_samples), rng.choice(errors, min_samples)
        p_values = [stats.ttest_ind(a[:n], b[:n], equal_var=False).pvalue for n in sizes]
        peeking += any(p < ALPHA for p in p_values)
        fixed += p_values[-1] < ALPHA
    return {"looks": looks, "repeats": repeats, "peeking": float(peeking / repeats),
            "fixed_horizon": float(fixed / repeats)}


def format_report(report: dict[str, Any]) -> str:
    """The report as a few lines of text."""
    lines = [f"{'variant':<11}{'n':>8}{'MAE':>9}{'RMSE':>9}  versions"]
    for name, v in report["variants"].items():
        mae = f"{v['mae']:.3f}" if v["mae"] is not None else "-"
        rmse = f"{v['rmse']:.3f}" if v["rmse"] is not None else "-"
        versions = ", ".join(f"{k} ({n})" for k, n in v["versions"].items()) or "-"
        lines.append(f"{name:<11}{v['n']:>8}{mae:>9}{rmse:>9}  {versions}")
    need = report["design"]["min_samples_per_variant"]
    test = report["test"]
    if test is None:
        lines.append(f"verdict: {report['verdict']} (the test runs once both variants have "
                     f"{need} rides with actuals)")
    else:
        lines.append(f"MAE challenger - champion: {test['mae_difference']:+.3f} min, "
                     f"{test['confidence']:.0%} CI [{test['ci_low']:+.3f}, {test['ci_high']:+.3f}]"
                     f"; Welch p = {test['p_value']:.3g} on the first {need} rides per variant")
        lines.append(f"verdict: {report['verdict']}")
    paired = report["paired"]
    if paired is not None:
        if paired["verdict"] == NOT_ENOUGH_DATA:
            lines.append(f"paired (shadow): {paired['available']} rides, {NOT_ENOUGH_DATA}")
        else:
            lines.append(f"paired (shadow, {paired['analysed']} rides): difference "
                         f"{paired['mae_difference']:+.3f} min, CI [{paired['ci_low']:+.3f}, "
                         f"{paired['ci_high']:+.3f}], p = {paired['p_value']:.3g}: "
                         f"{paired['verdict']}")
    return "\n".join(lines)

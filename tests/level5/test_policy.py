"""The policy TOML: the shipped default is documented and complete; every error names its key
and says how to fix it; ``level5 policy check``."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from level5_automation.policy import (
    TRIGGER_METRICS,
    Policy,
    PolicyError,
    default_policy_path,
    load_policy,
    parse_policy,
)


def test_the_shipped_file_is_the_default_and_sets_every_key() -> None:
    assert load_policy() == Policy()
    shipped = tomllib.loads(default_policy_path().read_text())
    defaults = msgspec.to_builtins(Policy())
    assert {s: set(keys) for s, keys in shipped.items()} == \
        {s: set(keys) for s, keys in defaults.items()}


def test_every_shipped_key_is_commented() -> None:
    for line in default_policy_path().read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            assert "#" in line, f"undocumented setting: {line}"


def test_the_trigger_metrics_are_level_4s_monitoring_metrics() -> None:
    from level4_deployment.monitoring import MONITORED

    level4 = {"mae_ratio", "rmse_ratio", "drift_share", "missing_share",
              *(f"drift_{c}" for c in MONITORED)}
    assert set(TRIGGER_METRICS) == level4


def test_a_partial_file_keeps_the_other_defaults(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('[approval]\nmode = "required"\n\n[triggers]\nabove = { drift_share = 0.3 }\n')
    policy = load_policy(path)
    assert policy.approval.mode == "required" and policy.approval.timeout_days == 7
    assert policy.triggers.above == {"drift_share": 0.3}
    assert policy.window == Policy().window and policy.training == Policy().training


@pytest.mark.parametrize(("data", "message"), [
    ({"watch": {"margin": -1}}, "[watch] margin: expected `float` >= 0.0, got -1"),
    ({"window": {"days": 0}}, "[window] days: expected `int` >= 1, got 0"),
    ({"window": {"since_drift": "yes"}}, "[window] since_drift: expected `bool`, got `str`"),
    ({"promotion": {"min_improvement": 2}},
     "[promotion] min_improvement: expected `float` <= 1.0, got 2"),
    ({"approval": {"mode": "manual"}}, "[approval] mode: 'manual' is not one of auto, required"),
    ({"triggers": {"above": {"mae_ration": 1.2}}},
     "[triggers.above] mae_ration: not a level-4 monitoring metric; use one of mae_ratio"),
    ({"triggers": {"above": {"mae_ratio": 0}}},
     "[triggers.above] mae_ratio: expected `float` > 0.0, got 0"),
    ({"triggers": {"every_day": 7}}, "[triggers] every_day is not a setting (the keys are in"),
    ({"tirggers": {}}, "[tirggers] is not a setting"),
    ({"training": {"models": ["xgboost"]}},
     "[training] models: unknown model 'xgboost'; use one of linear, ridge"),
    ({"training": {"models": []}}, "[training] models: give at least one of linear"),
    ({"training": {"params": {"hist_gb": {"max_iters": 100}}}},
     "[training.params.hist_gb] max_iters: not a parameter of hist_gb (it takes"),
    ({"training": {"params": {"ridge": {"alpha": -1.0}}}},
     "[training.params.ridge]: ridge refuses these parameters: The 'alpha' parameter of Ridge"),
])
def test_a_bad_value_is_one_error_naming_its_key(data: dict, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(data, "mine.toml")
    assert str(caught.value).startswith("policy mine.toml: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_or_broken_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="does not exist .the documented default is"):
        load_policy(tmp_path / "none.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[watch\ndays = 3")
    with pytest.raises(PolicyError, match=r"broken.toml is not valid TOML"):
        load_policy(broken)


def test_policy_check_prints_the_policy_or_one_error_line(
        cli: Callable[..., Any], tmp_path: Path) -> None:
    shipped = cli("policy", "check", str(default_policy_path()))
    assert shipped.exit_code == 0, shipped.output
    assert "is valid" in shipped.output and "approval: auto" in shipped.output
    as_json = cli("policy", "check", "--json")
    assert json.loads(as_json.output) == msgspec.to_builtins(Policy())

    bad = tmp_path / "bad.toml"
    bad.write_text("[watch]\nmargin = -0.1\n")
    result = cli("policy", "check", str(bad))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: policy {bad}: [watch] margin: expected `float` >= 0.0, got -0.1"]

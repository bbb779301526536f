"""The monitoring TOML: the shipped default is documented and complete; errors name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec
import pytest

from level4_deployment.monitoring_config import (
    ConfigError,
    MonitoringConfig,
    default_config_path,
    load_config,
    parse_config,
)


def test_the_shipped_file_is_the_default_and_sets_every_key() -> None:
    assert load_config() == MonitoringConfig()
    shipped = tomllib.loads(default_config_path().read_text())
    defaults = msgspec.to_builtins(MonitoringConfig())
    assert {s: set(keys) for s, keys in shipped.items()} == \
        {s: set(keys) for s, keys in defaults.items()}


def test_every_shipped_key_is_commented() -> None:
    for line in default_config_path().read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            assert "#" in line, f"undocumented setting: {line}"


def test_a_partial_file_keeps_the_other_defaults(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text("[thresholds]\nmae_ratio = 1.3\n\n[alerts]\n"
                    "webhook_url = \"http://127.0.0.1:9/hook\"\n")
    config = load_config(path)
    assert config.thresholds.mae_ratio == 1.3 and config.thresholds.rmse_ratio == 1.2
    assert config.alerts.webhook_url == "http://127.0.0.1:9/hook"
    assert config.drift == MonitoringConfig().drift


@pytest.mark.parametrize(("data", "message"), [
    ({"thresholds": {"mae_ratio": "high"}},
     "[thresholds] mae_ratio: expected `float`, got `str`"),
    ({"thresholds": {"mae_ratio": -1}}, "[thresholds] mae_ratio: expected `float` > 0.0, got -1"),
    ({"thresholds": {"drift_share": 1.5}}, "[thresholds] drift_share: expected `float` <= 1.0"),
    ({"thresholds": {"mae_ration": 1.2}}, "[thresholds] mae_ration is not a setting"),
    ({"treshold": {}}, "[treshold] is not a setting"),
    ({"sampling": {"day_rows": 10}}, "[sampling] day_rows: expected `int` >= 100, got 10"),
    ({"drift": {"numerical_method": "ks"}},
     "[drift] numerical_method: 'ks' is not one of wasserstein"),
    ({"drift": {"categorical_method": "wasserstein"}},
     "[drift] categorical_method: 'wasserstein' is not one of jensenshannon"),
    ({"alerts": {"webhook_url": "hooks.example.com"}},
     "[alerts] webhook_url: 'hooks.example.com' is not an http(s) URL"),
])
def test_a_bad_value_is_one_error_naming_its_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "mine.toml")
    assert str(caught.value).startswith("monitoring config mine.toml: ")
    assert message in str(caught.value)


def test_a_missing_or_broken_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[thresholds\nmae_ratio = 1")
    with pytest.raises(ConfigError, match=r"broken.toml is not valid TOML"):
        load_config(broken)

"""Named drift scenarios for synthetic data: what changes, from which day, how strongly."""

from __future__ import annotations

from dataclasses import dataclass

from taxi_common.errors import BadInputError

#: What each scenario shifts, in words a class can read.
SCENARIOS: dict[str, str] = {
    "baseline": "no drift: trips as calibrated on the real months",
    "congestion": "trips slow down in part of the city (Manhattan) from the start day",
    "hotspot": "demand shifts to new zone pairs from the start day",
    "data-quality": "missing values appear and some distances are reported in the wrong unit",
}


@dataclass(frozen=True)
class Scenario:
    """A drift scenario: ``name`` from :data:`SCENARIOS`, active from ``start_day`` of the month
    (1 = the whole month), with ``strength`` (0 = no effect, 1 = the calibrated default)."""

    name: str = "baseline"
    start_day: int = 1
    strength: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in SCENARIOS:
            raise BadInputError(
                f"unknown scenario {self.name!r}: use one of {', '.join(SCENARIOS)}"
            )
        if not 1 <= self.start_day <= 31:
            raise BadInputError(
                f"scenario start day {self.start_day} is not a day of a month (1-31)"
            )
        if not 0.0 <= self.strength <= 5.0:
            raise BadInputError(f"scenario strength {self.strength} must lie between 0 and 5")


def as_scenario(value: Scenario | str) -> Scenario:
    """A :class:`Scenario` from itself or from a bare name."""
    return value if isinstance(value, Scenario) else Scenario(name=value)

"""Sticky A/B routing: the split is P %, a ride keeps its variant across processes."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys

import pytest

from level4_deployment.routing import CHALLENGER, bucket, choose_variant, parse_ab
from taxi_common.errors import BadInputError


def test_challenger_share_is_p_percent_within_four_binomial_sds() -> None:
    n, share = 5000, 0.10
    hits = sum(choose_variant(f"ride-{i}", share) == CHALLENGER for i in range(n))
    assert abs(hits - n * share) <= 4 * math.sqrt(n * share * (1 - share))


def test_random_split_without_ride_id_is_p_percent_too() -> None:
    rng = random.Random(7)
    n, share = 5000, 0.3
    hits = sum(choose_variant(None, share, rng=rng) == CHALLENGER for _ in range(n))
    assert abs(hits - n * share) <= 4 * math.sqrt(n * share * (1 - share))


def test_the_same_ride_gets_the_same_bucket_in_another_process() -> None:
    ids = [f"ride-{i}" for i in range(50)]
    here = [bucket(i) for i in ids]
    code = ("import sys; from level4_deployment.routing import bucket; "
            "print(repr([bucket(i) for i in sys.argv[1:]]))")
    env = {**os.environ, "PYTHONHASHSEED": "123"}  # another str-hash salt than ours
    out = subprocess.run([sys.executable, "-c", code, *ids], capture_output=True, text=True,
                         check=True, env=env).stdout
    assert eval(out) == here  # noqa: S307 - our own repr of floats
    assert len(set(here)) == len(here) and all(0.0 <= b < 1.0 for b in here)


def test_salt_changes_the_assignment() -> None:
    same = sum((bucket(f"r{i}", "a") < 0.5) == (bucket(f"r{i}", "b") < 0.5) for i in range(2000))
    assert 800 < same < 1200  # independent halves agree about half the time


@pytest.mark.parametrize(("spec", "share"), [(None, 0.0), ("", 0.0), ("challenger=10", 0.1),
                                            ("challenger=0", 0.0), ("challenger=100", 1.0)])
def test_parse_ab(spec: str | None, share: float) -> None:
    assert parse_ab(spec) == pytest.approx(share)


@pytest.mark.parametrize("spec", ["champion=10", "challenger=", "challenger=101", "10",
                                  "challenger=-1", "challenger=nan"])
def test_parse_ab_rejects_bad_specs_in_one_line(spec: str) -> None:
    with pytest.raises(BadInputError, match="--ab"):
        parse_ab(spec)

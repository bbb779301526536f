"""``deploy`` against a real MLflow registry: a better challenger is promoted, a worse one is
refused with the gate named and the champion unchanged."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from level3_training.registry import aliases, client_for
from level4_deployment.deploy import DEPLOY_ACTOR, default_holdout, deploy
from taxi_common.errors import BadInputError
from taxi_common.settings import Settings


def test_better_challenger_is_promoted_worse_is_refused(
        settings: Settings, registrar: Callable[..., str]) -> None:
    from level3_training.registry import ACTOR_TAG, PROMOTED_AT_TAG, REASON_TAG, REPLACED_TAG

    client = client_for(settings.tracking_uri)
    first = registrar(settings, "mean", "champion")
    better = registrar(settings, "linear", "challenger")

    result = deploy(settings)  # the challenger, on the month after its validation month
    assert result.promoted and result.report.passed
    assert result.report.holdout.startswith("synthetic green 2021-03")
    assert result.report.candidate_rmse < result.report.champion_rmse
    assert aliases(client) == {"champion": better, "previous": first}
    tags = client.get_model_version("taxi-duration", better).tags
    assert tags[REPLACED_TAG] == first and tags[PROMOTED_AT_TAG]
    assert tags[REASON_TAG].startswith("deploy gate passed on synthetic green 2021-03")
    assert tags[ACTOR_TAG] == DEPLOY_ACTOR

    worse = registrar(settings, "mean", "challenger")
    refused = deploy(settings, margin=0.01)
    assert not refused.promoted and refused.report.failed == ["rmse"]
    assert refused.report.candidate_version == worse
    assert aliases(client) == {"champion": better, "previous": first, "challenger": worse}


def test_dry_run_and_explicit_version_change_nothing(settings: Settings,
                                                     registrar: Callable[..., str]) -> None:
    client = client_for(settings.tracking_uri)
    champion = registrar(settings, "linear", "champion")
    candidate = registrar(settings, "ridge", "challenger")
    before = aliases(client)
    result = deploy(settings, version=candidate, holdout_month="2021-04", dry_run=True)
    assert result.report.passed and not result.promoted
    assert result.report.holdout.startswith("synthetic green 2021-04")
    assert aliases(client) == before
    with pytest.raises(BadInputError, match="champion already"):
        deploy(settings, version=champion)
    with pytest.raises(BadInputError, match="--margin"):
        deploy(settings, margin=2.0)
    assert aliases(client) == before


def test_default_holdout_reads_the_lineage() -> None:
    spec = default_holdout({"data.val_month": "2021-12", "data.source": "tlc",
                            "data.seed": "3", "data.n_rows_cap": "None"})
    assert (spec.month, spec.source, spec.seed, spec.n_rows) == ("2022-01", "tlc", 3, None)
    with pytest.raises(BadInputError, match="--holdout-month"):
        default_holdout({})

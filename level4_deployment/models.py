"""Registry versions as serving models: the one way level 4 turns ``champion`` or ``3`` into a
model that predicts from arrays (level 2's ``serving_model``: the zone-pair lookup for linear
pipelines, the pipeline otherwise)."""

from __future__ import annotations

from typing import Any

from taxi_common.settings import Settings


def load_serving_model(settings: Settings, alias_or_version: str) -> tuple[str, Any]:
    """``(version, serving model)`` of a pinned registry version (an alias is resolved once)."""
    from level2_devops.service.model_source import serving_model
    from level3_training.registry import client_for, load_version

    version, pipeline = load_version(client_for(settings.tracking_uri), alias_or_version)
    return version, serving_model(pipeline, version)

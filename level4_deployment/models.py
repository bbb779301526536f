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


def version_signature(client: Any, version: str, name: str | None = None) -> Any:
    """The ``ModelSignature`` logged with a registered version (None without one), read from
    its ``MLmodel`` file through the client's own URIs."""
    import tempfile

    import mlflow
    from mlflow.models import Model

    from level3_training.registry import MODEL_NAME

    location = client.get_model_version_download_uri(name or MODEL_NAME, str(version))
    with tempfile.TemporaryDirectory(prefix="taxi-mlmodel-") as folder:
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"{location.rstrip('/')}/MLmodel",
                                                   dst_path=folder,
                                                   tracking_uri=client.tracking_uri)
        return Model.load(path).signature

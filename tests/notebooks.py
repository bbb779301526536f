"""What every notebook test checks of a committed notebook: its papermill parameters cell and
that it was committed without outputs."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any


def parameters_cell(nb: dict[str, Any]) -> dict[str, Any]:
    """The names and literal values of the one cell tagged ``parameters``."""
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{len(tagged)} cells tagged 'parameters'"
    tree = ast.parse("".join(tagged[0]["source"]))
    return {target.id: ast.literal_eval(node.value) for node in tree.body
            if isinstance(node, ast.Assign) for target in node.targets}


def committed_clean(path: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Check that the notebook at ``path`` runs on the python3 kernel, has no outputs or
    execution counts, and takes every name of ``overrides`` as a parameter (papermill
    ignores unknown names: a rename must fail a test); its parameters' defaults."""
    nb = json.loads(Path(path).read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    defaults = parameters_cell(nb)
    assert set(overrides) <= set(defaults), set(overrides) - set(defaults)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    return defaults

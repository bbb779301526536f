"""``promtool check metrics`` (Debian's ``prometheus`` package) on a service's /metrics text.

promtool parses the exposition and lints it (names with base units, counters ending in
``_total``, help texts...); it exits 0 only when it has nothing to say. Where it is not
installed (``.ci/run`` installs it), the test skips with the reason.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest


def promtool_check_metrics(text: bytes) -> None:
    """Assert that promtool accepts ``text``, lint included; skip where promtool is missing."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed: install Debian's prometheus package "
                    "(.ci/run does) to lint /metrics")
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                            timeout=60, check=False)
    report = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, f"promtool check metrics exit {result.returncode}: {report}"

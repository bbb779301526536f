"""Follow the registry's aliases in a serving worker: poll, load the pinned version, swap.

``AliasWatcher`` keeps, per alias (``champion``, ``challenger``), the model currently served.
A check asks the registry which version each alias points at (one small request that reads
every alias at once, so champion and challenger come from the same moment); when a version
changed it loads *that pinned version*
(``models:/taxi-duration/<v>``, never ``@alias`` a second time: the alias may move again between
the two calls) and swaps it in with one reference assignment, so a request sees either the old
model or the new one, never a half-loaded one. Checks run on a background thread started after
gunicorn forks (a thread started in the preloaded master would not exist in the workers), every
``interval`` seconds with ±``jitter`` so that N workers do not poll in step.

When the registry cannot be reached the watcher keeps the last good models and records the
error; ``status()`` is what ``/health`` shows.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

_log = logging.getLogger(__name__)

#: every alias of the model -> its version (an unset alias is absent); raises when the
#: registry cannot be read.
ReadAliases = Callable[[], Mapping[str, str]]
#: version -> a model ready to serve (level 2's ``LoadedModel``).
LoadVersion = Callable[[str], Any]


@dataclass(frozen=True)
class AliasModel:
    """The model an alias resolved to, and when it was loaded."""

    alias: str
    version: str
    model: Any
    loaded_at: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class AliasWatcher:
    """The served model of each alias, kept in step with the registry by :meth:`check`."""

    def __init__(self, aliases: Sequence[str], read_aliases: ReadAliases, load: LoadVersion, *,
                 interval: float = 5.0, jitter: float = 0.2,
                 rng: random.Random | None = None) -> None:
        self.aliases = tuple(aliases)
        self._read_aliases, self._load = read_aliases, load
        self.interval, self.jitter = interval, jitter
        self._rng = rng or random.Random()
        self._models: Mapping[str, AliasModel] = {}
        self._last_check: str | None = None
        self._last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._check_lock = threading.Lock()

    def get(self, alias: str) -> AliasModel | None:
        """The model served for ``alias`` now, or None (never loaded, or alias not set)."""
        return self._models.get(alias)

    def check(self) -> bool:
        """Resolve every alias once; load and swap in what moved. True when something changed.

        A registry error leaves the served models as they are and is kept for ``status()``.
        """
        with self._check_lock:
            try:
                found = self._read_aliases()
                wanted = {alias: found.get(alias) for alias in self.aliases}
                current = dict(self._models)
                changed = False
                for alias, version in wanted.items():
                    if version is None:
                        changed |= current.pop(alias, None) is not None
                    elif alias not in current or current[alias].version != version:
                        same = next((m for m in current.values() if m.version == version), None)
                        model = same.model if same else self._load(version)
                        current[alias] = AliasModel(alias, version, model, _now())
                        changed = True
            except Exception as exc:  # noqa: BLE001 - any registry failure keeps the last models
                self._last_error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                self._last_check = _now()
                _log.warning("registry check failed, serving the last good models: %s",
                             self._last_error)
                return False
            if changed:
                self._models = current  # one assignment: readers see old or new, never half
                _log.info("serving %s", {a: m.version for a, m in current.items()})
            self._last_check, self._last_error = _now(), None
            return changed

    def next_delay(self) -> float:
        """Seconds to the next check: ``interval`` ± ``jitter`` × interval."""
        return max(0.05, self.interval * (1.0 + self._rng.uniform(-self.jitter, self.jitter)))

    def start(self, *, check_first: bool = False) -> None:
        """Start the polling thread (call it in the worker, after fork); with ``check_first``
        its first check is at once (a worker forked from a master that could not load the
        champion retries right away). Idempotent."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(check_first,),
                                        name="alias-watcher", daemon=True)
        self._thread.start()

    def _run(self, check_first: bool) -> None:
        if check_first:
            self.check()
        while not self._stop.wait(self.next_delay()):
            self.check()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the polling thread and wait for it (a check in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def status(self) -> dict[str, Any]:
        """Versions per alias, the last check and its error: what ``/health`` reports."""
        return {"versions": {a: m.version for a, m in self._models.items()},
                "loaded_at": {a: m.loaded_at for a, m in self._models.items()},
                "last_check": self._last_check, "last_error": self._last_error,
                "reload_interval_s": self.interval}

    def wait_until_loaded(self, alias: str, timeout: float, *, retry_every: float = 1.0) -> bool:
        """Check until ``alias`` has a model or ``timeout`` passes (a service starting while the
        registry is down keeps retrying in the background instead)."""
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            if self.get(alias) is not None:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(retry_every, max(0.0, deadline - time.monotonic())))

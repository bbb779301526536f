"""The events table: every decision of the loop, with its reason, in level 4's database.

One row per decision: the (virtual) ``day``, the ``kind``, the model ``version`` it concerns,
a one-line ``reason`` and JSON ``details``. The table lives beside level 4's prediction log,
actuals and monitoring metrics (:func:`level4_deployment.store.engine_for`: SQLite under
``WORKBOOK_HOME`` by default, PostgreSQL by ``DATABASE_URL``).

Each recorded event is also logged (logger ``level5_automation.events``) and, when a Prefect API
is configured (``PREFECT_API_URL``), emitted as a Prefect event (``level5.<kind>``) so that it
shows in Prefect's UI and automations can react to it. Without one nothing is emitted: a
temporary Prefect server is never started for an event.

A Prefect server may serve several workbooks (team members, a simulation beside the real loop):
the events are about the workbook's own resource, ``mlops-levels.level5.taxi-duration.<id>``,
where ``<id>`` is :func:`workbook_id` (the setting ``WORKBOOK_ID``, else 8 hex digits derived
from the resolved ``WORKBOOK_HOME``), and the retrain automation of a workbook matches only its
resource.

Kinds:

- ``alert``: a monitored day broke a trigger threshold of the policy;
- ``retrain``: a challenger was trained and registered (``@challenger``);
- ``promote``: a version became ``@champion``;
- ``reject``: a challenger was refused (the promotion rule, a reviewer, an approval timeout);
- ``pending``: a challenger passed the rule and waits for a person (``approval = "required"``);
- ``approve``: a person approved a pending version (the loop promotes it at its next tick);
- ``rollback``: the watch put ``@previous`` back;
- ``watch``: a new champion's watch ended and it stays;
- ``error``: a step failed (training raised, the registry did not answer); the champion stays.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    select,
)

from taxi_common.errors import BadInputError
from taxi_common.settings import Settings

logger = logging.getLogger(__name__)

KINDS = ("alert", "retrain", "promote", "reject", "rollback", "pending", "approve", "watch",
         "error")
#: The kinds that answer a ``pending`` event of the same version (``approve`` marks it approved;
#: ``promote`` or ``reject`` end it).
RESOLVING = ("approve", "reject", "promote")
#: The prefix of a workbook's Prefect resource id (:func:`resource_id` adds the workbook's id).
PREFECT_RESOURCE = "mlops-levels.level5.taxi-duration"
#: What a ``WORKBOOK_ID`` may be: it ends up in resource ids, deployment names and pause keys.
WORKBOOK_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only

metadata = MetaData()

events = Table(
    "events", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("day", Date, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("version", String(64)),
    Column("reason", Text, nullable=False),
    Column("details", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Index("ix_events_day", "day"),
)


@dataclass(frozen=True)
class Event:
    """One decision: when (the loop's day), what, about which version, and why."""

    day: dt.date
    kind: str
    reason: str
    version: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"event kind {self.kind!r} is not one of {', '.join(KINDS)}")

    def as_dict(self) -> dict[str, Any]:
        """The event as the simulation's JSON writes it (no database id)."""
        return {"date": self.day.isoformat(), "kind": self.kind, "version": self.version,
                "reason": self.reason, "details": self.details}

    def line(self) -> str:
        """One line for a terminal: ``2021-02-03  promote   v3  reason``."""
        version = f"v{self.version}" if self.version else "-"
        return f"{self.day.isoformat()}  {self.kind:<8}  {version:<4}  {self.reason}"


def create_events_table(engine: Engine) -> None:
    """Create the events table if it does not exist (safe when another process does it too)."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    for attempt in range(3):
        try:
            metadata.create_all(engine)
            return
        except (OperationalError, ProgrammingError) as exc:
            if "already exists" not in str(exc) or attempt == 2:
                raise


def _json(details: Mapping[str, Any]) -> str:
    return json.dumps(details, sort_keys=True, default=str)


def record_event(engine: Engine, event: Event, *, settings: Settings | None = None) -> Event:
    """Store ``event``, log it, and emit it to Prefect when ``settings`` name a Prefect API;
    the stored event (with its id)."""
    from level4_deployment.store import utc_now

    emit_to = settings if settings is not None and settings.prefect_api_url else None
    if emit_to is not None:
        workbook_id(emit_to)  # a wrong WORKBOOK_ID is an error before the row is stored
    with engine.begin() as conn:
        result = conn.execute(events.insert().values(
            day=event.day, kind=event.kind, version=event.version, reason=event.reason,
            details=_json(event.details), created_at=utc_now()))
        stored = Event(event.day, event.kind, event.reason, event.version,
                       json.loads(_json(event.details)), int(result.inserted_primary_key[0]))
    level = logging.WARNING if event.kind in ("alert", "error", "rollback") else logging.INFO
    logger.log(level, "%s", stored.line())
    if emit_to is not None:
        emit_to_prefect(stored, emit_to)
    return stored


def workbook_id(settings: Settings) -> str:
    """The workbook's short stable id on a shared Prefect server: the setting ``WORKBOOK_ID``
    (lower-case letters, digits and dashes, at most 32), else the first 8 hex digits of the
    SHA-256 of the resolved ``WORKBOOK_HOME`` path — the same folder gives the same id in every
    process, a copy of a workbook in another folder another one. Two machines whose workbooks
    have the same path and share one server need ``WORKBOOK_ID``."""
    if settings.workbook_id is not None:
        if not WORKBOOK_ID_PATTERN.fullmatch(settings.workbook_id):
            raise BadInputError(f"WORKBOOK_ID {settings.workbook_id!r}: lower-case letters, "
                                "digits and dashes, at most 32, starting with a letter or digit")
        return settings.workbook_id
    home = str(Path(settings.workbook_home).expanduser().resolve())
    return hashlib.sha256(home.encode()).hexdigest()[:8]


def resource_id(settings: Settings) -> str:
    """The workbook's Prefect resource: ``mlops-levels.level5.taxi-duration.<workbook id>``."""
    return f"{PREFECT_RESOURCE}.{workbook_id(settings)}"


def prefect_resource(settings: Settings) -> dict[str, str]:
    """The resource of the workbook's Prefect events (what the retrain automation matches)."""
    return {"prefect.resource.id": resource_id(settings),
            "prefect.resource.name": f"taxi-duration (level 5 loop, workbook "
                                     f"{workbook_id(settings)})",
            "mlops-levels.workbook-home": str(settings.workbook_home)}


def emit_to_prefect(event: Event, settings: Settings) -> None:
    """Send ``event`` as the Prefect event ``level5.<kind>`` of ``settings``' workbook; a
    Prefect that does not answer is logged by Prefect's own events worker, never fatal (the
    event is in the table)."""
    from prefect.events import emit_event

    resource = prefect_resource(settings)
    related = ([{"prefect.resource.id": f"{resource['prefect.resource.id']}.version."
                                        f"{event.version}",
                 "prefect.resource.role": "model-version"}] if event.version else None)
    emit_event(event=f"level5.{event.kind}", resource=resource, related=related,
               payload={"day": event.day.isoformat(), "kind": event.kind,
                        "version": event.version, "reason": event.reason,
                        "details": event.details})


def flush_prefect_events(timeout: float = 10.0) -> None:
    """Wait until the events handed to Prefect are sent (before a command exits)."""
    import sys

    if "prefect.events" in sys.modules:
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=timeout)


def read_events(engine: Engine, *, since: dt.date | None = None, until: dt.date | None = None,
                kinds: Sequence[str] | None = None, version: str | None = None) -> list[Event]:
    """Stored events, oldest first (by day, then by the order they were recorded)."""
    e = events
    query = select(e.c.id, e.c.day, e.c.kind, e.c.version, e.c.reason, e.c.details)
    if since is not None:
        query = query.where(e.c.day >= since)
    if until is not None:
        query = query.where(e.c.day <= until)
    if kinds:
        query = query.where(e.c.kind.in_(list(kinds)))
    if version is not None:
        query = query.where(e.c.version == str(version))
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(e.c.day, e.c.id)).fetchall()
    return [Event(row.day, row.kind, row.reason, row.version, json.loads(row.details), row.id)
            for row in rows]


def latest(found: Iterable[Event], *kinds: str) -> Event | None:
    """The last of ``found`` whose kind is one of ``kinds``."""
    last = None
    for event in found:
        if event.kind in kinds:
            last = event
    return last


@dataclass(frozen=True)
class Pending:
    """A promotion waiting for a person: its ``pending`` event, and the ``approve`` event once
    someone approved it (the loop then promotes it at its next tick)."""

    event: Event
    approval: Event | None = None

    @property
    def version(self) -> str:
        """The version waiting."""
        return str(self.event.version)


def pending_approvals(engine: Engine) -> list[Pending]:
    """Open ``pending`` events, oldest first: not yet ended by a ``promote`` or a ``reject`` of
    their version; each with its ``approve`` event when there is one."""
    open_: dict[str, Pending] = {}
    for event in read_events(engine, kinds=("pending", *RESOLVING)):
        version = event.version or ""
        if event.kind == "pending":
            open_[version] = Pending(event)
        elif version in open_ and event.kind == "approve":
            open_[version] = Pending(open_[version].event, open_[version].approval or event)
        elif version in open_:
            del open_[version]
    return sorted(open_.values(), key=lambda p: p.event.id or 0)


def review(engine: Engine, version: str, decision: str, *, day: dt.date | None = None,
           actor: str | None = None, note: str = "",
           settings: Settings | None = None) -> Event:
    """A person's answer to a pending promotion: ``approve`` or ``reject`` version ``version``.

    ``approve`` is recorded and the loop promotes the version at its next tick (its promotion
    is then a ``promote`` event); ``reject`` is recorded and ends the pending event: the
    champion stays. A version that is not waiting for an answer is a :class:`BadInputError`
    naming the ones that are.
    """
    from level3_training.registry import default_actor

    if decision not in ("approve", "reject"):
        raise ValueError(f"decision {decision!r}: approve or reject")
    version = str(version).strip().removeprefix("v")
    waiting = [p for p in pending_approvals(engine) if p.approval is None]
    target = next((p for p in waiting if p.version == version), None)
    if target is None:
        names = ", ".join(f"v{p.version}" for p in waiting) or "none"
        raise BadInputError(f"version {version} is not waiting for approval (waiting: {names}); "
                            "see `mlops-levels level5 events`")
    who = actor or default_actor()
    verb = "approved" if decision == "approve" else "rejected"
    reason = f"{verb} by {who}" + (f": {note}" if note else "")
    return record_event(engine, Event(day or dt.date.today(), decision, reason, version,
                                      {"by": who, "pending_since": target.event.day.isoformat(),
                                       "review": True}), settings=settings)


def format_events(found: Iterable[Event]) -> str:
    """The events as a table for a terminal."""
    lines = [f"{'date':<10}  {'kind':<8}  {'ver':<4}  reason"]
    lines += [event.line() for event in found]
    return "\n".join(lines)

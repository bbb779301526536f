"""TOML configuration files checked by msgspec, with errors that name the key as the user wrote it.

Level 4's monitoring thresholds and level 5's policy are such files: read with
:func:`read_toml`, converted with ``msgspec.convert``, and a ``msgspec.ValidationError`` turned
into one line by :func:`explain_validation_error` (``[thresholds] mae_ratio: expected float > 0.0,
got 0``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

_AT = re.compile(r"^(?P<reason>.*?) - at `\$\.(?P<path>[\w.\[\]]+)`$")


def toml_key(path: str) -> str:
    """``training.params.hist_gb.max_iter`` -> ``[training.params.hist_gb] max_iter``."""
    *sections, key = path.split(".")
    return f"[{'.'.join(sections)}] {key}" if sections else f"[{key}]"


def value_at(data: dict[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` of a parsed document (None where it is missing)."""
    value: Any = data
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def explain_validation_error(exc: msgspec.ValidationError, data: dict[str, Any], *,
                             keys_hint: str, choices: Sequence[str] = ()) -> str:
    """msgspec's message with the TOML key written as the user wrote it, and the value given.

    ``keys_hint`` ends the message for an unknown key (where to find the keys); ``choices`` are
    the allowed values of the document's enum fields, named for an invalid one.
    """
    text = str(exc)
    match = _AT.match(text)
    reason, path = (match["reason"], match["path"]) if match else (text, "")
    unknown = re.match(r"Object contains unknown field `(\w+)`", reason)
    if unknown:
        key = f"[{path}] {unknown[1]}" if path else f"[{unknown[1]}]"
        return f"{key} is not a setting ({keys_hint})"
    where = toml_key(path) if path else "the file"
    if reason.startswith("Invalid enum value") and choices:
        return f"{where}: {value_at(data, path)!r} is not one of {', '.join(choices)}"
    given = f", got {value_at(data, path)!r}" if path and "got" not in reason else ""
    return f"{where}: {reason[0].lower()}{reason[1:]}{given}"


def read_toml(path: Path, *, what: str, default: Path, error: type[Exception]) -> dict[str, Any]:
    """The parsed TOML file at ``path``; ``error`` in one line naming ``what`` when it is
    missing, unreadable or not TOML."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist (the documented default is {default})") \
            from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path} cannot be read: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} {path} is not valid TOML: {exc}") from None

"""Value checks of settings: predicates, and the one :class:`ConfigError` they raise.

Every layer checks a setting through these, key first: ``check(key, value, allowed, ok)``
raises ``ConfigError("<key> must be <allowed>, got <value>")``. Numbers are finite ints or
floats, never bools (``inf`` and ``nan`` are not numbers here). Which module checks which
setting: the run config's keys in :mod:`lfbm_lightning.run.config_checks`, a class's own
arguments in its constructor; each setting once.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

from lfbm_lightning.errors import ConfigError


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_integer(value: Any, minimum: int) -> bool:
    """An int (not a bool) >= ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def is_positive(value: Any) -> bool:
    """A finite number > 0."""
    return is_number(value) and value > 0


def in_interval(value: Any, low: float, high: float, *, open_low: bool, open_high: bool) -> bool:
    """A finite number in the interval from ``low`` to ``high`` (each end open or closed)."""
    if not is_number(value):
        return False
    above = value > low if open_low else value >= low
    below = value < high if open_high else value <= high
    return above and below


def check(key: str, value: Any, allowed: str, ok: bool) -> None:
    """Raise :class:`ConfigError` ``"<key> must be <allowed>, got <value>"`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key} must be {allowed}, got {value!r}")


def check_int(key: str, value: Any, minimum: int, *, nullable: bool = False) -> int | None:
    """``value``, an integer >= ``minimum`` (or None when ``nullable``), else ConfigError."""
    if value is None and nullable:
        return None
    allowed = f"{'null or ' if nullable else ''}an integer >= {minimum}"
    check(key, value, allowed, is_integer(value, minimum))
    return int(value)


def check_positive(key: str, value: Any, *, nullable: bool = False) -> float | None:
    """``value`` as a float, a finite number > 0 (or None when ``nullable``), else
    ConfigError."""
    if value is None and nullable:
        return None
    check(key, value, f"{'null or ' if nullable else ''}a number > 0", is_positive(value))
    return float(value)


def check_bool(key: str, value: Any) -> bool:
    """``value``, true or false, else ConfigError."""
    check(key, value, "true or false", isinstance(value, bool))
    return value


def check_choice(key: str, value: Any, choices: Collection[Any]) -> Any:
    """``value``, one of ``choices``, else ConfigError."""
    check(key, value, f"one of {list(choices)}", value in choices)
    return value

"""The value checks every layer uses: finite numbers only, bools are not numbers, and one
message shape, key first."""

from __future__ import annotations

import math

import pytest

from lfbm_lightning.checks import check_bool, check_choice, check_int, check_positive
from lfbm_lightning.errors import ConfigError


@pytest.mark.parametrize("value", [0, -0.5, math.inf, math.nan, True, "1"])
def test_positive_means_a_finite_number_above_zero(value):
    with pytest.raises(ConfigError, match=r"^a\.b must be a number > 0, got "):
        check_positive("a.b", value)


def test_checks_return_the_value_and_take_null_only_when_told():
    assert check_positive("s", 3) == 3.0 and isinstance(check_positive("s", 3), float)
    assert check_positive("s", None, nullable=True) is None
    assert check_int("n", 0, 0) == 0 and check_int("n", None, 1, nullable=True) is None
    with pytest.raises(ConfigError, match=r"^n must be an integer >= 1, got None$"):
        check_int("n", None, 1)
    with pytest.raises(ConfigError, match=r"^n must be null or an integer >= 1, got 2\.5$"):
        check_int("n", 2.5, 1, nullable=True)


def test_bool_and_choice_name_the_allowed_values():
    assert check_bool("progress", False) is False
    with pytest.raises(ConfigError, match=r"^progress must be true or false, got 'maybe'$"):
        check_bool("progress", "maybe")
    assert check_choice("fit", "fast", ("protocol", "fast")) == "fast"
    with pytest.raises(ConfigError, match=r"^fit must be one of \['protocol', 'fast'\], got 'x'$"):
        check_choice("fit", "x", ("protocol", "fast"))

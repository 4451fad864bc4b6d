"""The fits of evaluation chains (lfbm_lightning/inference/fit.py): exact pass counts, the
protocol's gradient descent, the fast fit's optimum and its per-image stopping."""

from __future__ import annotations

import pytest
import torch

from lfbm_lightning.errors import ConfigError
from lfbm_lightning.inference.fit import PassCount, check_fit, fast_fit, protocol_fit


def counting_quadratic(target: torch.Tensor, calls: list[int], sigma: float = 1.0):
    """``energy_of(rows)``: E_i(z) = ||z - target_i||^2 / (2 sigma^2) of the rows, sigma^2 = 1 (the
    fast fit's test: sigma = 0.1, as steep as a reconstruction energy); each call of an
    energy appends its number of rows (the generator passes it would cost) to ``calls``."""

    def energy_of(rows: torch.Tensor):
        def energy(z: torch.Tensor) -> torch.Tensor:
            calls.append(z.shape[0])
            return (z - target[rows]).square().sum(1) / (2 * sigma**2)

        return energy

    return energy_of


def test_protocol_fit_is_gradient_descent_with_n_steps_passes_per_image():
    target, z0, calls = torch.randn(5, 3), torch.zeros(5, 3), []
    result = protocol_fit(z0, counting_quadratic(target, calls), n_steps=7, step_size=0.5)
    # gradient descent with rate s^2 / 2 = 0.125 on ||z - t||^2 / 2: z_k = t (1 - 0.875^k)
    torch.testing.assert_close(result.z, target * (1 - 0.875**7))
    assert result.passes.tolist() == [7] * 5
    assert sum(calls) == 35


def test_fast_fit_reaches_the_minimum_and_counts_every_pass_exactly():
    target, calls = torch.randn(6, 4), []
    energy_of = counting_quadratic(target, calls, sigma=0.1)
    result = fast_fit(torch.zeros(6, 4), energy_of, max_steps=400)
    torch.testing.assert_close(result.z, target, atol=0.02, rtol=0)
    assert int(result.passes.sum()) == sum(calls)  # the passes are the rows of the calls
    assert int(result.passes.max()) < 400  # every image stopped by the rule, not the cap


def test_converged_images_leave_the_batch():
    """An image started at its minimum has a constant energy: it stops after the patience
    (3 calm steps after the first), while the others go on; later calls have fewer rows."""
    target, calls = torch.randn(4, 2) * 3, []
    z0 = torch.zeros(4, 2)
    z0[0] = target[0]
    result = fast_fit(z0, counting_quadratic(target, calls), max_steps=200)
    assert int(result.passes[0]) == 4
    assert int(result.passes[1:].min()) > 4
    assert calls[0] == 4 and calls[-1] < 4
    assert int(result.passes.sum()) == sum(calls)


def test_the_cap_bounds_the_passes():
    target, calls = torch.randn(3, 2) * 5, []
    result = fast_fit(torch.zeros(3, 2), counting_quadratic(target, calls), max_steps=5)
    assert result.passes.tolist() == [5, 5, 5]


def test_pass_count_sums_fits_and_names_the_fit():
    target, count = torch.randn(2, 2), PassCount()
    for n_steps in (3, 5):
        count.add(protocol_fit(torch.zeros(2, 2), counting_quadratic(target, []), n_steps, 0.1))
    assert count.results("protocol") == {
        "fit": "protocol",
        "generator_passes": 16,
        "passes_per_fit": 4.0,
    }


def test_unknown_fit_is_refused_naming_the_key():
    assert check_fit("fast") == "fast"
    with pytest.raises(ConfigError, match="reconstruction.fit must be one of"):
        check_fit("adam", "reconstruction.fit")

"""The fits of evaluation chains (lfbm_lightning/inference/fit.py): exact pass counts, the
protocol's gradient descent, the fast fit's (L-BFGS) optimum, its per-image independence,
trust radius and stopping."""

from __future__ import annotations

import torch

from lfbm_lightning.inference.fit import (
    FAST_BACKTRACKS,
    FAST_MAX_STEP,
    FAST_PATIENCE,
    PassCount,
    fast_fit,
    protocol_fit,
)


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
    result = fast_fit(torch.zeros(6, 4), energy_of, max_passes=400)
    torch.testing.assert_close(result.z, target, atol=0.02, rtol=0)
    assert int(result.passes.sum()) == sum(calls)  # the passes are the rows of the calls
    assert int(result.passes.max()) < 400  # every image stopped by the rule, not the cap


def shifted_quadratic(target: torch.Tensor, sigma: float, constant: float):
    """``energy_of`` of E_i(z) = ||z - target_i||^2 / (2 sigma^2) + ``constant`` (the role of
    the d/2 log 2 pi in -log p(z))."""

    def energy_of(rows: torch.Tensor):
        base = counting_quadratic(target, [], sigma)(rows)
        return lambda z: base(z) + constant

    return energy_of


def test_fast_fit_nears_the_protocol_in_five_times_fewer_passes():
    """A steep quadratic (sigma = 0.1, the curvature of a reconstruction term) plus 100 nats:
    the protocol's 400 steps of rate s^2 / 2 = 0.005 solve it to (1 - 0.5)^400 ~ 0. The fast
    fit stops (|dE| < 0.05 nats for 3 steps) in at most a fifth of the passes, within 1.5
    nats of the minimum, from starts over 50 nats above it, z within 0.15 of the minimiser."""
    torch.manual_seed(0)
    target, z0 = torch.randn(8, 6), torch.zeros(8, 6)
    energy_of = shifted_quadratic(target, 0.1, 100.0)
    protocol = protocol_fit(z0, energy_of, 400, 0.1)
    fast = fast_fit(z0, energy_of, max_passes=400)
    energy = energy_of(torch.arange(8))
    assert float((energy(protocol.z) - 100.0).abs().max()) < 1e-6
    assert float((energy(z0) - energy(protocol.z)).min()) > 50
    assert float((energy(fast.z) - energy(protocol.z)).max()) < 1.5
    assert float((fast.z - target).abs().max()) < 0.15
    assert int(protocol.passes.sum()) >= 5 * int(fast.passes.sum())


def test_the_stopping_rule_ignores_additive_constants_of_the_energy():
    """E + c takes the same steps for every c (the gradient is the same); above
    |E| = FAST_ATOL / FAST_RTOL = 50 nats the rule reads only differences of E, so constants
    of 1e2 and 1e5 nats give the same passes and fit, more than the 1 + FAST_PATIENCE of an
    image that stops at once; a rule relative to E alone (atol = inf) stops sooner at 1e5."""
    target = torch.randn(5, 3) * 2
    small = fast_fit(torch.zeros(5, 3), shifted_quadratic(target, 0.3, 1e2), max_passes=300)
    large = fast_fit(torch.zeros(5, 3), shifted_quadratic(target, 0.3, 1e5), max_passes=300)
    assert large.passes.tolist() == small.passes.tolist()
    torch.testing.assert_close(large.z, small.z)
    assert int(large.passes.min()) > 1 + FAST_PATIENCE
    relative = fast_fit(
        torch.zeros(5, 3), shifted_quadratic(target, 0.3, 1e5), max_passes=300, atol=float("inf")
    )
    assert int(relative.passes.sum()) < int(large.passes.sum())


def rosenbrock(scale: torch.Tensor):
    """``energy_of`` of E_i(z) = (1 - a)^2 + 100 s_i (b - a^2)^2 for z = (a, b): non-convex, a
    curved valley, minimum 0 at (1, 1) for every s_i > 0."""

    def energy_of(rows: torch.Tensor):
        def energy(z: torch.Tensor) -> torch.Tensor:
            a, b = z[:, 0], z[:, 1]
            return (1 - a).square() + 100 * scale[rows] * (b - a.square()).square()

        return energy

    return energy_of


def test_a_looser_tolerance_stops_sooner_and_fits_less():
    """On Rosenbrock valleys (below; L-BFGS solves a quadratic in a few steps whatever the
    tolerance) a tolerance of 1 nat stops sooner, at higher energies, than one of 1e-6."""
    energy_of = rosenbrock(torch.tensor([0.5, 1.0, 2.0]))
    z0 = torch.tensor([[-1.2, 1.0]]).repeat(3, 1)
    tight = fast_fit(z0, energy_of, max_passes=1000, rtol=1.0, atol=1e-6)  # atol decides
    loose = fast_fit(z0, energy_of, max_passes=1000, rtol=1.0, atol=1.0)
    energy = energy_of(torch.arange(3))
    assert int(loose.passes.sum()) < int(tight.passes.sum())
    assert float(energy(tight.z).mean()) < float(energy(loose.z).mean())


def test_converged_images_leave_the_batch():
    """An image started at its minimum has a zero gradient, so its steps are zero and its
    energy constant: it stops after the first pass and FAST_PATIENCE calm steps, while the
    others go on; later calls have fewer rows."""
    target, calls = torch.randn(4, 2) * 3, []
    z0 = torch.zeros(4, 2)
    z0[0] = target[0]
    result = fast_fit(z0, counting_quadratic(target, calls), max_passes=200)
    assert int(result.passes[0]) == 1 + FAST_PATIENCE
    assert int(result.passes[1:].min()) > 1 + FAST_PATIENCE
    assert calls[0] == 4 and calls[-1] < 4
    assert int(result.passes.sum()) == sum(calls)


def test_fast_fit_solves_rosenbrock_and_each_image_is_fitted_independently():
    """From the classic start (-1.2, 1), each image reaches the minimum (1, 1) of its own
    Rosenbrock valley; fitted in one batch, every image takes exactly the steps and passes it
    takes when fitted alone (own curvature pairs, line search and stopping). The tolerance is
    tight (1e-6 nats): this tests the optimiser. With the default 0.05 nats the rule stops the
    s = 2 image at (-1.03, 1.06), E = 4.1, where its steps along the flat valley gain under
    4e-3 nats each (a limit the module docstring states)."""
    scale = torch.tensor([0.5, 1.0, 2.0])
    z0 = torch.tensor([[-1.2, 1.0]]).repeat(3, 1)
    tight = {"atol": 1e-6, "rtol": 1e-8}
    batch = fast_fit(z0, rosenbrock(scale), max_passes=1000, **tight)
    torch.testing.assert_close(batch.z, torch.ones(3, 2), atol=1e-3, rtol=0)
    assert int(batch.passes.max()) < 1000
    for i in range(3):
        alone = fast_fit(z0[i : i + 1], rosenbrock(scale[i : i + 1]), max_passes=1000, **tight)
        torch.testing.assert_close(alone.z, batch.z[i : i + 1])
        assert alone.passes.tolist() == batch.passes[i : i + 1].tolist()


def test_every_try_lies_within_the_trust_radius_of_an_earlier_point():
    """A distant minimum (|target| = 10) with a radius of 0.25: every evaluated point is within
    0.25 of a point evaluated before it (the accepted z it steps from), so the fit needs at
    least 10 / 0.25 = 40 passes, and still gets there."""
    target, points = torch.full((1, 4), 5.0), []

    def energy_of(rows: torch.Tensor):
        def energy(z: torch.Tensor) -> torch.Tensor:
            points.append(z.detach().clone())
            return (z - target).square().sum(1) / 2

        return energy

    result = fast_fit(torch.zeros(1, 4), energy_of, max_passes=400, max_step=0.25)
    seen = torch.cat(points)
    for k in range(1, len(seen)):
        assert float((seen[:k] - seen[k]).norm(dim=1).min()) <= 0.25 + 1e-5
    assert int(result.passes[0]) >= 40
    torch.testing.assert_close(result.z, target, atol=0.05, rtol=0)


def test_non_finite_energies_are_never_accepted():
    """An energy that is nan everywhere but at z0: no step is accepted, and after the line
    search along -g fails (1 + FAST_BACKTRACKS tries) the image stops at z0."""
    target = torch.ones(2, 3)
    z0 = torch.zeros(2, 3)

    def energy_of(rows: torch.Tensor):
        def energy(z: torch.Tensor) -> torch.Tensor:
            away = (z != 0).any(1)
            return (z - target[rows]).square().sum(1) + torch.where(away, torch.nan, 0.0)

        return energy

    result = fast_fit(z0, energy_of, max_passes=400)
    torch.testing.assert_close(result.z, z0)
    assert result.passes.tolist() == [1 + 1 + FAST_BACKTRACKS] * 2


def test_the_cap_bounds_the_passes():
    """Minima over 10 away with steps of at most FAST_MAX_STEP <= 1: every image is still
    moving when it runs out of its 5 passes."""
    assert FAST_MAX_STEP <= 1
    target, calls = torch.full((3, 2), 10.0) + torch.randn(3, 2), []
    result = fast_fit(torch.zeros(3, 2), counting_quadratic(target, calls), max_passes=5)
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

"""Frechet distance, KID and precision / recall on sets whose answers are known in closed form or by hand."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import linalg

from liquidgen.evaluation import metrics
from liquidgen.evaluation.metrics import (
    Stats,
    frechet_distance,
    gaussian_stats,
    kernel_inception_distance,
    precision_recall,
)


def closed_form(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """The Frechet distance of two Gaussians with scipy's general matrix square root as the reference."""
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real))


def exact(mu: np.ndarray, cov: np.ndarray) -> Stats:
    return Stats(torch.tensor(mu, dtype=torch.float64), torch.tensor(cov, dtype=torch.float64), 0)


def random_covariances(d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    return a @ a.T / d + 0.5 * np.eye(d), b @ b.T / d + 0.5 * np.eye(d)


def sample(n: int, mu: np.ndarray, cov: np.ndarray, g: torch.Generator) -> torch.Tensor:
    z = torch.randn(n, len(mu), generator=g, dtype=torch.float64)
    return z @ torch.tensor(np.linalg.cholesky(cov)).T + torch.tensor(mu)


# ---------------------------------------------------------------- Frechet distance


def test_frechet_distance_of_exact_statistics_matches_the_closed_form():
    # Diagonal (commuting) covariances: (S1 S2)^(1/2) = diag(sqrt(s1 s2)), so the trace term is
    # sum (sqrt s1 - sqrt s2)^2.
    s1, s2 = np.array([1.0, 4.0, 9.0, 0.25]), np.array([4.0, 1.0, 1.0, 0.0])  # one variance 0: a singular S2
    mu1, mu2 = np.array([0.0, 1.0, -2.0, 3.0]), np.array([1.0, 1.0, 0.0, 0.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()
    assert frechet_distance(exact(mu1, np.diag(s1)), exact(mu2, np.diag(s2))) == pytest.approx(expected, abs=1e-8)
    # Non-commuting covariances: S1 S2 is not symmetric; scipy's sqrtm of the product is the reference.
    c1, c2 = random_covariances(8)
    assert not np.allclose(c1 @ c2, c2 @ c1)
    mu1, mu2 = np.random.default_rng(1).normal(size=(2, 8))
    value = frechet_distance(exact(mu1, c1), exact(mu2, c2))
    assert value == pytest.approx(closed_form(mu1, c1, mu2, c2), abs=1e-8)
    assert value == pytest.approx(frechet_distance(exact(mu2, c2), exact(mu1, c1)), abs=1e-10)  # symmetric
    assert frechet_distance(exact(mu1, c1), exact(mu1, c1)) == pytest.approx(0, abs=1e-10)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 8, generator=g, dtype=torch.float64) * 3 + 1
    assert abs(frechet_distance(gaussian_stats(x), gaussian_stats(x))) < 1e-6
    # Fewer samples than dimensions: singular covariances, whose rounding-noise eigenvalues must not add up.
    wide = torch.randn(100, 300, generator=g, dtype=torch.float64) @ torch.randn(300, 300, generator=g,
                                                                                 dtype=torch.float64)
    stats = gaussian_stats(wide)
    assert abs(frechet_distance(stats, stats)) < 1e-6 * float(stats.cov.trace())
    # Ill-conditioned, like a trained classifier's features (covariance eigenvalues 1e-6 .. 600): the trace of
    # the root must keep the small eigenvalues' share, sqrt(1e-6 * 1e-6) = 1e-6, not lose it to rounding.
    q = torch.linalg.qr(torch.randn(64, 64, generator=g, dtype=torch.float64))[0]
    scales = torch.logspace(-6, 2.8, 64, dtype=torch.float64).sqrt()
    stats = gaussian_stats(torch.randn(600, 64, generator=g, dtype=torch.float64) * scales @ q.T)
    assert abs(frechet_distance(stats, stats)) < 1e-8


def test_frechet_distance_is_never_negative():
    # The exact value between a set and itself is 0; unclamped, rounding left 11 of these 24 at -1e-11 .. -5e-13
    # (shown as "-0.00" in the sweep table). Offset means and spread-out scales make the cancellation inexact.
    for seed, d in itertools.product(range(12), (16, 64)):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(300, d, generator=g, dtype=torch.float64) * torch.logspace(-3, 1.5, d, dtype=torch.float64)
        stats = gaussian_stats(x + 5)
        assert 0 <= frechet_distance(stats, stats) < 1e-9


def test_frechet_distance_of_samples_approaches_the_closed_form():
    c1, c2 = random_covariances(8)
    mu1, mu2 = np.zeros(8), np.full(8, 0.5)
    n = 50_000
    g = torch.Generator().manual_seed(0)
    value = frechet_distance(gaussian_stats(sample(n, mu1, c1, g)), gaussian_stats(sample(n, mu2, c2, g)))
    # Sampling tolerance: the leading error is the linear term 2 dmu . (e1 - e2) of the mean difference,
    # e_i ~ N(0, S_i / n), with sd 2 sqrt(dmu^T (S1 + S2) dmu / n) (0.020 here); the covariance estimates add
    # about as much again (over 200 seeds at n = 20k the total sd was 1.4x this term). The biases are
    # O(tr S / n) ~ 5e-4. 6 sd of the linear term is > 4 sd of the whole error, and still 2.6% of the value.
    dmu = mu1 - mu2
    sd = 2 * np.sqrt(dmu @ (c1 + c2) @ dmu / n)
    assert value == pytest.approx(closed_form(mu1, c1, mu2, c2), abs=6 * sd)


def test_gaussian_stats_and_errors():
    x = torch.randn(40, 5, dtype=torch.float64)
    stats = gaussian_stats(x)
    np.testing.assert_allclose(stats.cov.numpy(), np.cov(x.numpy(), rowvar=False), rtol=1e-12)  # unbiased
    np.testing.assert_allclose(stats.mean.numpy(), x.numpy().mean(0), rtol=1e-12)
    assert stats.count == 40 and stats.mean.dtype == stats.cov.dtype == torch.float64
    assert gaussian_stats(x.float()).cov.dtype == torch.float64
    with pytest.raises(ValueError, match="at least 2 samples"):
        gaussian_stats(x[:1])
    with pytest.raises(ValueError, match="NaN or inf"):
        gaussian_stats(torch.tensor([[0.0], [float("nan")]]))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        gaussian_stats(torch.zeros(5))
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance(stats, gaussian_stats(torch.randn(10, 4)))


def test_stats_save_load_round_trip(tmp_path):
    stats = gaussian_stats(torch.randn(50, 6))
    stats.save(tmp_path / "ref.safetensors")
    back = Stats.load(tmp_path / "ref.safetensors")
    assert torch.equal(back.mean, stats.mean) and torch.equal(back.cov, stats.cov)  # bit-exact
    assert back.count == 50 and back.cov.dtype == torch.float64
    assert frechet_distance(back, stats) == frechet_distance(stats, stats)
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not safetensors")
    with pytest.raises(ValueError, match="junk.npz"):
        Stats.load(tmp_path / "junk.npz")
    from safetensors.torch import save_file
    save_file({"features": torch.zeros(3, 2)}, str(tmp_path / "other.safetensors"))  # safetensors, wrong content
    with pytest.raises(ValueError, match="other.safetensors is not a liquidgen statistics file"):
        Stats.load(tmp_path / "other.safetensors")


# ---------------------------------------------------------------- KID


def direct_kid(x: torch.Tensor, y: torch.Tensor) -> float:
    """The unbiased MMD^2 with k(u, v) = (u.v / d + 1)^3, written out term by term."""
    m, d = len(x), x.shape[1]

    def k(u, v):
        return float((u @ v / d + 1) ** 3)

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_the_direct_formula_on_a_tiny_case():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    y = torch.randn(6, 3, generator=g, dtype=torch.float64) + 0.5
    # One subset holding both whole sets (the order within a subset does not change the estimate).
    mean, std = kernel_inception_distance(x, y, subsets=1, subset_size=6)
    assert mean == pytest.approx(direct_kid(x, y), rel=1e-12) and std == 0.0
    assert kernel_inception_distance(x, y, subsets=3, subset_size=100) == pytest.approx((mean, 0.0), rel=1e-12)
    # Unequal sizes: the subset size is clipped to the smaller set, 6 of the 8 points of the first set.
    x8 = torch.cat([x, torch.randn(2, 3, generator=g, dtype=torch.float64)])
    value = kernel_inception_distance(x8, y, subsets=1)[0]
    candidates = [direct_kid(x8[list(c)], y) for c in itertools.combinations(range(8), 6)]
    assert min(abs(value - c) for c in candidates) < 1e-12


def test_kid_is_near_zero_for_one_distribution_and_positive_for_shifted_ones():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1000, 16, generator=g), torch.randn(1000, 16, generator=g)
    same, same_std = kernel_inception_distance(a, b, subsets=50, subset_size=500)
    # Unbiased: the mean over subsets scatters around 0 (here -0.002), within the per-subset sd (~0.004).
    assert abs(same) < 0.01 and 0 < same_std < 0.01
    shifted, _ = kernel_inception_distance(a, b + 0.5, subsets=50, subset_size=500)
    assert shifted > 0.5
    wider, _ = kernel_inception_distance(a, b * 1.3, subsets=50, subset_size=500)
    assert 0.03 < wider < shifted


def test_kid_is_deterministic_for_a_seed():
    a, b = torch.randn(300, 8), torch.randn(200, 8)
    first = kernel_inception_distance(a, b, subsets=10, subset_size=100, seed=3)
    torch.manual_seed(123)  # the global RNG does not matter
    assert kernel_inception_distance(a, b, subsets=10, subset_size=100, seed=3) == first
    assert kernel_inception_distance(a, b, subsets=10, subset_size=100, seed=4) != first
    with pytest.raises(ValueError, match="feature sizes differ"):
        kernel_inception_distance(a, torch.randn(10, 4))
    with pytest.raises(ValueError, match="NaN or inf"):
        kernel_inception_distance(a, torch.full((10, 8), float("inf")))


# ---------------------------------------------------------------- precision / recall


def test_precision_recall_identical_and_disjoint_sets():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(1000, 2, generator=g)
    assert precision_recall(real, real.clone()) == {"precision": 1.0, "recall": 1.0}
    far = torch.rand(500, 2, generator=g) + 10
    assert precision_recall(real, far) == {"precision": 0.0, "recall": 0.0}


def test_precision_recall_of_a_half_covering_fake_set():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(2000, 2, generator=g)  # the unit square
    left = torch.rand(1000, 2, generator=g) * torch.tensor([0.5, 1.0])  # its left half
    pr = precision_recall(real, left)
    # Every fake point lies where real points are (precision ~1; misses only in rare gaps at the square's
    # edges); the fake balls reach a little past x = 0.5, so recall is slightly above one half.
    assert pr["precision"] > 0.95 and 0.45 < pr["recall"] < 0.65
    swapped = precision_recall(left, real)  # the roles exchange
    assert swapped["recall"] > 0.95 and 0.45 < swapped["precision"] < 0.65


def test_knn_radius_excludes_the_point_itself():
    line = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    # k = 1: every radius is 1 (the neighbour), not 0 (the point itself); balls cover [-1, 4].
    assert metrics._kth_radius(line.double(), 1, 10).tolist() == [1.0, 1.0, 1.0, 1.0]
    assert metrics._kth_radius(line.double(), 3, 10).tolist() == [3.0, 2.0, 2.0, 3.0]
    fake = torch.tensor([[0.5], [3.9], [4.1], [-0.9]])
    assert precision_recall(line, fake, k=1)["precision"] == 0.75
    # A duplicated point is its own nearest neighbour's twin: radius 0 is right for both copies.
    assert metrics._kth_radius(torch.tensor([[0.0], [0.0], [5.0]], dtype=torch.float64), 1, 10).tolist() == \
        [0.0, 0.0, 5.0]


def test_blocked_distances_match_the_full_matrix(monkeypatch):
    g = torch.Generator().manual_seed(0)
    real = torch.randn(300, 5, generator=g, dtype=torch.float64)
    fake = torch.randn(200, 5, generator=g, dtype=torch.float64) * 1.5
    full = torch.cdist(real, real)
    full.fill_diagonal_(float("inf"))
    expected_radii = full.kthvalue(3, 1).values
    expected_precision = float((torch.cdist(fake, real) <= expected_radii).any(1).double().mean())
    reference = precision_recall(real, fake)
    assert reference["precision"] == expected_precision
    monkeypatch.setattr(metrics, "BLOCK_ENTRIES", 7 * 11)  # blocks of 7 rows x 11 columns
    torch.testing.assert_close(metrics._kth_radius(real, 3, 7), expected_radii, rtol=1e-12, atol=1e-12)
    assert precision_recall(real, fake, batch=7) == reference


def test_precision_recall_errors():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="at least 4 samples"):
        precision_recall(x, x[:3], k=3)
    with pytest.raises(ValueError, match="feature sizes differ"):
        precision_recall(x, torch.randn(10, 2))
    with pytest.raises(ValueError, match="NaN or inf"):
        precision_recall(x, torch.cat([x[:9], torch.full((1, 3), float("nan"))]))
    with pytest.raises(ValueError, match="k >= 1"):
        precision_recall(x, x, k=0)


def test_bootstrap_interval_holds_the_estimate_and_shrinks_with_more_samples():
    # Samples N(0.5, I) against the exact statistics of N(0, I) in 4-d: the true FD is 4 * 0.5^2 = 1.
    reference = Stats(torch.zeros(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64), 10**6)
    g = torch.Generator().manual_seed(0)
    widths = []
    for n in (300, 3000):
        x = torch.randn(n, 4, generator=g, dtype=torch.float64) + 0.5
        low, high = metrics.bootstrap_frechet(x, reference, rounds=200)
        assert low <= frechet_distance(gaussian_stats(x), reference) <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2  # about 1 / sqrt(10) of it
    # A 95% interval holds the true FD in about 95% of repetitions (binomial sd 3.4% over 40 of them).
    covered = [low <= 1.0 <= high for low, high in (
        metrics.bootstrap_frechet(torch.randn(500, 4, generator=g, dtype=torch.float64) + 0.5, reference, rounds=100)
        for _ in range(40))]
    assert sum(covered) >= 34
    assert metrics.bootstrap_frechet(x, reference, rounds=50, seed=3) == metrics.bootstrap_frechet(
        x, reference, rounds=50, seed=3)
    # Few points in many dimensions: resamples repeat points, which inflates FD's small-sample bias; the
    # interval is shifted by that bias, so it still holds the estimate it is printed beside.
    wide = Stats(torch.zeros(64, dtype=torch.float64), torch.eye(64, dtype=torch.float64), 10**6)
    x = torch.randn(200, 64, generator=g, dtype=torch.float64)
    low, high = metrics.bootstrap_frechet(x, wide, rounds=100)
    assert low <= frechet_distance(gaussian_stats(x), wide) <= high
    with pytest.raises(ValueError, match="rounds >= 2"):
        metrics.bootstrap_frechet(x, wide, rounds=1)

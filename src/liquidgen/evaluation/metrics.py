"""Distribution metrics on feature arrays: Frechet distance (FID's formula), KID, precision / recall.

All take (N, D) feature tensors from any network (Inception for FID, a reference classifier offline) and
compute in float64: FID-sized covariances (2048 x 2048) lose several digits of the trace term in float32.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

from ..checkpoint import save_safetensors

# Largest pairwise-distance block held at once by precision_recall: 2^24 float64 entries = 128 MiB.
BLOCK_ENTRIES = 1 << 24


def _check(features: Tensor, name: str, minimum: int) -> Tensor:
    """float64 copy of an (N, D) finite feature array with N >= minimum; ValueError naming `name` otherwise."""
    if not isinstance(features, Tensor) or features.ndim != 2:
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"{name}: features must be an (N, D) tensor, got {shape}")
    if len(features) < minimum:
        raise ValueError(f"{name}: needs at least {minimum} samples, got {len(features)}")
    x = features.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: features contain NaN or inf (a diverged model, or a broken feature network?)")
    return x


def _same_dim(a: Tensor, b: Tensor, name: str) -> None:
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"{name}: feature sizes differ ({a.shape[-1]} vs {b.shape[-1]}); were both sets "
                         f"featurised by the same network?")


@dataclass
class Stats:
    """Gaussian statistics of a feature set: what a Frechet distance compares, and what gets cached."""

    mean: Tensor  # (D,) float64
    cov: Tensor  # (D, D) float64, unbiased (divides by count - 1, like numpy.cov)
    count: int

    def save(self, path: str | Path) -> None:
        """One safetensors file (tensors "mean" and "cov", the count in its metadata); nothing is pickled."""
        save_safetensors({"mean": self.mean, "cov": self.cov}, path,
                         {"format": "liquidgen-stats", "count": json.dumps(int(self.count))})

    @classmethod
    def load(cls, path: str | Path) -> Stats:
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                stats = cls(f.get_tensor("mean"), f.get_tensor("cov"), int(json.loads(meta["count"])))
        except Exception as e:  # not safetensors, or a safetensors file of something else
            raise ValueError(f"{path} is not a liquidgen statistics file (safetensors with 'mean', 'cov' and a "
                             f"'count' in its metadata): {type(e).__name__}: {e}") from e
        d = stats.mean.shape[0] if stats.mean.ndim == 1 else -1
        if d < 1 or stats.cov.shape != (d, d):
            raise ValueError(f"{path}: inconsistent statistics, mean {tuple(stats.mean.shape)} and cov "
                             f"{tuple(stats.cov.shape)}")
        return stats


def gaussian_stats(features: Tensor) -> Stats:
    """Mean and unbiased covariance of (N, D) features, N >= 2."""
    x = _check(features, "gaussian_stats", 2)
    centred = x - x.mean(0)
    return Stats(x.mean(0), centred.T @ centred / (len(x) - 1), len(x))


def _sqrt_psd(s: Tensor) -> Tensor:
    """The symmetric PSD square root V diag(sqrt(lambda)) V^T; rounding makes the smallest eigenvalues of a
    singular covariance slightly negative, so they are clamped to 0 first."""
    evals, evecs = torch.linalg.eigh((s + s.T) / 2)
    return (evecs * evals.clamp_min(0).sqrt()) @ evecs.T


def frechet_distance(a: Stats, b: Stats) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)): the Frechet (2-Wasserstein) distance between
    N(mu_a, S_a) and N(mu_b, S_b) (Dowson & Landau 1982), FID when the features are Inception's
    (Heusel et al. 2017).

    Only the trace of the square root is needed: the sum of the square roots of the eigenvalues of S_a S_b.
    With symmetric roots R = S^(1/2), S_a S_b = R_a (R_a S_b) has the eigenvalues of (R_a S_b) R_a =
    (R_a R_b)(R_a R_b)^T (XY and YX always share them), i.e. the squared singular values of R_a R_b, so
    Tr (S_a S_b)^(1/2) = sum_i sigma_i(R_a R_b), the nuclear norm. Singular values come out accurate to
    eps * sigma_max; the eigenvalues of R_a S_b R_a, which square the dynamic range, only to eps * sigma_max^2,
    which after the square root left 2e-4 between identical sets of 128-d classifier features (covariance
    eigenvalues from 1e-6 to 600). (scipy's sqrtm of the non-symmetric product, pytorch-fid's route, returns
    complex noise for the singular covariances of N < D samples, which pytorch-fid counters by adding eps * I.)"""
    _same_dim(a.mean, b.mean, "frechet_distance")
    mu_a, mu_b = a.mean.to(torch.float64), b.mean.to(torch.float64)
    s_a, s_b = a.cov.to(torch.float64), b.cov.to(torch.float64)
    if s_a.shape != (len(mu_a), len(mu_a)) or s_b.shape != s_a.shape:
        raise ValueError(f"frechet_distance: covariances {tuple(s_a.shape)} and {tuple(s_b.shape)} do not match "
                         f"the means ({len(mu_a)},)")
    # The distance is >= 0, but between (nearly) identical sets the sum above cancels to rounding noise of either
    # sign: -3.5e-11 for two copies of 3,000 128-d features (covariance eigenvalues 1e-6 to 1e3), shown as "-0.00".
    return max(_frechet(mu_a, s_a, mu_b, s_b, _sqrt_psd(s_b)), 0.0)


def _frechet(mu_a: Tensor, s_a: Tensor, mu_b: Tensor, s_b: Tensor, root_b: Tensor) -> float:
    """`frechet_distance` with the root of S_b given, so a bootstrap pays for it once."""
    trace_root = torch.linalg.svdvals(_sqrt_psd(s_a) @ root_b).sum()
    return float((mu_a - mu_b).square().sum() + s_a.trace() + s_b.trace() - 2 * trace_root)


def bootstrap_frechet(features: Tensor, reference: Stats, rounds: int = 200, level: float = 0.95,
                      seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval (Efron 1979) of the Frechet distance of `features` to fixed `reference` statistics:
    `rounds` times, the N features are resampled with replacement and the FD recomputed; returns the
    (1 - level) / 2 and (1 + level) / 2 quantiles of those FDs, shifted by the resamples' bias (their mean minus
    the point estimate; Efron & Tibshirani 1993, ch. 10) and clipped at 0. Only the samples vary: the
    reference is the same for every contender, so its sampling error does not separate them.

    Why shifted: a resample repeats points, which adds about as much small-sample bias again as FD already
    has at N (its trace term grows as D / N), so the plain percentile interval of 1,000 digit samples in
    128-d classifier features lay wholly above the point estimate (4.05 vs [4.37, 10.01]). Shifted, it is an
    interval of the FD one would measure at this N, the number it is shown beside.

    A resample is a weight vector (how often each point was drawn), so its mean and covariance are weighted
    sums over the features, never a copied (N, D) array. Deterministic for a seed (a CPU generator)."""
    x = _check(features, "bootstrap_frechet", 2)
    _same_dim(x, reference.mean, "bootstrap_frechet")
    if rounds < 2 or not 0 < level < 1:
        raise ValueError(f"bootstrap_frechet: needs rounds >= 2 and 0 < level < 1, got {rounds} and {level}")
    n = len(x)
    centre = x.mean(0)
    x = x - centre  # covariances are shift-invariant; centring keeps the weighted sums accurate
    mu_b, s_b = reference.mean.to(torch.float64), reference.cov.to(torch.float64)
    root_b = _sqrt_psd(s_b)

    def fd(w: Tensor) -> float:
        mu = w @ x / n
        return _frechet(mu, ((x.T * w) @ x - n * torch.outer(mu, mu)) / (n - 1), mu_b - centre, s_b, root_b)

    g = torch.Generator().manual_seed(seed)
    values = torch.tensor([fd(torch.bincount(torch.randint(n, (n,), generator=g), minlength=n).double())
                           for _ in range(rounds)], dtype=torch.float64)
    bias = float(values.mean()) - fd(torch.ones(n, dtype=torch.float64))
    low, high = values.quantile(torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)) - bias
    return max(float(low), 0.0), float(high)


def _mmd2_unbiased(x: Tensor, y: Tensor) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, MMD^2_u) of two equal-size samples with the KID kernel
    k(x, y) = (x.y / d + 1)^3 (Binkowski et al. 2018): within-set means leave out the diagonal k(x_i, x_i),
    which would bias them upwards; the cross mean keeps all m^2 terms."""
    m, d = len(x), x.shape[1]
    kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(within - 2 * kxy.mean())


def kernel_inception_distance(a: Tensor, b: Tensor, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): the unbiased MMD^2 estimate with the cubic polynomial kernel, averaged over
    `subsets` random subsets of `subset_size` points of each set (drawn without replacement, the size clipped to
    the smaller set). Returns (mean, std over subsets); the std is the population one (ddof 0, like
    torch-fidelity). Unbiased, so it can be slightly negative for samples of one distribution.
    Deterministic for a seed (a CPU generator, independent of the global RNG)."""
    x, y = _check(a, "kernel_inception_distance (first set)", 2), _check(b, "kernel_inception_distance "
                                                                          "(second set)", 2)
    _same_dim(x, y, "kernel_inception_distance")
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"kernel_inception_distance: needs subsets >= 1 and subset_size >= 2, got {subsets} and "
                         f"{subset_size}")
    m = min(subset_size, len(x), len(y))
    g = torch.Generator().manual_seed(seed)
    values = torch.tensor([_mmd2_unbiased(x[torch.randperm(len(x), generator=g)[:m]],
                                          y[torch.randperm(len(y), generator=g)[:m]]) for _ in range(subsets)],
                          dtype=torch.float64)
    return float(values.mean()), float(values.std(correction=0))


def _column_block(rows: int) -> int:
    return max(1, BLOCK_ENTRIES // max(rows, 1))


def _kth_radius(x: Tensor, k: int, batch: int) -> Tensor:
    """Distance of each point of x to its k-th nearest neighbour among the *other* points of x.

    Blocks of `batch` rows by as many columns as fit BLOCK_ENTRIES; each row keeps its k smallest distances
    so far. The point itself is excluded by index (its block diagonal set to inf), not by skipping the
    smallest distance, which would be wrong where a duplicate point rounds below the self-distance."""
    radii = []
    for r0 in range(0, len(x), batch):
        rows = x[r0:r0 + batch]
        best = torch.full((len(rows), 0), float("inf"), dtype=x.dtype)
        step = _column_block(len(rows))
        for c0 in range(0, len(x), step):
            dist = torch.cdist(rows, x[c0:c0 + step])
            i = torch.arange(len(rows))
            j = i + r0 - c0
            own = (j >= 0) & (j < dist.shape[1])
            dist[i[own], j[own]] = float("inf")
            best = torch.cat([best, dist], 1).topk(min(k, best.shape[1] + dist.shape[1]), 1, largest=False).values
        radii.append(best[:, k - 1])
    return torch.cat(radii)


def _inside(points: Tensor, centres: Tensor, radii: Tensor, batch: int) -> Tensor:
    """Whether each point lies in at least one closed ball (centre, radius) (the `<=` of Kynkaanniemi et al.)."""
    hits = []
    for r0 in range(0, len(points), batch):
        rows = points[r0:r0 + batch]
        hit = torch.zeros(len(rows), dtype=torch.bool)
        step = _column_block(len(rows))
        for c0 in range(0, len(centres), step):
            hit |= (torch.cdist(rows, centres[c0:c0 + step]) <= radii[c0:c0 + step]).any(1)
            if hit.all():
                break
        hits.append(hit)
    return torch.cat(hits)


def precision_recall(real: Tensor, fake: Tensor, k: int = 3, batch: int = 10000) -> dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): a set's manifold is the union of
    closed balls around its points, each reaching that point's k-th nearest neighbour in the set (the point
    itself excluded). Precision: the fraction of fake points inside the real manifold (quality); recall: the
    fraction of real points inside the fake manifold (coverage).

    Pairwise distances are computed in blocks of `batch` rows, and columns such that no block exceeds
    BLOCK_ENTRIES float64 values, so 10k x 10k sets never materialise the full distance matrix."""
    if k < 1 or batch < 1:
        raise ValueError(f"precision_recall: needs k >= 1 and batch >= 1, got k={k}, batch={batch}")
    r = _check(real, "precision_recall (real)", k + 1)
    f = _check(fake, "precision_recall (fake)", k + 1)
    _same_dim(r, f, "precision_recall")
    precision = _inside(f, r, _kth_radius(r, k, batch), batch).double().mean()
    recall = _inside(r, f, _kth_radius(f, k, batch), batch).double().mean()
    return {"precision": float(precision), "recall": float(recall)}

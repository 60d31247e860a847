"""Vector quantisation with an EMA codebook (VQ-VAE, van den Oord et al. 2017, appendix A.1; Razavi et
al. 2019): the bottleneck of liquidgen's own VQ-VAE.

Each encoder vector z_e is replaced by its nearest codebook entry e_k. Gradients pass the quantiser
unchanged (the straight-through estimator), the encoder is pulled towards its codes by the commitment
loss beta ||z_e - sg(e_k)||^2, and the codes follow the encoder by exponential moving averages of the
vectors assigned to them, not by gradients. Codes nobody uses for a while are restarted on random
encoder vectors of the current batch, so the codebook does not collapse onto a few entries.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class VectorQuantizer(nn.Module):
    """`codes` entries of dimension `dim`. The codebook and its EMA statistics are buffers: the optimizer
    never sees them, and a model-weight EMA copies them as they are."""

    def __init__(self, codes: int, dim: int, decay: float = 0.99, commitment: float = 0.25,
                 restart_threshold: float = 1.0, eps: float = 1e-5):
        super().__init__()
        if codes < 2 or dim < 1:
            raise ValueError(f"a codebook needs >= 2 codes of dimension >= 1, got {codes} x {dim}")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"codebook decay must lie in (0, 1), got {decay}")
        self.codes, self.dim, self.decay, self.commitment = codes, dim, decay, commitment
        self.restart_threshold, self.eps = restart_threshold, eps
        embed = torch.randn(codes, dim)
        self.register_buffer("embed", embed)
        self.register_buffer("cluster_size", torch.ones(codes))  # EMA of how many vectors each code took
        self.register_buffer("embed_sum", embed.clone())  # EMA of the sum of those vectors

    def nearest(self, flat: Tensor) -> Tensor:
        """Index of the nearest code for each row of `flat` (N, dim), by squared Euclidean distance."""
        distances = (flat.square().sum(1, keepdim=True) - 2 * flat @ self.embed.t()
                     + self.embed.square().sum(1)[None])
        return distances.argmin(1)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """z (B, dim, h, w) -> (quantised z with straight-through gradient, commitment loss, stats:
        `indices` (B, h, w), `perplexity` and `usage` (share of codes used in this batch)). Always in
        float32, also under bf16 autocast: bf16 distances would pick wrong codes, and the EMA sums drift."""
        with torch.autocast(z.device.type, enabled=False):
            return self._forward(z.float())

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        flat = z.movedim(1, -1).reshape(-1, self.dim)
        idx = self.nearest(flat)
        quantized = self.embed[idx].view(*z.shape[:1], *z.shape[2:], self.dim).movedim(-1, 1)
        if self.training:
            self._update(flat, idx)
        commitment = self.commitment * F.mse_loss(z, quantized.detach())
        counts = torch.bincount(idx, minlength=self.codes).float()
        p = counts / counts.sum()
        stats = {"indices": idx.view(z.shape[0], *z.shape[2:]),
                 "perplexity": torch.exp(-(p * torch.log(p + 1e-10)).sum()),
                 "usage": (counts > 0).float().mean()}
        # Straight-through: the forward value is the code, the gradient w.r.t. z is the identity.
        return z + (quantized - z).detach(), commitment, stats

    def quantize(self, z: Tensor) -> Tensor:
        """The nearest codes of z (B, dim, h, w), no gradient, no codebook update."""
        with torch.autocast(z.device.type, enabled=False):
            flat = z.float().movedim(1, -1).reshape(-1, self.dim)
            return self.embed[self.nearest(flat)].view(*z.shape[:1], *z.shape[2:], self.dim).movedim(-1, 1)

    @torch.no_grad()
    def _update(self, flat: Tensor, idx: Tensor) -> None:
        onehot = F.one_hot(idx, self.codes).to(flat.dtype)  # (N, codes)
        self.cluster_size.lerp_(onehot.sum(0), 1 - self.decay)  # N_k <- g N_k + (1 - g) n_k
        self.embed_sum.lerp_(onehot.t() @ flat, 1 - self.decay)  # m_k <- g m_k + (1 - g) sum of z_e -> k
        # e_k = m_k / N_k, with N_k Laplace-smoothed so that a rarely used code does not divide by ~0.
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codes * self.eps) * n
        self.embed.copy_(self.embed_sum / smoothed[:, None])
        self._restart_dead(flat)

    def _restart_dead(self, flat: Tensor) -> None:
        """Codes whose EMA count fell below `restart_threshold` take random vectors of this batch."""
        dead = (self.cluster_size < self.restart_threshold).nonzero().squeeze(1)
        if len(dead) == 0:
            return
        picks = flat[torch.randint(0, len(flat), (len(dead),), device=flat.device)]
        self.embed[dead] = picks
        self.embed_sum[dead] = picks * self.restart_threshold
        self.cluster_size[dead] = self.restart_threshold

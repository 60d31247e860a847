"""The optional adversarial loss of `train-autoencoder`: a patch discriminator (pix2pix, Isola et al.
2017) with hinge losses and taming-transformers' adaptive weight (Esser et al. 2021, eq. 7), switched on
after a warm-up so that it sharpens reconstructions that are already close instead of fighting noise."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PatchDiscriminator(nn.Module):
    """Strided 4x4 convolutions down to a map of logits, each judging one patch of the image."""

    def __init__(self, image_channels: int, channels: int = 64, layers: int = 3):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(image_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = channels
        for i in range(1, layers):
            out = channels * min(2**i, 8)
            mods += [nn.Conv2d(width, out, 4, 2 if i < layers - 1 else 1, 1), nn.GroupNorm(min(32, out // 4), out),
                     nn.LeakyReLU(0.2)]
            width = out
        mods.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Hinge loss (Lim & Ye 2017): push real logits above +1 and fake ones below -1."""
    return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())


def generator_loss(fake_logits: Tensor) -> Tensor:
    return -fake_logits.mean()


def adaptive_weight(reconstruction_loss: Tensor, gan_loss: Tensor, last_layer: Tensor, cap: float = 1e4) -> Tensor:
    """lambda = ||grad_L rec|| / (||grad_L gan|| + 1e-4) at the decoder's last layer L (taming, eq. 7):
    the adversarial gradient is scaled to the size of the reconstruction gradient, whatever their losses'
    magnitudes. No gradient flows through lambda itself."""
    g_rec = torch.autograd.grad(reconstruction_loss, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_gan.norm() + 1e-4)).clamp(0, cap).detach()

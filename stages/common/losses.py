"""Losses that several models share, as free functions in float32 (safe under autocast).

Each model module keeps the names its paper uses (DRNET's eq. 4, SVG's eq. 6, ...) as one-line
calls of these, so an equation is written once however many papers use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def reconstruction_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Squared error of a decoded frame (or any tensor), mean over elements. (B, ...) each."""
    return F.mse_loss(pred.float(), target.float())


def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """z = μ + σ ε, ε ~ N(0, I) (Kingma & Welling), drawn from `generator` when given."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def bce_toward_half(logits: Tensor) -> Tensor:
    """-[1/2 log D + 1/2 log(1 - D)], D = sigmoid(logits): cross-entropy toward 1/2, minimal
    (log 2) where a critic cannot tell (DRNET eq. 4, DR-SVG eq. 6)."""
    target = torch.full_like(logits, 0.5, dtype=torch.float32)
    return F.binary_cross_entropy_with_logits(logits.float(), target)


def pair_critic_loss(
    logits_same: Tensor, logits_other: Tensor, other_is_same: Tensor | None = None
) -> Tensor:
    """-[log C(same pair) + log(1 - C(other pair))], C = sigmoid(logits), (B,) each: a critic of
    "do these two codes come from one video" (DRNET eq. 3, DR-SVG eq. 5). other_is_same (B,) in
    {0, 1} labels the "other" pairs whose rows happen to share a video (default: none do)."""
    same = F.binary_cross_entropy_with_logits(logits_same.float(), torch.ones_like(logits_same))
    target = torch.zeros_like(logits_other) if other_is_same is None else other_is_same
    return same + F.binary_cross_entropy_with_logits(logits_other.float(), target.float())


def gan_discriminator_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """The GAN discriminator's loss -log D(real) - log(1 - D(fake)), on logits (means)."""
    return F.softplus(-logits_real.float()).mean() + F.softplus(logits_fake.float()).mean()


def gan_generator_loss(logits_fake: Tensor) -> Tensor:
    """The non-saturating generator loss -log D(fake) = softplus(-l) (Goodfellow et al.; the one
    Mescheder et al. 2018 and ALAE use): log(1 - D)'s fixed point, with gradients when D wins."""
    return F.softplus(-logits_fake.float()).mean()


def r1_penalty(logits_real: Tensor, real: Tensor | Sequence[Tensor], scale=1.0) -> Tensor:
    """R1 of Mescheder et al. 2018 (their eq. 9 without γ/2): the batch mean of ||∇_x D(x)||² on
    real inputs `real` (a tensor or several, each (B, ...), requiring grad). `scale`: fp16's loss
    scale; the gradient is taken of the scaled logits (no underflow) and unscaled after."""
    inputs = [real] if isinstance(real, Tensor) else list(real)
    grads = torch.autograd.grad(logits_real.float().sum() * scale, inputs, create_graph=True)
    return sum((g.float() / scale).square().flatten(1).sum(1) for g in grads).mean()

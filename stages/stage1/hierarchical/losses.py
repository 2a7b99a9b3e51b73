"""Losses of the hierarchical model (main paper §3.2.4, eq. 1 and 4-8), as free functions.

The reconstruction is a mean over pixel values (as drnet.py); the other terms are per frame or per
slot, and the model puts them on the reconstruction's scale (model.Hierarchical.loss_weights).
Latent tensors are (B, N, D) per slot or (B, D); everything is computed in float32, so the
functions are safe under autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vidlat.stages.common.losses import (  # noqa: F401 (re-exported: the paper's names)
    gan_discriminator_loss,
    gan_generator_loss,
    r1_penalty,
    reconstruction_loss,
)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) of Kingma & Welling, summed over all but the batch axis:
    (B, ...) -> (B,)."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.square() + logvar.exp() - 1 - logvar).flatten(1).sum(1)


def background_loss(z_back: torch.Tensor, z_back_other: torch.Tensor) -> torch.Tensor:
    """Eq. 4: ||z_back - z'_back||^2 between two frames of one video (B, Db) each, mean over the
    batch, divided by the mean squared distance of all 2B codes to their mean: normalised so it
    cannot be met by shrinking z_back (a shared scale cancels), ~2 for unrelated pairs, 0 when
    both frames of every pair share their code."""
    a, b = z_back.float(), z_back_other.float()
    both = torch.cat([a, b])
    spread = (both - both.mean(0)).square().sum(1).mean()
    return (a - b).square().sum(1).mean() / spread.clamp(min=1e-8)


def content_distances(content: torch.Tensor, content_other: torch.Tensor) -> torch.Tensor:
    """||z_c^i - z'_c^j||^2 for every slot i of x and j of x': (B, N, Dc) x2 -> (B, N, N)."""
    a, b = content.float(), content_other.float()
    return (a[:, :, None] - b[:, None]).square().sum(-1)


def match_slots(distances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1: for each slot i of x, the nearest slot j1 of x' and the second nearest j2, from
    distances (B, N, N): two int64 (B, N). With N = 1, j2 = j1."""
    k = min(2, distances.shape[-1])
    order = distances.topk(k, dim=-1, largest=False).indices  # (B, N, k)
    return order[..., 0], order[..., k - 1]


def content_triplet_loss(
    distances: torch.Tensor, j1: torch.Tensor, j2: torch.Tensor, margin: float
) -> torch.Tensor:
    """Eq. 5 (FaceNet's triplet loss): [d(i, j1) - d(i, j2) + beta]_+ with j1, j2 the nearest and
    second nearest objects of x' (eq. 1); mean over (B, N). Zero with a single slot (j1 = j2)."""
    if distances.shape[-1] < 2:
        return distances.new_zeros(())
    d1 = distances.gather(-1, j1[..., None]).squeeze(-1)
    d2 = distances.gather(-1, j2[..., None]).squeeze(-1)
    return F.relu(d1 - d2 + margin).mean()


def pose_discriminator_loss(
    logits_same: torch.Tensor, logits_other: torch.Tensor, other_weight: torch.Tensor
) -> torch.Tensor:
    """Eq. 6: -E[log Dis_p(z_p^i, ~z_p)] - E[log(1 - Dis_p(z_p^i, z_p^j))], Dis_p = sigmoid(logit).

    As printed, Dis_p outputs 1 for a pair with an object of another video (~z_p, logits_other) and
    0 for the same object in x and x' (j matched by eq. 1, logits_same). other_weight (M,) drops
    "other" pairs that happen to come from the same video. BCE on logits: stable under autocast."""
    same = F.binary_cross_entropy_with_logits(
        logits_same.float(), torch.zeros_like(logits_same, dtype=torch.float32)
    )
    w = other_weight.float()
    other = F.binary_cross_entropy_with_logits(
        logits_other.float(), torch.ones_like(w), weight=w, reduction="sum"
    ) / w.sum().clamp(min=1.0)
    return same + other


def pose_encoder_loss(logits_same: torch.Tensor) -> torch.Tensor:
    """Eq. 7: E[log(1 - Dis_p(z_p^i, z_p^j))], minimised by E_p (Dis_p held): it pushes Dis_p to
    call the same object's poses "different". log(1 - sigmoid(l)) = -softplus(l); the value is
    <= 0 and equals log(1/2) where Dis_p cannot tell."""
    return -F.softplus(logits_same.float()).mean()


def mask_loss(glimpse_masks: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 8: (mean over the h x w glimpse of m^i - 0.5)^2, mean over slots and batch, each slot
    times `weight` (B, N) when given (its presence: the prior acts where an object is).
    glimpse_masks (B, N, 1, h, w). Used early in training only (§3.2.4: the first half)."""
    per_slot = (glimpse_masks.float().mean(dim=(-3, -2, -1)) - 0.5).square()  # (B, N)
    return (per_slot if weight is None else per_slot * weight.float()).mean()


def bernoulli_kl(logits: torch.Tensor, prior: float) -> torch.Tensor:
    """KL(Bernoulli(sigmoid(logits)) || Bernoulli(prior)) summed over all but the batch axis:
    (B, ...) -> (B,). The presence prior of the grid detector (SPACE's z_pres prior)."""
    logits = logits.float()
    p, log_p, log_q = torch.sigmoid(logits), F.logsigmoid(logits), F.logsigmoid(-logits)
    kl = p * (log_p - math.log(prior)) + (1 - p) * (log_q - math.log(1 - prior))
    return kl.flatten(1).sum(1)


def image_generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The image adversarial loss of §3.2.4 for the autoencoder: the non-saturating GAN loss that
    Mescheder et al. 2018 (the paper's [19]) use, -log D(x_hat)."""
    return gan_generator_loss(logits_fake)


def image_discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's GAN loss: -log D(x) - log(1 - D(x_hat)), on logits."""
    return gan_discriminator_loss(logits_real, logits_fake)

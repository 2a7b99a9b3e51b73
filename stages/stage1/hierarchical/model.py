"""The hierarchical image-reconstruction network of the main paper (§3.2, appendix A.1).

A frame x is split into a background and N object slots:
- background VAE (§3.2.1): E_back -> z_back -> D_back. Training decodes x's background from z'_back
  of the other frame x' of the pair (the swap), so the background holds only what both frames share.
- object VAE (§3.2.2): [x, x - background] -> a detector -> z_where^i for i = 1..N -> Spatial
  Transformer crop -> E_p, E_c -> z_p^i, z_c^i -> Spatial Broadcast Decoder D_obj -> RGB glimpse
  and mask, from z_p^i and z_c^i mixed with the matched object of x' (eq. 1-2, alpha ~ U[0, e/E],
  appendix A.1). The detector (the paper leaves its form open beyond AIR's) is either
  `grid` (the default: a CoordConv map of G x G cell proposals, the N most present kept with
  non-maximum suppression, each with an explicit presence that scales its mask; nets.GridDetector)
  or `lstm` (a CoordConv encoder E -> h -> AIR's LSTM, one z_where per step; nets.Detector).
- composition (§3.2.3, eq. 3): glimpses and masks pasted back with the inverse transform.
Losses (§3.2.4): reconstruction, KL, image GAN with R1 (off by default), L_back (eq. 4, normalised
by z_back's spread), content triplet (eq. 5), pose discriminator Dis_p (eq. 6-7), mask prior
(eq. 8, early in training), and for the grid detector a Bernoulli prior on presence. The
reconstruction is a per-value mean squared error; every other term is in nats per frame times
kl_weight / (values per frame), i.e. all on the scale of a Gaussian decoder's ELBO. For the first
`background_first` of training the object masks are held at zero, so the background learns first.

Training batches hold pairs (x, x') of one video; both are reconstructed, each with the other as
its partner, in one pass over 2B frames. Training progress e/E comes from `self.progress`, which
train_ae sets to step / steps before each step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from vidlat.stages.common.distributed import direct
from vidlat.stages.common.losses import reparameterize
from vidlat.stages.common.nets import MLP, ConvDecoder, conv_depth, dcgan_init
from vidlat.stages.stage1.base import Stage1Model
from vidlat.stages.stage1.hierarchical import losses as L
from vidlat.stages.stage1.hierarchical.align import align_fields, alignment_specs
from vidlat.stages.stage1.hierarchical.config import HierarchicalConfig
from vidlat.stages.stage1.hierarchical.nets import (
    MIN_GLIMPSE,
    CoordConvEncoder,
    Detector,
    GaussianEncoder,
    GridDetector,
    ImageDiscriminator,
    SpatialBroadcastDecoder,
    check_glimpse,
    compose,
    crop,
    paste,
)
from vidlat.store.format import FieldSpec

CRITICS = ("pose_critic", "image_critic")
SLOT_FIELDS = ("z_where", "z_pose", "z_content", "presence")  # (…, N, …): permuted together


@dataclass
class Objects:
    """Object VAE posteriors (B, N, D); the detector's z_where (B, N, 4), sampled in training."""

    where_mu: torch.Tensor
    where_logvar: torch.Tensor
    where: torch.Tensor
    pose_mu: torch.Tensor
    pose_logvar: torch.Tensor
    content_mu: torch.Tensor
    content_logvar: torch.Tensor
    presence_logits: torch.Tensor | None = None  # (B, N): the grid detector's; None for lstm


@dataclass
class PairPass:
    """One training pass over 2B frames: posteriors, eq. 1 matches (2B, N), rendered layers."""

    back_mu: torch.Tensor
    back_logvar: torch.Tensor
    objects: Objects
    distances: torch.Tensor  # (2B, N, N) squared content distances to the partner's slots
    j1: torch.Tensor
    j2: torch.Tensor
    layers: dict[str, torch.Tensor]


class Hierarchical(Stage1Model):
    """Background VAE + object VAE with N slots, composed by eq. 3; Dis_p and an image critic."""

    name = "hierarchical"
    config_class = HierarchicalConfig

    def __init__(self, config: HierarchicalConfig, image_size: int, channels: int):
        super().__init__(config, image_size, channels)
        c = config
        conv_depth(image_size)  # ConfigError for sizes the conv nets cannot halve to 4x4
        self.slots, self.grid = c.slots, c.detector == "grid"
        self.values_per_frame = channels * image_size * image_size
        native = 2 ** round(math.log2(c.object_scale * image_size))  # a window's side in pixels
        default = min(image_size, max(MIN_GLIMPSE, native if self.grid else image_size // 4))
        self.glimpse = c.glimpse_size or default
        check_glimpse(self.glimpse, image_size)
        self.progress = 0.0  # e/E of appendix A.1, set by the training loop
        g = self.glimpse
        self.back_encoder = GaussianEncoder(channels, image_size, c.back_dim, c.width)
        self.back_decoder = ConvDecoder(c.back_dim, channels, image_size, c.width)
        if self.grid:
            cells = c.grid_cells or max(1, image_size // 8)
            self.detector = GridDetector(2 * channels, image_size, cells, c.width, c.slots,
                                         c.object_scale, c.scale_ratio, c.where_logvar_init,
                                         c.nms_radius)  # fmt: skip
            self.detector.body.apply(dcgan_init)
        else:
            self.encoder = CoordConvEncoder(2 * channels, image_size, c.feature_dim, c.width)
            self.encoder.apply(dcgan_init)
            self.detector = Detector(
                c.feature_dim, c.lstm_hidden, c.slots, c.size_range, c.where_logvar_init
            )
        self.pose_encoder = GaussianEncoder(channels, g, c.pose_dim, c.glimpse_width)
        self.content_encoder = GaussianEncoder(channels, g, c.content_dim, c.glimpse_width)
        z_obj = c.pose_dim + c.content_dim
        self.object_decoder = SpatialBroadcastDecoder(z_obj, channels, g, c.sbd_width)
        self.pose_critic = MLP(2 * c.pose_dim, [c.critic_hidden] * 2, 1)
        self.image_critic = ImageDiscriminator(channels, image_size, c.disc_width)
        # DCGAN init for the DCGAN-style nets; the others (LSTM, SBD, critics) keep PyTorch's.
        for net in (self.back_encoder, self.back_decoder):
            net.apply(dcgan_init)
        self.pose_encoder.apply(dcgan_init)
        self.content_encoder.apply(dcgan_init)

    def latent_fields(self) -> list[FieldSpec]:
        c, n = self.config, self.slots
        return [
            FieldSpec("z_back", "content", (c.back_dim,)),
            FieldSpec("z_where", "where", (n, 4)),
            FieldSpec("z_pose", "pose", (n, c.pose_dim)),
            FieldSpec("z_content", "content", (n, c.content_dim)),
            FieldSpec("presence", "mask", (n,)),
        ]

    def store_fields(self) -> list[FieldSpec]:
        return self.latent_fields() + alignment_specs(self.slots)

    def postprocess_latents(self, latents: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Appendix A.2 (eq. 9-10): each video's slots permuted, frame after frame, to follow the
        same objects by content; adds the applied `perm` and the per-frame `ambiguous` flag."""
        return align_fields(latents, SLOT_FIELDS, "z_content")

    # -- inference and generation

    def infer_objects(self, x: torch.Tensor, background: torch.Tensor, sample: bool) -> Objects:
        """Object VAE inference (§3.2.2): x (B, C, H, W) and its background -> posteriors."""
        x_diff = x - background.detach().to(x.dtype)  # a detection aid: the background VAE is
        inputs = torch.cat([x, x_diff], dim=1)  # trained by eq. 3 and 4, not through it
        logits = None
        if self.grid:
            where_mu, where_logvar, where, logits, _ = self.detector(inputs, sample)
        else:
            where_mu, where_logvar, where = self.detector(self.encoder(inputs), sample)
        b, n = where.shape[:2]
        glimpses = crop(x, where, self.glimpse).flatten(0, 1)  # (B*N, C, g, g)
        pose = [t.reshape(b, n, -1) for t in self.pose_encoder(glimpses)]  # (B, N, Dp) x2
        content = [t.reshape(b, n, -1) for t in self.content_encoder(glimpses)]  # (B, N, Dc) x2
        return Objects(where_mu, where_logvar, where, *pose, *content, logits)

    def draw(self, where, pose, content, background, presence=None) -> dict[str, torch.Tensor]:
        """D_obj and eq. 3: z_where (B, N, 4), z_p (B, N, Dp), z_c (B, N, Dc), background
        (B, C, H, W), and for the grid detector presence (B, N) in [0, 1], which scales each
        slot's mask -> the layers of decompose()."""
        b, n = pose.shape[:2]
        rgb, mask = self.object_decoder(torch.cat([pose, content], dim=-1).flatten(0, 1))
        glimpses = torch.cat([rgb, mask], dim=1).reshape(b, n, -1, self.glimpse, self.glimpse)
        pasted = paste(glimpses, where, self.image_size)  # (B, N, C+1, H, W)
        objects, masks = pasted[:, :, :-1], pasted[:, :, -1:]
        if presence is not None:
            masks = masks * presence.float()[:, :, None, None, None]
        composite, weights = compose(background, objects, masks)
        return {
            "background": background.float(),  # (B, C, H, W)
            "glimpses": glimpses[:, :, :-1],  # (B, N, C, g, g)
            "glimpse_masks": glimpses[:, :, -1:],  # (B, N, 1, g, g)
            "masks": weights,  # (B, N, 1, H, W): eq. 3's pasted masks, sum <= 1
            "objects": objects * masks,  # (B, N, C, H, W): each object alone, on black
            "composite": composite,  # (B, C, H, W)
        }

    def encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Posterior means; presence (B, N): the grid detector's probability (which decode
        applies), for the lstm detector the mean mask over the slot's glimpse (0: empty slot)."""
        back_mu, _ = self.back_encoder(x)  # (B, Db)
        obj = self.infer_objects(x, self.back_decoder(back_mu), sample=False)
        if obj.presence_logits is not None:
            presence = torch.sigmoid(obj.presence_logits.float())
        else:
            z_obj = torch.cat([obj.pose_mu, obj.content_mu], dim=-1)  # (B, N, Dp + Dc)
            _, mask = self.object_decoder(z_obj.flatten(0, 1))  # (B*N, 1, g, g)
            presence = mask.mean(dim=(1, 2, 3)).reshape(obj.where.shape[:2])
        return {
            "z_back": back_mu,
            "z_where": obj.where,
            "z_pose": obj.pose_mu,
            "z_content": obj.content_mu,
            "presence": presence,
        }

    def decompose(self, z: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Latents -> layers for the paper's Figure 3: background (B, C, H, W), glimpses
        (B, N, C, h, w), glimpse_masks (B, N, 1, h, w), masks (B, N, 1, H, W) pasted, objects
        (B, N, C, H, W) each pasted alone, composite (B, C, H, W); float32 in [0, 1]."""
        background = self.back_decoder(z["z_back"])
        presence = z["presence"].clamp(0, 1) if self.grid else None
        return self.draw(z["z_where"], z["z_pose"], z["z_content"], background, presence)

    def decode(
        self, z: dict[str, torch.Tensor], context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Eq. 3 from stored fields (presence scales the masks for the grid detector and is
        informational for lstm; context is unused)."""
        return self.decompose(z)["composite"]

    # -- training

    def mixing_ratio(self, shape: tuple[int, ...], progress: float, like: torch.Tensor):
        """alpha of eq. 2, (*shape, 1): U[0, e/E] per object (appendix A.1); 0 w/o swap."""
        if not self.config.content_swap:
            return like.new_zeros(*shape, 1)
        return torch.rand(*shape, 1, device=like.device, dtype=like.dtype) * progress

    def pair_pass(self, x: torch.Tensor, progress: float) -> PairPass:
        """x (2B, C, H, W): the frames x of B pairs, then their x'; row r's partner is r +- B."""
        half = x.shape[0] // 2
        back_mu, back_logvar = self.back_encoder(x)  # (2B, Db)
        z_back = reparameterize(back_mu, back_logvar)
        if self.config.background_swap:  # §3.2.1: x's background is decoded from z'_back
            z_back = z_back.roll(half, 0)
        background = self.back_decoder(z_back)
        obj = self.infer_objects(x, background, sample=True)
        pose = reparameterize(obj.pose_mu, obj.pose_logvar)  # (2B, N, Dp)
        content = reparameterize(obj.content_mu, obj.content_logvar)  # (2B, N, Dc)
        distances = L.content_distances(obj.content_mu, obj.content_mu.roll(half, 0))
        j1, j2 = L.match_slots(distances.detach())  # eq. 1, and the runner-up for eq. 5
        matched = content.roll(half, 0).gather(1, j1[..., None].expand_as(content))
        alpha = self.mixing_ratio(content.shape[:2], progress, content)
        mixed = (1 - alpha) * content + alpha * matched  # eq. 2
        presence = None
        if obj.presence_logits is not None:
            presence = torch.sigmoid(obj.presence_logits)
        if progress < self.config.background_first:  # the background learns the scene first
            presence = pose.new_zeros(pose.shape[:2])
        layers = self.draw(obj.where, pose, mixed, background, presence)
        return PairPass(back_mu, back_logvar, obj, distances, j1, j2, layers)

    def pose_pairs(self, out: PairPass, video: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Dis_p inputs, flattened to (2B*N, Dp): z_p^i, the matched z_p^j of x' (eq. 1), the
        same slot of the previous batch row (another video); and that pair's weight (2B*N,)."""
        pose = out.objects.pose_mu  # posterior means: the poses that are stored
        half, n = pose.shape[0] // 2, pose.shape[1]
        same = pose.roll(half, 0).gather(1, out.j1[..., None].expand_as(pose))
        other = pose.roll(1, 0)
        weight = (video != video.roll(1, 0))[:, None].expand(-1, n)
        return pose.flatten(0, 1), same.flatten(0, 1), other.flatten(0, 1), weight.flatten()

    def pose_logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.pose_critic(torch.cat([a, b], dim=-1)).squeeze(-1)  # (M,)

    def loss_weights(self, progress: float) -> dict[str, float]:
        """The active terms of §3.2.4 and their weights at training progress e/E."""
        c = self.config
        nats = {"kl": 1.0, "back": c.back_weight, "triplet": c.triplet_weight,
                "mask": c.mask_weight if progress < c.mask_until else 0.0}  # fmt: skip
        if self.grid:
            nats["presence"] = c.presence_weight
        if c.pose_adversarial:
            nats["pose_adv"] = c.pose_adv_weight
        if c.image_adv_weight > 0:
            nats["image_adv"] = c.image_adv_weight
        scale = c.kl_weight / self.values_per_frame  # nats per frame -> the per-value MSE's scale
        return {"rec": 1.0, **{k: w * scale for k, w in nats.items()}}

    def model_losses(self, out: PairPass, x, video) -> dict[str, torch.Tensor]:
        """Every autoencoder term of §3.2.4, unweighted (keys as in loss_weights): the
        reconstruction as a mean per pixel value, the others in nats per frame (per-slot terms
        summed over the N slots)."""
        c, obj, half, n = self.config, out.objects, x.shape[0] // 2, self.slots
        kl = (
            L.gaussian_kl(out.back_mu, out.back_logvar)
            + L.gaussian_kl(obj.where_mu, obj.where_logvar)
            + L.gaussian_kl(obj.pose_mu, obj.pose_logvar)
            + L.gaussian_kl(obj.content_mu, obj.content_logvar)
        )
        weight = None  # the grid detector's mask loss acts where a slot holds an object
        if obj.presence_logits is not None:
            weight = torch.sigmoid(obj.presence_logits.detach().float())
        terms = {
            "rec": L.reconstruction_loss(out.layers["composite"], x),
            "kl": kl.mean(),
            "back": L.background_loss(out.back_mu[:half], out.back_mu[half:]),
            "triplet": n * L.content_triplet_loss(out.distances, out.j1, out.j2, c.triplet_margin),
            "mask": n * L.mask_loss(out.layers["glimpse_masks"], weight),
        }
        if obj.presence_logits is not None:
            terms["presence"] = L.bernoulli_kl(obj.presence_logits, c.presence_prior).mean()
        if c.pose_adversarial:
            pose, same, _, _ = self.pose_pairs(out, video)
            terms["pose_adv"] = n * L.pose_encoder_loss(self.pose_logits(pose, same))
        if c.image_adv_weight > 0:
            terms["image_adv"] = L.image_generator_loss(self.image_critic(out.layers["composite"]))
        return terms

    def make_optimizers(self, lr: float | None = None) -> dict[str, torch.optim.Optimizer]:
        lr, betas, c = self.config.lr if lr is None else lr, self.config.betas, self.config
        model = [p for n, p in self.named_parameters() if not n.startswith(CRITICS)]
        optimizers = {"model": torch.optim.Adam(model, lr=lr, betas=betas)}
        if c.pose_adversarial:
            critic = self.pose_critic.parameters()
            optimizers["pose_critic"] = torch.optim.Adam(critic, lr=lr, betas=betas)
        if c.image_adv_weight > 0:
            critic = self.image_critic.parameters()
            optimizers["image_critic"] = torch.optim.Adam(critic, lr=lr, betas=betas)
        return optimizers

    def model_pass(self, x, video, progress: float) -> tuple[torch.Tensor, dict, dict]:
        """The autoencoder's pass (critics held): the weighted loss, its terms, and the critics'
        inputs detached (Dis_p's pose pairs, the composite), so nothing else leaves the graph."""
        out = self.pair_pass(x, progress)
        terms = self.model_losses(out, x, video)
        weights = self.loss_weights(progress)
        loss = sum(weights[k] * terms[k] for k in weights)
        critic_inputs = {"composite": out.layers["composite"].detach()}
        if self.config.pose_adversarial:
            critic_inputs["pose_pairs"] = tuple(t.detach() for t in self.pose_pairs(out, video))
        return loss, terms, critic_inputs

    def train_step(self, batch, optimizers, amp, run=direct) -> dict[str, torch.Tensor]:
        """batch: x_t, x_tk float (B, C, H, W) in [0, 1] (x and x' of one video each), video (B,).
        Updates the autoencoder (critics held), then Dis_p (eq. 6) and the image critic."""
        x = torch.cat([batch["x_t"], batch["x_tk"]])  # (2B, C, H, W)
        video = batch["video"].repeat(2)  # (2B,)
        progress = min(max(float(self.progress), 0.0), 1.0)
        for name in CRITICS:
            getattr(self, name).requires_grad_(False)
        with amp.autocast():
            loss, terms, critic_inputs = run(self.model_pass, x, video, progress)
        _update(optimizers["model"], loss, amp)
        for name in CRITICS:
            getattr(self, name).requires_grad_(True)
        critic_terms = self.critic_step(critic_inputs, x, optimizers, amp, run)
        amp.update()
        return {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}, **critic_terms}

    def critic_step(self, inputs: dict, x, optimizers, amp, run=direct) -> dict[str, torch.Tensor]:
        """Dis_p on eq. 6 and the image critic on the GAN loss + gamma/2 R1 (Mescheder et al.),
        both on detached inputs, so neither updates the autoencoder."""
        logs = {}
        if self.config.pose_adversarial:

            def pose_critic_loss(pose, same, other, weight):
                logits_same, logits_other = (
                    self.pose_logits(pose, same),
                    self.pose_logits(pose, other),
                )
                return L.pose_discriminator_loss(logits_same, logits_other, weight)

            with amp.autocast():
                loss = run(pose_critic_loss, *inputs["pose_pairs"])
            _update(optimizers["pose_critic"], loss, amp)
            logs["pose_critic"] = loss.detach()
        if self.config.image_adv_weight > 0:
            real = x.detach().requires_grad_(True)
            # fp16: R1 differentiates the scaled logits (no underflow); a tensor, so no host sync
            scale = amp.scaler.scale(x.new_ones(())) if amp.scaler else 1.0

            def image_critic_loss(real, fake):
                logits_real = self.image_critic(real)
                gan = L.image_discriminator_loss(logits_real, self.image_critic(fake))
                r1 = L.r1_penalty(logits_real, real, scale)
                return gan + 0.5 * self.config.r1_gamma * r1, gan.detach(), r1.detach()

            with amp.autocast():
                loss, gan, r1 = run(image_critic_loss, real, inputs["composite"])
            _update(optimizers["image_critic"], loss, amp)
            logs |= {"image_critic": gan, "r1": r1}
        return logs


def _update(optimizer: torch.optim.Optimizer, loss: torch.Tensor, amp) -> None:
    optimizer.zero_grad(set_to_none=True)
    amp.backward(loss)
    amp.step(optimizer)

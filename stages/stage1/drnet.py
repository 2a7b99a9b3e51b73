"""DRNET (Denton & Birodkar, papers/002) and MIPAE (Sreekar et al., papers/004): content/pose nets.

Both: a content encoder E_c, a pose encoder E_p and a decoder D (DCGAN conv nets, DRNET sec. 4.1),
trained so that D(E_c(x^t), E_p(x^{t+k})) reconstructs x^{t+k} (eq. 1) while E_c stays constant in
time (eq. 2). They differ in how E_p is kept free of content:
- DRNET: a scene discriminator C (MLP, 2 hidden layers of 100) classifies pose pairs as same or
  different video (eq. 3); E_p is trained to make C maximally uncertain, output 1/2 (eq. 4).
- MIPAE: a critic (MLP, 2 x 512) trained with the GAN objective (its eq. 2) gives the Jensen-Shannon
  estimate of the mutual information between poses across time (its eq. 3), which E_p minimises.

U-Net skips (drnet-py's dcgan_unet, `skips: true`, DRNET's default here): D also reads the block
outputs of E_c on the content frame x^t, so textured backgrounds need not pass through h_c. The
store still holds per-frame (content, pose) only; at decode time the skips are recomputed from
context frames (generate: the last observed frame, the frame whose content stage 2 holds), so
stage 2 never sees pixels. decode(z) without context raises for a skip model.

Temporal smoothness (`smoothness` > 0, ours): E_p is also penalised for pose changes between
neighbouring frames x^t, x^{t+1}, relative to its changes over the pair's k frames, so that the
pose codes move smoothly in time and a predictor can extrapolate them.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from vidlat.config import Config
from vidlat.errors import ConfigError
from vidlat.stages.common.distributed import direct
from vidlat.stages.common.losses import (
    bce_toward_half,
    pair_critic_loss,
    reconstruction_loss,
)
from vidlat.stages.common.nets import MLP, ConvDecoder, ConvEncoder, dcgan_init
from vidlat.stages.stage1.base import Stage1Model
from vidlat.store.format import FieldSpec

# -- losses (means over elements, as drnet-py's MSELoss/BCELoss, so α and β keep the paper's scale)


def similarity_loss(content_t: torch.Tensor, content_tk: torch.Tensor) -> torch.Tensor:
    """DRNET eq. 2 (MIPAE eq. 1): ||E_c(x^t) - E_c(x^{t+k})||^2, mean over (B, Dc)."""
    return reconstruction_loss(content_t, content_tk)


def scene_discriminator_loss(
    logits_same: torch.Tensor, logits_other: torch.Tensor, other_is_same: torch.Tensor
) -> torch.Tensor:
    """DRNET eq. 3 (and MIPAE's critic objective, eq. 2 as the GAN discriminator loss it names):
    -[log C(h_i^t, h_i^{t+k}) + log(1 - C(h_i^t, h_j^{t+k}))], C = sigmoid(logits); pairs (i, j)
    of batch rows i != j labelled by other_is_same (B,) (1 where they happen to share a video)."""
    return pair_critic_loss(logits_same, logits_other, other_is_same)


def pose_adversarial_loss(logits_same: torch.Tensor) -> torch.Tensor:
    """DRNET eq. 4: -[1/2 log C + 1/2 log(1 - C)] on same-video pose pairs (minimum log 2)."""
    return bce_toward_half(logits_same)


def temporal_smoothness_loss(
    pose_t: torch.Tensor, pose_next: torch.Tensor, pose_far: torch.Tensor
) -> torch.Tensor:
    """Ours, not DRNET's: per pose feature, the batch mean of (h_p^t - h_p^{t+1})^2 over the batch
    mean of (h_p^t - h_p^{t+k})^2, the pair's own offset k in [1, K]; then the mean over features.
    pose_t, pose_next, pose_far: (B, Dp).

    Changes over one frame are measured against changes over k frames, so neither shrinking the
    pose nor a per-video constant in it (which cancels in both) can meet it: 1 for frame-to-frame
    noise, about E[1] / E[k^2] for a pose that moves linearly in time (K = 8: 0.04; the demo's
    bouncing sprite positions: 0.06)."""
    near = (pose_t.float() - pose_next.float()).pow(2).mean(0)  # (Dp,)
    far = (pose_t.float() - pose_far.float()).pow(2).mean(0)  # (Dp,)
    return (near / far.clamp(min=1e-8)).mean()


def js_mutual_information(
    logits_joint: torch.Tensor, logits_marginal: torch.Tensor, marginal_weight: torch.Tensor
) -> torch.Tensor:
    """MIPAE eq. 3, the I_JS bound of Poole et al.: 1 + E_joint[T] - E_marginal[exp(T)], T = logits.

    The paper's eq. 3 drops the constant 1; keeping it makes the value read as nats (0 when the
    critic finds no dependence). marginal_weight (B,) masks marginal pairs that share a video."""
    # exp of a logit above 15 means a certain critic; clamping keeps fp16/float32 from overflowing
    expo = torch.exp(logits_marginal.float().clamp(max=15.0))
    w = marginal_weight.float()
    return 1.0 + logits_joint.float().mean() - (expo * w).sum() / w.sum().clamp(min=1.0)


# -- models


Norm = Literal["unit", "tanh", "none"]


class DrnetConfig(Config):
    """DRNET settings as its reference code (drnet-py) trains it: DCGAN nets with U-Net skips from
    E_c to D (dcgan_unet), |h_c| = 128, |h_p| = 10 without unit norm, β = 1e-4, C of 2 x 100 units,
    Adam 0.002. The paper's sec. 4.1 variant: skips false, content_norm and pose_norm unit."""

    content_dim: int = Field(128, ge=1, description="|h_c|: content vector size per frame")
    pose_dim: int = Field(10, ge=1, description="|h_p|: pose vector size per frame")
    width: int = Field(
        64, ge=1, description="channels of the first conv block (doubling per block, up to 8x)"
    )
    skips: bool = Field(
        True,
        description="U-Net skips from E_c to D (drnet-py's dcgan_unet): decoding then needs the "
        "content frame (generate: the last observed frame)",
    )
    content_norm: Norm = Field(
        "unit", description="last step of E_c: unit L2 norm (DRNET sec. 4.1), tanh (drnet-py), none"
    )
    pose_norm: Norm = Field(
        "none", description="last step of E_p: none (drnet-py's default), unit (sec. 4.1), tanh"
    )
    reconstruction: Literal["cross", "same"] = Field(
        "cross",
        description="cross: D(E_c(x^t), E_p(x^t+k)) vs x^t+k (DRNET eq. 1); same: D(E_c(x^t), "
        "E_p(x^t)) vs x^t (MIPAE eq. 4)",
    )
    alpha: float = Field(1.0, ge=0, description="α, weight of the similarity loss (eq. 5)")
    beta: float = Field(
        1e-4,
        ge=0,
        description="β, weight of the adversarial loss (eq. 5): drnet-py's final default 1e-4 (the "
        "paper's 0.1 on a per-element MSE strips the pose)",
    )
    smoothness: float = Field(
        0.0,
        ge=0,
        description="γ, weight of a temporal smoothness term on E_p (ours, not the paper's): "
        "per feature, ||h_p^t - h_p^t+1||^2 over ||h_p^t - h_p^t+k||^2 (batch means, k the "
        "pair's offset); 0 (off) trains as before and draws no neighbour frame",
    )
    critic_hidden: int = Field(100, ge=1, description="units in each of C's 2 hidden layers")
    lr: float = Field(0.002, gt=0, description="Adam learning rate of every optimiser")
    betas: tuple[float, float] = Field((0.5, 0.999), description="Adam (β1, β2); β1 0.5 as MIPAE")

    @model_validator(mode="before")
    @classmethod
    def _normalize_alias(cls, data: Any) -> Any:
        """The former `normalize: bool` (unit norm on both codes, or none) still reads."""
        if isinstance(data, dict) and "normalize" in data:
            data = dict(data)
            norm = "unit" if data.pop("normalize") else "none"
            data.setdefault("content_norm", norm)
            data.setdefault("pose_norm", norm)
        return data

    @classmethod
    def upgrade_stored(cls, config: dict[str, Any]) -> dict[str, Any]:
        """A config stored by an older vidlat lacks the newer keys: they mean its behaviour then
        (no skips, cross-frame reconstruction; `normalize` is read by the validator)."""
        return {"skips": False, "reconstruction": "cross", **config}


class Drnet(Stage1Model):
    """E_c, E_p: ConvEncoders; D: ConvDecoder on [h_c, h_p]; C: MLP on [h_p, h_p'] -> one logit."""

    name = "drnet"
    config_class = DrnetConfig
    penalty_name = "adv"

    def __init__(self, config: DrnetConfig, image_size: int, channels: int):
        super().__init__(config, image_size, channels)
        c = config
        self.content_encoder = ConvEncoder(channels, image_size, c.content_dim, c.width)
        self.pose_encoder = ConvEncoder(channels, image_size, c.pose_dim, c.width)
        self.decoder = ConvDecoder(
            c.content_dim + c.pose_dim, channels, image_size, c.width, skips=c.skips
        )
        self.critic = MLP(2 * c.pose_dim, [c.critic_hidden] * 2, 1)
        self.apply(dcgan_init)

    def latent_fields(self) -> list[FieldSpec]:
        return [
            FieldSpec("content", "content", (self.config.content_dim,)),
            FieldSpec("pose", "pose", (self.config.pose_dim,)),
        ]

    @property
    def needs_context(self) -> bool:
        return self.config.skips

    @property
    def needs_neighbour(self) -> bool:
        return self.config.smoothness > 0

    @staticmethod
    def _finish(h: torch.Tensor, norm: str) -> torch.Tensor:
        # DRNET sec. 4.1: "the final layer ... normalizes the pose/content vectors to have unit
        # norm"; drnet-py ends E_c in a tanh and leaves E_p unnormalised by default.
        if norm == "unit":
            return F.normalize(h, dim=1)
        return torch.tanh(h) if norm == "tanh" else h

    def _content(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """h_c (B, Dc) and E_c's block outputs (the skips) of frames (B, C, H, W)."""
        h, maps = self.content_encoder.features(x)
        return self._finish(h, self.config.content_norm), maps

    def _pose(self, x: torch.Tensor) -> torch.Tensor:
        return self._finish(self.pose_encoder(x), self.config.pose_norm)

    def encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"content": self._content(x)[0], "pose": self._pose(x)}  # (B, Dc), (B, Dp)

    def context_skips(self, context: torch.Tensor) -> list[torch.Tensor]:
        """E_c's block outputs of context frames (B, C, H, W), or their mean over n frames given
        as (B, n, C, H, W) (fewer ghosts of where sprites were in one frame)."""
        if context.dim() == 5:
            b, n = context.shape[:2]
            maps = self.content_encoder.features(context.flatten(0, 1))[1]
            return [m.unflatten(0, (b, n)).mean(1) for m in maps]
        return self.content_encoder.features(context)[1]

    def decode(
        self, z: dict[str, torch.Tensor], context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Frames (B, C, H, W) from {content, pose}; with skips, `context` frames (B, C, H, W) or
        (B, n, C, H, W) in [0, 1] give them (ignored without skips)."""
        skips = None
        if self.config.skips:
            if context is None:
                raise ConfigError(
                    f"this {self.name} model decodes with U-Net skips from a content frame: "
                    "decode(z, context=frames) needs the frames (e.g. the last observed one)"
                )
            skips = self.context_skips(context)
        return self.decoder(torch.cat([z["content"], z["pose"]], dim=1), skips)

    def pair_logits(self, pose_a: torch.Tensor, pose_b: torch.Tensor) -> torch.Tensor:
        """C's logit that two pose vectors (B, Dp) come from the same video: (B,)."""
        return self.critic(torch.cat([pose_a, pose_b], dim=1)).squeeze(1)

    def make_optimizers(self, lr: float | None = None) -> dict[str, torch.optim.Optimizer]:
        lr = self.config.lr if lr is None else lr
        betas = self.config.betas
        autoencoder = [
            *self.content_encoder.parameters(),
            *self.pose_encoder.parameters(),
            *self.decoder.parameters(),
        ]
        return {
            "model": torch.optim.Adam(autoencoder, lr=lr, betas=betas),
            "critic": torch.optim.Adam(self.critic.parameters(), lr=lr, betas=betas),
        }

    def pose_penalty(self, pose_t, pose_tk, other_is_same) -> torch.Tensor:
        """The term that keeps content out of E_p, C held fixed: DRNET eq. 4."""
        return pose_adversarial_loss(self.pair_logits(pose_t, pose_tk))

    def autoencoder_losses(
        self, x_t, x_tk, other_is_same, x_t1=None
    ) -> tuple[dict, torch.Tensor, ...]:
        """Eq. 5's terms for E_c, E_p, D (C takes part but is held), and the detached poses; with
        `smoothness` also the temporal smoothness of the poses of x_t and its neighbour x_t1."""
        both = torch.cat([x_t, x_tk])  # one pass over 2B frames
        content, maps = self._content(both)
        smooth = self.config.smoothness > 0
        if smooth and x_t1 is None:
            raise ConfigError(f"{self.name} with smoothness > 0 trains on batches holding x_t1")
        pose = self._pose(torch.cat([both, x_t1]) if smooth else both)  # (2B or 3B, Dp)
        (content_t, content_tk), (pose_t, pose_tk) = content.chunk(2), pose[: len(both)].chunk(2)
        skips = maps if self.config.skips else None
        if self.config.reconstruction == "same":  # MIPAE eq. 4, on both frames of a pair
            rec = self.decoder(torch.cat([content, pose], 1), skips)
            l_rec = reconstruction_loss(rec, both)
        else:  # DRNET eq. 1: content (and skips) of x^t, pose of x^t+k
            skips_t = [m.chunk(2)[0] for m in maps] if skips else None
            rec = self.decoder(torch.cat([content_t, pose_tk], 1), skips_t)
            l_rec = reconstruction_loss(rec, x_tk)
        terms = {
            "rec": l_rec,
            "sim": similarity_loss(content_t, content_tk),
            self.penalty_name: self.pose_penalty(pose_t, pose_tk, other_is_same),
        }
        c = self.config
        terms["loss"] = terms["rec"] + c.alpha * terms["sim"] + c.beta * terms[self.penalty_name]
        if smooth:
            terms["smooth"] = temporal_smoothness_loss(pose_t, pose[len(both) :], pose_tk)
            terms["loss"] = terms["loss"] + c.smoothness * terms["smooth"]
        return terms, pose_t.detach(), pose_tk.detach()

    def critic_loss(self, pose_t, pose_tk, other_is_same) -> torch.Tensor:
        """Eq. 3 on fixed poses: same-video pairs vs pairs across batch rows."""
        return scene_discriminator_loss(
            self.pair_logits(pose_t, pose_tk),
            self.pair_logits(pose_t, pose_tk.roll(1, 0)),
            other_is_same,
        )

    def train_step(self, batch, optimizers, amp, run=direct) -> dict[str, torch.Tensor]:
        """batch: x_t, x_tk float (B, C, H, W) in [0, 1] (frames t and t+k of one video each),
        video int64 (B,), and with `smoothness` x_t1 (B, C, H, W), the frame next to x_t.
        Updates E_c, E_p, D (eq. 5, C held), then C (eq. 3, encoders held)."""
        x_t, x_tk, video = batch["x_t"], batch["x_tk"], batch["video"]
        other_is_same = video == video.roll(1, 0)  # row i is paired with row i-1 as "other"
        # Encoders and decoder; C takes part in the penalty but is not updated.
        self.critic.requires_grad_(False)
        with amp.autocast():
            terms, pose_t, pose_tk = run(
                self.autoencoder_losses, x_t, x_tk, other_is_same, batch.get("x_t1")
            )
        optimizers["model"].zero_grad(set_to_none=True)
        amp.backward(terms["loss"])
        amp.step(optimizers["model"])
        self.critic.requires_grad_(True)
        # Critic on the same (detached) poses.
        with amp.autocast():
            l_critic = run(self.critic_loss, pose_t, pose_tk, other_is_same)
        optimizers["critic"].zero_grad(set_to_none=True)
        amp.backward(l_critic)
        amp.step(optimizers["critic"])
        amp.update()
        return {**{k: v.detach() for k, v in terms.items()}, "critic": l_critic.detach()}


class MipaeConfig(DrnetConfig):
    """MIPAE settings (its sec. IV-A for Moving MNIST and DSprites: DCGAN nets without skips,
    |z_c| = 128, |z_p| = 5, critic 2 x 512 ReLU, Adam 0.002 with β1 0.5, α 1, β 1e-4) and its
    same-frame reconstruction (eq. 4). Skips (which it uses for MPI3D) copy a same-frame target
    through E_c's maps, leaving the pose nothing to carry."""

    pose_dim: int = Field(5, ge=1, description="|z_p|: pose vector size per frame (IV-A: 5)")
    skips: bool = Field(False, description="U-Net skips from E_c to D (IV-A: MPI3D only)")
    reconstruction: Literal["cross", "same"] = Field(
        "same", description="same: MIPAE eq. 4, D(E_c(x^t), E_p(x^t)) vs x^t; cross: DRNET eq. 1"
    )
    beta: float = Field(1e-4, ge=0, description="β, weight of the MI penalty (MIPAE eq. 5)")
    critic_hidden: int = Field(512, ge=1, description="units in each of the critic's 2 layers")


class Mipae(Drnet):
    """DRNET with the adversarial term replaced by the JS mutual-information estimate (MIPAE)."""

    name = "mipae"
    config_class = MipaeConfig
    penalty_name = "mi"

    def pose_penalty(self, pose_t, pose_tk, other_is_same) -> torch.Tensor:
        """MIPAE eq. 3 between h_p^t and h_p^{t+k}: joint = same video, marginal = other rows."""
        joint = self.pair_logits(pose_t, pose_tk)
        marginal = self.pair_logits(pose_t, pose_tk.roll(1, 0))
        return js_mutual_information(joint, marginal, ~other_is_same)

"""DR-SVG (papers/001) in latent space: a stochastic stage-2 predictor with many futures per input.

The paper's frame encoder is the identity here: the "frame" x_t that its LSTMs read is the vector
f_t = [normalised pose_t, held content] (B, Dp + Dh), so no pixel is touched. Per step t:
- content variables z^c_t with posterior q_φc(z^c_t | x_1:t) (an LSTM over f_1..f_t) and, as
  prior, the previous step's posterior q_φc(z^c_t-1 | x_1:t-1) (eq. 4's content term);
- pose variables z^p_t with posterior q_φp(z^p_t | x_1:t) and a learned prior p_ψ(z^p_t | x_1:t-1)
  (an LSTM over f_1..f_t-1, eq. 8; eq. 4's pose term);
- the frame predictor p_θ (eq. 7): a `layers`-deep LSTM on [f_t-1, z^c_t, z^p_t] whose head gives
  the step pose_t - pose_t-1 (the residual form of the main paper's §3.3 model);
- a pose discriminator D_p on pairs of pose variables (eq. 5), which q_φp learns to confuse (eq. 6).
Training minimises the negative of eq. 4 (MSE for the fixed-variance Gaussian likelihood, plus β
times both KLs) plus `adv_weight` times eq. 6; D_p has its own optimiser, stepped in `extra_step`.
At generation z^c and z^p are drawn from their priors (eq. 9), so `sample_rollout` gives K futures.
In training (eq. 7-8, as SVG-LP's reference loop) the posteriors read the true f_t, and p_ψ and p_θ
the true previous frame f_t-1, never the model's own predictions; teacher_forcing "observed" (ours,
not the paper's) lets p_θ alone run on its predictions over the future frames. Generation has no
truth to read: p_θ, p_ψ and q_φc then read the predicted frames (eq. 9).

In latent space z^c is the sequence-level part of the randomness (e.g. a sprite's speed: nearly
constant within a clip, as its prior demands) and z^p the per-step part (e.g. a bounce).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidlat.errors import DataError
from vidlat.stages.common.distributed import direct
from vidlat.stages.common.losses import bce_toward_half, pair_critic_loss, reparameterize
from vidlat.stages.common.nets import MLP
from vidlat.stages.stage2.base import (
    LatentPredictor,
    PredictorConfig,
    PredictorOutput,
    pose_l2_loss,
)
from vidlat.store.format import FieldSpec

DISC_LAYERS = 5  # D_p: "a fully connected neural network with 5 hidden layers" (§4.1)
LSTMState = tuple[Tensor, Tensor] | None


# -- losses and sampling (free functions, citing the paper's equations)


def gaussian_kl(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """D_KL(N(μ_q, σ_q²) || N(μ_p, σ_p²)) of diagonal Gaussians (..., Z): summed over Z, averaged
    over the rest (batch and steps), as SVG's kl_criterion; the two KL terms of eq. 4."""
    kl = 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1.0)
    return kl.float().sum(-1).mean()


def pose_pairs(z: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Pairs of pose variables (B, T, Z) for D_p (§3.2): same clip (z_1^(i), z_t^(i)) and other
    clip (z_1^(i), z_t^(j)), j = the previous batch row; t ~ U{2..T} per row. Each (B, 2Z)."""
    b, t = z.shape[:2]
    steps = torch.randint(1, t, (b,), generator=generator, device=z.device)
    z_t = z[torch.arange(b, device=z.device), steps]  # (B, Z)
    return torch.cat([z[:, 0], z_t], -1), torch.cat([z[:, 0], z_t.roll(1, 0)], -1)


def discriminator_loss(logits_same: Tensor, logits_other: Tensor) -> Tensor:
    """Eq. 5: -[log D_p(z_1^(i), z_t^(i)) + log(1 - D_p(z_1^(i), z_t^(j)))], D_p = sigmoid."""
    return pair_critic_loss(logits_same, logits_other)


def confusion_loss(logits_same: Tensor) -> Tensor:
    """Eq. 6: -[1/2 log D_p + 1/2 log(1 - D_p)] on same-clip pairs (minimum log 2)."""
    return bce_toward_half(logits_same)


# -- networks


class GaussianLSTM(nn.Module):
    """q_φc, q_φp and p_ψ (eq. 7-8): Linear -> single-layer LSTM -> (μ, log σ²) per step."""

    def __init__(self, in_dim: int, hidden: int, z_dim: int):
        super().__init__()
        self.embed = nn.Linear(in_dim, hidden)
        self.lstm = nn.LSTM(hidden, hidden, 1, batch_first=True)
        self.out = nn.Linear(hidden, 2 * z_dim)

    def forward(self, x: Tensor, state: LSTMState = None) -> tuple[Tensor, Tensor, LSTMState]:
        h, state = self.lstm(self.embed(x), state)  # (B, T, hidden); None state = zeros
        mu, logvar = self.out(h).chunk(2, -1)  # (B, T, Z) each
        return mu, logvar, state


def pose_discriminator(z_dim: int, hidden: int) -> MLP:
    """D_p: [z^p, z^p'] (B, 2Z) -> one logit (B, 1); DISC_LAYERS hidden layers with ReLU."""
    return MLP(2 * z_dim, [hidden] * DISC_LAYERS, 1)


class SVGPredictor(LatentPredictor):
    """DR-SVG's p_θ, q_φc, q_φp, p_ψ and D_p on store latents; see the module docstring.

    The inherited embed/LSTM/head are p_θ (`layers` deep, `hidden` cells); the posteriors and the
    prior are single-layer LSTMs of `hidden` cells, as the paper's §4.1.
    """

    content_reduce = "mean"  # held content: the mean over the observed frames (main paper §3.3)

    def __init__(self, specs: Sequence[FieldSpec], cfg: PredictorConfig):
        super().__init__(specs, cfg)
        frame = self.pose_dim + self.held_dim
        self.post_c = GaussianLSTM(frame, cfg.hidden, cfg.z_content)
        self.post_p = GaussianLSTM(frame, cfg.hidden, cfg.z_pose)
        self.prior_p = GaussianLSTM(frame, cfg.hidden, cfg.z_pose)
        self.disc = pose_discriminator(cfg.z_pose, cfg.hidden)

    @property
    def input_dim(self) -> int:
        return self.pose_dim + self.held_dim + self.cfg.z_content + self.cfg.z_pose

    def frames(self, pose: Tensor, held: Tensor) -> Tensor:
        """The LSTMs' frame f_t: normalised pose (B, T, Dp) and held (B, Dh) -> (B, T, Dp + Dh)."""
        return torch.cat([pose, held[:, None].expand(-1, pose.shape[1], -1)], -1)

    def predict(self, f: Tensor, z: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        """p_θ: frames f_t-1 (B, n, Dx) and [z^c_t, z^p_t] (B, n, Zc + Zp) -> pose_t (B, n, Dp)."""
        step, state = self.core(torch.cat([f, z], -1), state)  # (B, n, Dp)
        return f[..., : self.pose_dim] + step, state

    # Training:

    def unroll_posterior(
        self, f: Tensor, held: Tensor, z: Tensor, fed: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Eq. 7-8 in training over the true frames f (B, T, Dx) and posterior latents z
        (B, T-1, Zc + Zp) of frames 1..T-1.

        p_ψ reads the true previous frame f_t-1 at every step (eq. 8: LSTM_ψ(h_t-1), h_t-1 =
        Enc(x_t-1); as SVG-LP's reference training, where the prior is fed the encoding of the
        ground-truth previous frame), so eq. 4's KL compares q_φp(z^p_t | x_1:t) with
        p_ψ(z^p_t | x_1:t-1) of the same true frames. p_θ reads the true f_t-1 for the first
        `fed` steps (eq. 7; all of them by default, teacher_forcing "all"), then its own poses.

        Returns predicted poses (B, T-1, Dp) and p_ψ's (μ, log σ²), (B, T-1, Zp).
        """
        mu_psi, logvar_psi, _ = self.prior_p(f[:, :-1])  # true frames 0..T-2
        poses, state = self.predict(f[:, :fed], z[:, :fed], None)  # frames 1..fed
        out = [poses]
        for i in range(fed, z.shape[1]):  # free running: the last prediction is the next input
            pose_i, state = self.predict(self.frames(out[-1][:, -1:], held), z[:, i : i + 1], state)
            out.append(pose_i)
        return torch.cat(out, 1), mu_psi, logvar_psi

    def forward(
        self, window: Mapping[str, Tensor], past: int, force_future: bool = False
    ) -> PredictorOutput:
        """Negative eq. 4 plus adv_weight x eq. 6 on a window {field: (B, T, *shape)}.

        The posteriors read the true frames 1..T and p_ψ the true frames 0..T-1 (eq. 8); p_θ reads
        true frames over the first `past` (all with `force_future`: eq. 7, svg's default
        teacher_forcing "all"), then its own predictions. future_mse is that of the
        posterior-driven predictions in training mode and of one prior sample (as generate draws)
        in eval mode, so validation measures what generation does.
        """
        pose = self.flat_pose(window)  # (B, T, Dp)
        t = pose.shape[1]
        if t < 2 or not 1 <= past < t:
            raise DataError(f"a window needs 1 <= past < frames; got {t} frames, past={past}")
        held = self.flat_held(self.held_values(window, past), pose)  # (B, Dh)
        # eval: the same noise every call, so validation repeats and leaves torch's RNG alone
        noise = None if self.training else torch.Generator(pose.device).manual_seed(0)
        poses, loss = self.negative_elbo(pose, held, t - 1 if force_future else past, noise)
        if self.training:
            future = poses[:, past - 1 :]  # (B, F, Dp)
        else:
            future = self.sample_poses(pose[:, :past], held, t - past, noise)
        return PredictorOutput(loss=loss, future_mse=F.mse_loss(future.detach(), pose[:, past:]))

    def negative_elbo(
        self, pose: Tensor, held: Tensor, fed: int, noise: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """-eq. 4 (+ adv_weight x eq. 6) of true poses (B, T, Dp), the first `fed` fed to p_θ;
        returns the posterior-driven predictions of frames 1..T-1 (B, T-1, Dp) and the loss."""
        f = self.frames(pose, held)
        mu_c, logvar_c, _ = self.post_c(f)  # (B, T, Zc): q_φc(z^c_t | x_1:t)
        mu_p, logvar_p, _ = self.post_p(f)  # (B, T, Zp): q_φp(z^p_t | x_1:t)
        z_c, z_p = reparameterize(mu_c, logvar_c, noise), reparameterize(mu_p, logvar_p, noise)
        z = torch.cat([z_c, z_p], -1)[:, 1:]  # latents of frames 1..T-1
        poses, mu_psi, logvar_psi = self.unroll_posterior(f, held, z, fed)
        kl_c = gaussian_kl(mu_c[:, 1:], logvar_c[:, 1:], mu_c[:, :-1], logvar_c[:, :-1])
        kl_p = gaussian_kl(mu_p[:, 1:], logvar_p[:, 1:], mu_psi, logvar_psi)
        loss = pose_l2_loss(poses, pose[:, 1:]) + self.cfg.beta * (kl_c + kl_p)
        if self.cfg.adv_weight > 0:
            loss = loss + self.cfg.adv_weight * self.adversarial_term(mu_p, noise)
        return poses, loss

    def adversarial_term(self, mu_p: Tensor, noise: torch.Generator | None) -> Tensor:
        """Eq. 6 for q_φp through a frozen copy of D_p's weights, so the term moves q_φp only."""
        same, _ = pose_pairs(mu_p, noise)
        frozen = {k: v.detach() for k, v in self.disc.named_parameters()}
        return confusion_loss(torch.func.functional_call(self.disc, frozen, (same,)))

    def make_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        """ "adam" for p_θ, q_φc, q_φp, p_ψ (forward's loss); "disc" for D_p (eq. 5)."""
        disc = {id(p) for p in self.disc.parameters()}
        rest = [p for p in self.parameters() if id(p) not in disc]
        return {
            "adam": torch.optim.Adam(rest, lr=lr, betas=(0.9, 0.999)),
            "disc": torch.optim.Adam(self.disc.parameters(), lr=lr, betas=(0.9, 0.999)),
        }

    def extra_step(
        self, window: Mapping[str, Tensor], past: int, optimizers, amp, run=direct
    ) -> Tensor:
        """One update of D_p on eq. 5 with q_φp's pose means held fixed; returns the loss."""
        opt = optimizers["disc"]
        opt.zero_grad(set_to_none=True)
        if self.cfg.adv_weight <= 0:
            return torch.zeros((), device=self.head.weight.device)
        with amp.autocast():
            loss = run(self.discriminator_loss, window, past)
        amp.backward(loss)
        amp.step(opt)
        return loss.detach()

    # Generation:

    def discriminator_loss(self, window: Mapping[str, Tensor], past: int) -> Tensor:
        """Eq. 5 for D_p on pose pairs of q_φp's means (computed without gradients)."""
        pose = self.flat_pose(window)
        held = self.flat_held(self.held_values(window, past), pose)
        with torch.no_grad():
            mu_p = self.post_p(self.frames(pose, held))[0].float()  # (B, T, Zp)
        same, other = pose_pairs(mu_p)
        return discriminator_loss(self.disc(same), self.disc(other))

    def sample_poses(
        self, pose: Tensor, held: Tensor, future: int, generator: torch.Generator | None
    ) -> Tensor:
        """Eq. 9: `future` normalised poses (B, future, Dp) after observed ones (B, P, Dp).

        As SVG's generation, p_θ and p_ψ are first run over the observed frames with posterior
        latents; then z^p_t ~ p_ψ(· | x_1:t-1) and z^c_t ~ q_φc(· | x_1:t-1), the content posterior
        of the previous (observed or predicted) frame, which q_φc keeps reading as frames appear.
        """
        f = self.frames(pose, held)  # (B, P, Dx)
        mu_c, logvar_c, state_c = self.post_c(f)
        state, prior = None, None
        if pose.shape[1] > 1:
            mu_p, logvar_p, _ = self.post_p(f)
            z_c = reparameterize(mu_c[:, 1:], logvar_c[:, 1:], generator)
            z = torch.cat([z_c, reparameterize(mu_p[:, 1:], logvar_p[:, 1:], generator)], -1)
            _, state = self.predict(f[:, :-1], z, None)
            _, _, prior = self.prior_p(f[:, :-1])
        mu_c, logvar_c, last, out = mu_c[:, -1:], logvar_c[:, -1:], f[:, -1:], []
        for _ in range(future):
            mu, logvar, prior = self.prior_p(last, prior)
            z_c = reparameterize(mu_c, logvar_c, generator)
            z = torch.cat([z_c, reparameterize(mu, logvar, generator)], -1)
            pose_t, state = self.predict(last, z, state)  # (B, 1, Dp)
            out.append(pose_t)
            last = self.frames(pose_t, held)
            mu_c, logvar_c, state_c = self.post_c(last, state_c)
        return torch.cat(out, 1)

    def sample_rollout(
        self, past: Mapping[str, Tensor], future: int, samples: int, seed: int | None = None
    ) -> dict[str, Tensor]:
        """`samples` futures K of `future` frames after observed latents {field: (B, P, *shape)}.

        Returns every latent field as (B, K, future, *shape), float32, in store units: pose/where
        sampled, content and mask repeated at their held value. A `seed` makes the draw repeatable
        without touching torch's global generator.
        """
        if samples < 1:
            raise DataError(f"samples must be >= 1; got {samples}")
        pose, held_raw = self.observed(past, future)  # (B, P, Dp)
        b = pose.shape[0]
        held = self.flat_held(held_raw, pose).repeat_interleave(samples, 0)  # (B*K, Dh)
        generator = None
        if seed is not None:
            generator = torch.Generator(device=pose.device).manual_seed(seed)
        poses = self.sample_poses(pose.repeat_interleave(samples, 0), held, future, generator)
        out = {k: v.reshape(b, samples, *v.shape[1:]) for k, v in self.unflat_pose(poses).items()}
        for name, value in held_raw.items():
            out[name] = value[:, None, None].expand(b, samples, future, *value.shape[1:])
        return {name: out[name].contiguous() for name in self.fields}  # store order

    def rollout(self, past: Mapping[str, Tensor], future: int) -> dict[str, Tensor]:
        """One sampled future, {field: (B, future, *shape)}: the deterministic predictors' API."""
        return {k: v[:, 0] for k, v in self.sample_rollout(past, future, 1).items()}

    def observed(self, past: Mapping[str, Tensor], future: int) -> tuple[Tensor, dict]:
        """Normalised observed poses (B, P, Dp) and held values {field: (B, *shape)}, checked."""
        missing = sorted(set(self.fields) - set(past))
        if missing:
            raise DataError(f"rollout needs fields {missing} too (all of {sorted(self.fields)})")
        pose = self.flat_pose(past)
        if future < 1 or pose.shape[1] < 1:
            raise DataError(
                f"rollout needs >= 1 observed and future frame; got {pose.shape[1]} and {future}"
            )
        return pose, self.held_values(past, pose.shape[1])

"""AVLAE (papers/003) in latent space: unconditional latent sequences from appearance/motion codes.

The paper's video becomes a latent sequence: its static fields (roles content and mask) once and its
pose fields (pose, where) per frame, all normalised per feature. Networks (§4, Fig. 1):
- F_A, F_M: mapping MLPs (5 layers, leaky ReLU) from z_A, z_M ~ N(0, I) to codes w_A, w_M;
- G: (w_A, w_M) -> a sequence of T frames: MLPs give the static fields and the first pose, an LSTM
  the pose steps pose_t - pose_t-1 (the latent stand-in for the paper's spatio-temporal transposed
  convolutions). By default (`generator: joint`, the paper's §4.1 and eq. 2) every part reads
  w_V = (w_A, w_M), a sample of W_V = W_A x W_M (the codes concatenated): nothing in G ties a code
  to a field, so whether w_A ends up holding the look and w_M the moves is learned from eq. 10's
  reconstruction by E_A and E_M, the paper's claim of disentanglement without structural priors.
  `generator: split` (ours, not the paper's; runs saved before the option have it) builds the
  split in: w_A alone gives the static fields and first pose, w_M alone the pose steps, so fixing
  one code holds exactly that part;
- E_A + D_I: E_A encodes one frame (static fields, pose_t at a random t) to w'_A, D_I judges w'_A;
- E_M + D_V: E_M encodes the pose differences (the latent stand-in for the paper's optical flow;
  no flow network is needed) to w'_M, which D_V reads beside its own summary of the sequence; both
  are temporal convolutions over the T frames (the paper's are factorised 3-D convolutions).
Losses: eq. 8-9 (adversarial, with the non-saturating generator form of Algorithm 1's line 21),
eq. 10 (latent reconstruction, K1 and K2), and the R1 penalty of ALAE (papers/003's ref. [40]),
without which the game oscillated on small stores; `discriminator_step`, `generator_step` and
`reconstruction_step` are Algorithm 1's steps I, II and III.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from vidlat.errors import StoreError
from vidlat.stages.common.distributed import direct
from vidlat.stages.common.losses import (
    gan_discriminator_loss,
    gan_generator_loss,
    r1_penalty,
    reconstruction_loss,
)
from vidlat.stages.common.nets import MLP
from vidlat.stages.stage2.configs import GeneratorConfig
from vidlat.store.format import LATENT_ROLES, PREDICTED_ROLES, FieldSpec

STATIC_ROLES = ("content", "mask")  # once per sequence; pose and where fields change per frame


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int) -> MLP:
    """(B, in_dim) -> (B, out_dim): `layers` Linear layers, leaky ReLU 0.2 between them (§4.1)."""
    return MLP(in_dim, [hidden] * (layers - 1), out_dim, activation=lambda: nn.LeakyReLU(0.2))


def video_code(w_a: Tensor, w_m: Tensor) -> Tensor:
    """A sample of W_V = W_A x W_M (§4.1, the joint code of eq. 2): the pair (w_A, w_M), which
    the paper forms by concatenating the codes. w_A (Ba, Wa), w_M (Bm, Wm) -> (B, Wa + Wm),
    B = max(Ba, Bm); a side of batch 1 is one code shared by all B sequences."""
    b = max(w_a.shape[0], w_m.shape[0])
    return torch.cat([w_a.expand(b, -1), w_m.expand(b, -1)], -1)


def joint_inputs(w_a: Tensor, w_m: Tensor) -> tuple[Tensor, Tensor]:
    """The paper's G: the look and the moves are both made from w_V = (w_A, w_M), (B, 2W)."""
    w_v = video_code(w_a, w_m)
    return w_v, w_v


def split_inputs(w_a: Tensor, w_m: Tensor) -> tuple[Tensor, Tensor]:
    """Ours, not the paper's: the look from w_A alone (Ba, W), the moves from w_M alone (Bm, W)."""
    return w_a, w_m


# G's variants (GeneratorConfig.generator): what its look and motion parts read, and their width
# in units of w_dim
GENERATORS = {"joint": (joint_inputs, 2), "split": (split_inputs, 1)}


class SequenceGenerator(nn.Module):
    """G: codes w_A (Ba, W), w_M (Bm, W) -> static (B, Ds) and poses (B, T, Dp), normalised units.

    One form for both variants: MLPs give the static fields and the first pose (the "look" part),
    an LSTM the pose steps pose_t - pose_t-1 (the "motion" part). `inputs` says what each part
    reads: "joint" (the paper's) feeds w_V = (w_A, w_M) to both, "split" (ours) w_A to the look
    and w_M to the motion. Ba or Bm may be 1 (one code for every sequence)."""

    def __init__(self, w_dim: int, static_dim: int, pose_dim: int, hidden: int, kind: str):
        super().__init__()
        self.inputs, width = GENERATORS[kind]
        w = width * w_dim
        self.static = mlp(w, hidden, static_dim, 2)
        self.start = mlp(w, hidden, pose_dim, 2)
        self.init = nn.Linear(w, 2 * hidden)  # the motion LSTM's (h0, c0) from its code
        self.lstm = nn.LSTM(w, hidden, 1, batch_first=True)
        self.step = nn.Linear(hidden, pose_dim)

    def moves(self, code: Tensor, frames: int) -> Tensor:
        """The pose steps pose_t - pose_t-1, t = 2..T, from the motion part's code (Bm, W')."""
        h0, c0 = torch.tanh(self.init(code)).chunk(2, -1)  # (Bm, hidden) each
        state = (h0[None].contiguous(), c0[None].contiguous())
        h, _ = self.lstm(code[:, None].expand(-1, frames - 1, -1), state)  # (Bm, T-1, hidden)
        return self.step(h)  # (Bm, T-1, Dp)

    def forward(
        self, w_a: Tensor, w_m: Tensor, frames: int, scale: Tensor
    ) -> tuple[Tensor, Tensor]:
        b = max(w_a.shape[0], w_m.shape[0])
        look, motion = self.inputs(w_a, w_m)
        static, start = self.static(look), self.start(look)[:, None]  # (B', Ds), (B', 1, Dp)
        steps = self.moves(motion, frames) * scale  # typical step ~ scale
        pose = torch.cat([start.expand(b, -1, -1), start + steps.cumsum(1)], 1)  # (B, T, Dp)
        return static.expand(b, -1), pose


class SequenceEncoder(nn.Module):
    """(B, L, D) -> (B, out): two temporal convolutions (kernel 3, leaky ReLU; the latent form of
    the paper's factorised spatio-temporal convolutions), flattened over the L steps, a Linear.

    L is fixed (the trained T or T-1): only G must run at other lengths. Plain convolutions, unlike
    cuDNN's LSTM, can be differentiated twice, which the R1 penalty needs."""

    def __init__(self, in_dim: int, length: int, hidden: int, out_dim: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(in_dim, hidden, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv1d(hidden, hidden, 3, padding=1),
            nn.LeakyReLU(0.2),
        )
        self.out = nn.Linear(hidden * length, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x.transpose(1, 2))  # (B, hidden, L)
        return self.out(h.flatten(1))


class AVLAE(nn.Module):
    """F_A, F_M, G, E_A, E_M, D_I, D_V over the latent fields `specs`, with their statistics.

    Sequences go in and out in the store's units as {field: (B, T, *shape)}; inside, a sequence
    is (static (B, Ds), pose (B, T, Dp)), normalised per feature.
    """

    def __init__(self, specs: Sequence[FieldSpec], cfg: GeneratorConfig):
        super().__init__()
        latent = [s for s in specs if s.role in LATENT_ROLES]
        if bad := [s.name for s in latent if not s.per_frame]:
            raise StoreError(
                f"latent fields {bad} are stored once per video; the generator needs per-frame "
                "latents (V, T, ...): re-encode with a stage-1 model whose fields are per frame"
            )
        self.cfg, self.fields = cfg, {s.name: s for s in latent}
        self.static_names = [s.name for s in latent if s.role in STATIC_ROLES]
        self.pose_names = [s.name for s in latent if s.role in PREDICTED_ROLES]
        if not self.pose_names:
            raise StoreError(
                f"the store has no pose or where field (fields: {sorted(self.fields)}); the "
                "generator needs something that moves"
            )
        self.static_dim = sum(math.prod(self.fields[n].shape) for n in self.static_names)
        self.pose_dim = sum(math.prod(self.fields[n].shape) for n in self.pose_names)
        for s in latent:  # per-feature statistics (last axis), shared by the N slots
            self.register_buffer(f"mean_{s.name}", torch.zeros(s.shape[-1:]))
            self.register_buffer(f"std_{s.name}", torch.ones(s.shape[-1:]))
        self.register_buffer("step_scale", torch.ones(self.pose_dim))  # RMS pose step per feature
        w, h, ds, dp = cfg.w_dim, cfg.hidden, self.static_dim, self.pose_dim
        self.f_a = mlp(cfg.z_dim, h, w, cfg.mapping_layers)
        self.f_m = mlp(cfg.z_dim, h, w, cfg.mapping_layers)
        self.g = SequenceGenerator(w, ds, dp, h, cfg.generator)
        self.e_a = mlp(ds + dp, h, w, 3)
        self.e_m = SequenceEncoder(dp, cfg.frames - 1, h, w)
        self.d_i = mlp(w, h, 1, cfg.disc_layers)
        self.d_v_seq = SequenceEncoder(ds + dp, cfg.frames, h, h)
        self.d_v = mlp(h + w, h, 1, cfg.disc_layers)

    # Normalisation and the (static, pose) layout:

    def set_stats(self, mean: Mapping, std: Mapping, step_rms: Mapping) -> None:
        """Per-feature mean/std {field: (shape[-1],)} and RMS step of normalised pose fields."""
        for name in self.fields:
            getattr(self, f"mean_{name}").copy_(torch.as_tensor(np.asarray(mean[name])))
            getattr(self, f"std_{name}").copy_(torch.as_tensor(np.asarray(std[name])))
        parts = [
            torch.as_tensor(np.asarray(step_rms[n]), dtype=torch.float32).expand(
                self.fields[n].shape
            )
            for n in self.pose_names
        ]
        self.step_scale.copy_(torch.cat([p.flatten() for p in parts]))

    def _norm(self, name: str, x: Tensor) -> Tensor:
        return (x.float() - getattr(self, f"mean_{name}")) / getattr(self, f"std_{name}")

    def _unnorm(self, name: str, x: Tensor) -> Tensor:
        return x * getattr(self, f"std_{name}") + getattr(self, f"mean_{name}")

    def from_store(self, seq: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """{field: (B, T, *shape)} -> static (B, Ds) (the mean over frames) and pose (B, T, Dp)."""
        pose = torch.cat([self._norm(n, seq[n]).flatten(2) for n in self.pose_names], -1)
        parts = [self._norm(n, seq[n]).mean(1).flatten(1) for n in self.static_names]
        static = torch.cat(parts, -1) if parts else pose.new_zeros(pose.shape[0], 0)
        return static, pose

    def to_store(self, static: Tensor, pose: Tensor) -> dict[str, Tensor]:
        """static (B, Ds), pose (B, T, Dp) -> {field: (B, T, *shape)}, store units, store order."""
        b, t = pose.shape[:2]
        out = {}
        sizes = [math.prod(self.fields[n].shape) for n in self.pose_names]
        for name, part in zip(self.pose_names, pose.split(sizes, -1), strict=True):
            out[name] = self._unnorm(name, part.reshape(b, t, *self.fields[name].shape))
        sizes = [math.prod(self.fields[n].shape) for n in self.static_names]
        for name, part in zip(self.static_names, static.split(sizes, -1), strict=True):
            value = self._unnorm(name, part.reshape(b, *self.fields[name].shape))
            out[name] = value[:, None].expand(b, t, *value.shape[1:]).contiguous()
        return {name: out[name] for name in self.fields}

    # The networks of Fig. 1:

    def generate(self, z_a: Tensor, z_m: Tensor, frames: int) -> tuple[Tensor, Tensor]:
        """Eq. 2: x̂ = G(F_A(z_A), F_M(z_M)); z (B, Z) each (or one of them (1, Z), shared)
        -> static (B, Ds), pose (B, T, Dp)."""
        return self.g(self.f_a(z_a), self.f_m(z_m), frames, self.step_scale)

    def appearance(self, static: Tensor, pose: Tensor) -> Tensor:
        """E_A on one frame per sequence, t ~ U{1..T} (Algorithm 1, line 9) -> w'_A (B, W)."""
        t = torch.randint(0, pose.shape[1], (pose.shape[0],), device=pose.device)
        frame = pose[torch.arange(pose.shape[0], device=pose.device), t]  # (B, Dp)
        return self.e_a(torch.cat([static, frame], -1))

    def motion(self, pose: Tensor) -> Tensor:
        """E_M on the pose differences, in units of the typical step -> w'_M (B, W)."""
        return self.e_m(torch.diff(pose, dim=1) / self.step_scale)  # (B, T-1, Dp) in

    def video_logits(self, static: Tensor, pose: Tensor, w_m: Tensor) -> Tensor:
        """D_V(x, E_M(x)) of eq. 8: a conv summary of x beside its motion code -> logits (B, 1)."""
        frames = torch.cat([static[:, None].expand(-1, pose.shape[1], -1), pose], -1)
        return self.d_v(torch.cat([self.d_v_seq(frames), w_m], -1))

    def features(self, static: Tensor, pose: Tensor) -> Tensor:
        """One vector per sequence for the latent Fréchet distance: (B, Ds + T * Dp)."""
        return torch.cat([static, pose.flatten(1)], -1)

    def make_optimizers(self, lr: float, betas=(0.5, 0.999)) -> dict[str, torch.optim.Optimizer]:
        """ "disc": E_A, E_M, D_I, D_V (step I; step III for E_A, E_M); "gen": F_A, F_M, G."""
        disc = [self.e_a, self.e_m, self.d_i, self.d_v_seq, self.d_v]
        gen = [self.f_a, self.f_m, self.g]
        return {
            "disc": torch.optim.Adam([p for m in disc for p in m.parameters()], lr=lr, betas=betas),
            "gen": torch.optim.Adam([p for m in gen for p in m.parameters()], lr=lr, betas=betas),
        }

    def noise(self, b: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """z_A, z_M ~ N(0, I), (B, Z) each, on the weights' device."""
        device, z = self.step_scale.device, self.cfg.z_dim
        return tuple(torch.randn(b, z, generator=generator, device=device) for _ in range(2))


# -- losses (free functions; logits in, D = sigmoid(logits))


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Eq. 8 / eq. 9 as E and D maximise them: -[log D(real) + log(1 - D(fake))]."""
    return gan_discriminator_loss(real_logits, fake_logits)


def generator_loss(fake_logits: Tensor) -> Tensor:
    """Algorithm 1 line 21 in the non-saturating form -log D(fake) (ALAE's code)."""
    return gan_generator_loss(fake_logits)


def latent_reconstruction_loss(
    w_a: Tensor, w_a_rec: Tensor, w_m: Tensor, w_m_rec: Tensor, k1: float, k2: float
) -> Tensor:
    """Eq. 10: K1 ||F_M(z_M) - E_M(x̂)||² + K2 ||F_A(z_A) - E_A(x̂_t)||², (B, W) each; means over
    the W entries (as ALAE's code), so K1 and K2 keep their scale whatever w_dim is."""
    return k1 * reconstruction_loss(w_m_rec, w_m) + k2 * reconstruction_loss(w_a_rec, w_a)


# -- Algorithm 1, one step per function; each returns its detached loss


def judge(model: AVLAE, static: Tensor, pose: Tensor) -> tuple[Tensor, Tensor]:
    """(D_I(E_A(x_t)), D_V(x, E_M(x))) logits, (B, 1) each, of sequences (static, pose)."""
    return model.d_i(model.appearance(static, pose)), model.video_logits(
        static, pose, model.motion(pose)
    )


def discriminator_pass(model: AVLAE, static: Tensor, pose: Tensor) -> Tensor:
    """Step I's loss: eq. 8 + eq. 9 for E_A, E_M, D_I, D_V on real and generated x, plus γ/2 R1
    on the real x (which must require grad when γ > 0)."""
    with torch.no_grad():
        fake = model.generate(*model.noise(pose.shape[0]), pose.shape[1])
    real_i, real_v = judge(model, static, pose)
    fake_i, fake_v = judge(model, *fake)
    loss = discriminator_loss(real_i, fake_i) + discriminator_loss(real_v, fake_v)
    if model.cfg.r1_gamma > 0:
        loss = loss + 0.5 * model.cfg.r1_gamma * r1_penalty(real_i + real_v, (static, pose))
    return loss


def discriminator_step(model: AVLAE, real: tuple[Tensor, Tensor], opt, amp, run=direct) -> Tensor:
    """Step I (lines 4-15): E_A, E_M, D_I, D_V ascend eq. 8 + eq. 9 (discriminator_pass)."""
    opt.zero_grad(set_to_none=True)
    real = tuple(x.detach().requires_grad_(model.cfg.r1_gamma > 0) for x in real)
    with amp.autocast():
        loss = run(discriminator_pass, model, *real)
    amp.backward(loss)
    amp.step(opt)
    return loss.detach()


def generator_pass(model: AVLAE, b: int, frames: int) -> Tensor:
    """Step II's loss: the generator's side of eq. 8 + eq. 9."""
    image, video = judge(model, *model.generate(*model.noise(b), frames))
    return generator_loss(image) + generator_loss(video)


def generator_step(model: AVLAE, b: int, frames: int, opt, amp, run=direct) -> Tensor:
    """Step II (lines 16-23): F_A, F_M, G descend the generator's side of eq. 8 + eq. 9."""
    opt.zero_grad(set_to_none=True)
    with amp.autocast():
        loss = run(generator_pass, model, b, frames)
    amp.backward(loss)
    amp.step(opt)
    return loss.detach()


def reconstruction_pass(model: AVLAE, b: int, frames: int) -> Tensor:
    """Step III's loss: eq. 10 of the codes F_A, F_M give (targets, no gradient)."""
    z_a, z_m = model.noise(b)
    with torch.no_grad():
        w_a, w_m = model.f_a(z_a), model.f_m(z_m)
    static, pose = model.g(w_a, w_m, frames, model.step_scale)
    w_a_rec, w_m_rec = model.appearance(static, pose), model.motion(pose)
    cfg = model.cfg
    return latent_reconstruction_loss(w_a, w_a_rec, w_m, w_m_rec, cfg.k1, cfg.k2)


def reconstruction_step(model: AVLAE, b: int, frames: int, opts, amp, run=direct) -> Tensor:
    """Step III (lines 24-29): E_A, E_M and G descend eq. 10; F_A, F_M are not updated (their
    codes are targets), nor D_I, D_V (they take no part)."""
    for opt in opts.values():
        opt.zero_grad(set_to_none=True)
    with amp.autocast():
        loss = run(reconstruction_pass, model, b, frames)
    amp.backward(loss)
    for opt in opts.values():  # Adam skips parameters without a gradient (F, D_I, D_V here)
        amp.step(opt)
    return loss.detach()

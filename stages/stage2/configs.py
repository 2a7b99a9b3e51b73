"""The stage-2 models' own settings (predictors, AVLAE), torch-free: the trainers' configs include
them, and `--help` reads their defaults without importing torch."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from vidlat.config import Config


class PredictorConfig(Config):
    """The predictor's architecture and how its training unrolls; saved in every checkpoint."""

    kind: str = Field(
        "lstm-delta",
        description="'lstm': DRNET's forward model on poses (L2); 'lstm-delta': the main paper's "
        "§3.3 model on pose differences (Huber); 'svg': DR-SVG, stochastic (stages/stage2/svg.py)",
    )
    hidden: int = Field(256, ge=1, description="LSTM cells per layer (DRNET: 256)")
    layers: int = Field(2, ge=1, description="stacked LSTM layers (DRNET: 2)")
    embed: bool = Field(
        True, description="a linear layer from the input vector to `hidden` before the LSTM"
    )
    teacher_forcing: Literal["observed", "all"] = Field(
        "observed",
        description="'observed': true latents are fed over the past frames, then the model's own "
        "predictions over the future frames (as at generation; ours); 'all': true latents at "
        "every frame (drnet-py's train_lstm.py; DR-SVG's eq. 7, svg's default). svg's prior p_ψ "
        "reads the true latents in training either way (eq. 8)",
    )
    weight_decay: float = Field(
        1e-4, ge=0, description="decoupled (AdamW) weight decay on the predictor's weights"
    )
    dropout: float = Field(
        0.1, ge=0, lt=1, description="dropout on the LSTM's input and between its layers"
    )
    input_noise: float = Field(
        0.1,
        ge=0,
        description="std of Gaussian noise added in training to the fed poses and held content "
        "(normalised units; targets stay clean)",
    )
    huber_delta: float = Field(
        1.0,
        gt=0,
        description="Huber threshold of lstm-delta, in units of the training split's RMS "
        "frame-to-frame difference of each pose feature",
    )
    beta: float = Field(
        1e-4,
        ge=0,
        description="svg: weight β of both KL terms of DR-SVG eq. 4 (paper: 1e-4 for Moving "
        "MNIST, 1e-6 for KTH)",
    )
    z_content: int = Field(
        64, ge=1, description="svg: size of the content variables z^c (paper: 64)"
    )
    z_pose: int = Field(8, ge=1, description="svg: size of the pose variables z^p (paper: 8)")
    adv_weight: float = Field(
        0.1,
        ge=0,
        description="svg: weight of the latent adversarial term on z^p (eq. 6; the paper gives "
        "none); 0 turns the pose discriminator off",
    )

    @model_validator(mode="before")
    @classmethod
    def _svg_forcing(cls, data: Any) -> Any:
        """svg trains as its paper: p_θ reads the true previous frame (DR-SVG eq. 7, SVG-LP's
        training loop), unless teacher_forcing is given. A stored svg config names its value."""
        if isinstance(data, dict) and data.get("kind") == "svg" and "teacher_forcing" not in data:
            data = {**data, "teacher_forcing": "all"}
        return data


class GeneratorConfig(Config):
    """The AVLAE networks' sizes and loss weights; saved in every checkpoint."""

    generator: Literal["joint", "split"] = Field(
        "joint",
        description="G's form. 'joint': the paper's (§4.1, eq. 2): G reads w_V = (w_A, w_M) of "
        "W_A x W_M, the codes concatenated, and every output (static fields, poses) depends on "
        "both, so any disentanglement is learned, not built in. 'split' (ours, not the paper's): "
        "w_A alone gives the static fields and first pose, w_M alone the pose steps",
    )

    frames: int = Field(16, ge=2, description="frames T of a generated sequence (paper: 16)")
    z_dim: int = Field(128, ge=1, description="size of the noise vectors z_A, z_M (paper: 128)")
    w_dim: int = Field(128, ge=1, description="size of the codes w_A, w_M (paper: 128)")
    hidden: int = Field(256, ge=1, description="width of every MLP layer and LSTM")
    mapping_layers: int = Field(5, ge=1, description="linear layers of F_A and F_M (paper: 5)")
    disc_layers: int = Field(3, ge=1, description="linear layers of D_I and D_V (paper: 3)")
    k1: float = Field(1.0, ge=0, description="eq. 10 weight K1 of the motion code (paper: 1)")
    k2: float = Field(1.0, ge=0, description="eq. 10 weight K2 of the appearance code (paper: 1)")
    r1_gamma: float = Field(
        10.0, ge=0, description="weight γ of the R1 penalty on real sequences (ALAE's 10; 0: none)"
    )

    @classmethod
    def upgrade_stored(cls, stored: dict[str, Any]) -> dict[str, Any]:
        """Runs saved before `generator` existed had the split G: they load and sample as saved."""
        return {"generator": "split", **stored}

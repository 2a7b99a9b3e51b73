"""Settings of the hierarchical model (stages/stage1/hierarchical/model.py): sizes, the detector,
the loss weights on the ELBO's scale and the training schedule. Torch-free."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from vidlat.config import Config


class HierarchicalConfig(Config):
    """Hierarchical model settings. The paper gives no layer or latent sizes; these defaults suit
    64x64 frames with up to 2 objects (N = 3 leaves a slot free)."""

    slots: int = Field(3, ge=1, description="N: object slots per frame (most objects + spare)")
    detector: Literal["grid", "lstm"] = Field(
        "grid",
        description="grid: a spatial proposal map keeping the N most present cells (SPACE-style); "
        "lstm: AIR's recurrent detector on a global feature (the paper's; collapses on CPU runs)",
    )
    glimpse_size: int | None = Field(
        None,
        description="h = w of object glimpses, a power of two >= 8 (None: grid, the power of two "
        "nearest a window's side in pixels, object_scale x image size; lstm, image size / 4)",
    )
    grid_cells: int | None = Field(
        None, description="G: the grid detector's G x G cells (None: image size / 8)"
    )
    object_scale: float = Field(
        0.5, gt=0, le=1, description="grid: prior window side as a fraction of the frame side"
    )
    scale_ratio: float = Field(
        1.5, ge=1, description="grid: a window's side lies within object_scale x [1/r, r]"
    )
    nms_radius: float = Field(
        0.2,
        ge=0,
        description="grid: slots whose window centres lie closer than this (fraction of the "
        "frame side) are not both taken, so two slots never explain one object (0: off)",
    )
    presence_prior: float = Field(
        0.1, gt=0, lt=1, description="grid: prior probability that a slot holds an object"
    )
    background_first: float = Field(
        0.1,
        ge=0,
        le=1,
        description="training fraction in which object masks are held at zero, so the "
        "background VAE learns the scene first (0: off)",
    )
    back_dim: int = Field(64, ge=1, description="size of z_back")
    pose_dim: int = Field(8, ge=1, description="size of z_p per object")
    content_dim: int = Field(16, ge=1, description="size of z_c per object")
    feature_dim: int = Field(128, ge=1, description="size of h, E's image feature")
    lstm_hidden: int = Field(128, ge=1, description="units of the detector LSTM")
    width: int = Field(32, ge=1, description="first conv width of E_back, D_back, E (doubling)")
    glimpse_width: int = Field(32, ge=1, description="first conv width of E_p and E_c")
    sbd_width: int = Field(64, ge=1, description="channels of D_obj's 4 convs (Watters: 64)")
    critic_hidden: int = Field(100, ge=1, description="units in Dis_p's 2 hidden layers")
    where_logvar_init: float = Field(
        -4.0, description="initial log-variance of q(z_where) (the detector head's bias)"
    )
    disc_width: int = Field(32, ge=1, description="first conv width of the image discriminator")
    size_range: tuple[float, float] = Field(
        (0.1, 0.6), description="smallest, largest glimpse side as fractions of the frame side"
    )
    kl_weight: float = Field(
        0.02,
        ge=0,
        description="2 sigma^2 of the Gaussian decoder: the reconstruction is a per-value mean "
        "squared error, and every other term (KL and the weights below, all in nats per frame) "
        "is multiplied by kl_weight / (values per frame), so all terms share the ELBO's scale",
    )
    back_weight: float = Field(
        10.0, ge=0, description="weight of L_back (eq. 4, normalised by z_back's batch variance)"
    )
    triplet_weight: float = Field(10.0, ge=0, description="weight of L_c (eq. 5) per slot")
    triplet_margin: float = Field(1.0, ge=0, description="beta of eq. 5, in squared z_c units")
    pose_adv_weight: float = Field(10.0, ge=0, description="weight of L_advE (eq. 7) per slot")
    presence_weight: float = Field(
        1.0, ge=0, description="grid: weight of KL(presence || presence_prior) per slot"
    )
    image_adv_weight: float = Field(
        0.0, ge=0, description="weight of the image GAN loss per frame (0: no image critic)"
    )
    r1_gamma: float = Field(10.0, ge=0, description="gamma of the R1 penalty (Mescheder: 10)")
    mask_weight: float = Field(
        10.0, ge=0, description="weight of L_mask (eq. 8) per slot, times its presence (grid)"
    )
    mask_until: float = Field(
        0.3, ge=0, le=1, description="training fraction after which L_mask is off (paper: 1/2)"
    )
    pose_adversarial: bool = Field(True, description="Dis_p and eq. 6-7 (False: Table 1 w/o adv)")
    content_swap: bool = Field(True, description="content mixing, eq. 2 (False: w/o swap)")
    background_swap: bool = Field(True, description="decode x's background from z'_back (§3.2.1)")
    lr: float = Field(2e-4, gt=0, description="Adam learning rate of every optimiser")
    betas: tuple[float, float] = Field((0.5, 0.999), description="Adam (beta1, beta2)")

    @classmethod
    def upgrade_stored(cls, stored: dict) -> dict:
        """Runs saved before the grid detector existed used AIR's LSTM detector (and glimpses of
        image / 4, no background phase), so they load and decode as saved. (Their stored weights
        are kept; a resumed old run trains with the ELBO scaling of kl_weight's description.)"""
        if "detector" in stored:
            return stored
        return {"detector": "lstm", "background_first": 0.0, **stored}

    @field_validator("size_range")
    @classmethod
    def _sizes(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] <= 1:
            raise ValueError("size_range must be (low, high) with 0 < low <= high <= 1")
        return v

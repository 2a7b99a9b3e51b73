"""The main paper's background-VAE + object-VAE: model, nets, losses and slot alignment."""

from vidlat.stages.stage1.hierarchical.model import Hierarchical, HierarchicalConfig

__all__ = ["Hierarchical", "HierarchicalConfig"]

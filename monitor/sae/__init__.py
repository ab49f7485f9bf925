"""Sparse autoencoders: one internal type and readers for the formats users bring."""

from monitor.sae.formats import FORMATS, detect, load_sae
from monitor.sae.sae import SAE

__all__ = ["FORMATS", "SAE", "detect", "load_sae"]

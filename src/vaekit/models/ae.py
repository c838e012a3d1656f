"""The plain autoencoder baseline: a deterministic code, reported as ``mu``, and no KL term."""

from __future__ import annotations

from .base import LatentModel


class AE(LatentModel):
    variational = False
    kind = "ae"

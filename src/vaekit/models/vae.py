"""The variational autoencoder: a Gaussian posterior per example, trained on the ELBO."""

from __future__ import annotations

from .base import LatentModel


class VAE(LatentModel):
    variational = True
    kind = "vae"

"""Shapes the tiny SD-1.x-shaped model can be built with, torch-free so that configs (and
``seas --help``) can name them without loading torch."""

VAE_FACTORS = (2, 4, 8)  # pixels per latent cell along a side that the tiny VAE can be built with

"""Foundations: hyperparameters and recipes, the registry of experiments and figures, seeds, atomic
files, checkpoints and the netCDF store.

Nothing here imports anything above it (no models, data, training, analyses, figures or commands),
and nothing here imports torch at import time, so every layer can build on it.
"""

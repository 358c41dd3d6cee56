"""Breedlab's transfer-learning engine: plain PyTorch, no Django."""

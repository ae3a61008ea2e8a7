"""Easel: a self-hosted Stable Diffusion web UI. Importing this package does nothing but define names."""

__version__ = "0.1.0"

"""Easel's built-in demo model: the procedural scenes it learns from, its training, and where its weights live."""

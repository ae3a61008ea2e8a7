"""Weights on disk: the model registry, hashes, format sniffing, architecture detection and offline loading."""

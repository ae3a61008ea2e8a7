"""Outputs: atomic image saves, A1111 infotext writing and parsing."""

"""Upscalers: built-in resampling and ESRGAN-family model files (``models/ESRGAN``)."""

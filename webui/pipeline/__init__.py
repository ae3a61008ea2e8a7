"""Diffusion glue: device choice, schedulers, seeded noise and running the diffusers pipelines per mode."""

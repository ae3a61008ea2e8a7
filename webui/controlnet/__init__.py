"""controlnet package."""

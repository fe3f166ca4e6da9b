"""SeaS: few-shot industrial anomaly image generation with precise masks."""

__version__ = "0.1.0"

"""SeaS: few-shot industrial anomaly image generation with precise masks."""

__version__ = "0.3.0"


def __getattr__(name: str):
    """``seas.SeaSAugmenter`` (:mod:`seas.generation.augmenter`), imported on first use so that
    ``import seas`` and ``seas --help`` stay free of torch."""
    if name == "SeaSAugmenter":
        from seas.generation.augmenter import SeaSAugmenter

        return SeaSAugmenter
    raise AttributeError(f"module 'seas' has no attribute {name!r}")

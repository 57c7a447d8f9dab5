"""The cheap methods' names, importable without the runners (which load JAX)."""

METHOD_NAMES = ("sgld", "psgld", "mclmc", "vi")
# What a run tunes when not told: pSGLD is offered, not run by default.
DEFAULT_METHODS = ("sgld", "mclmc", "vi")

"""The cheap methods' names, importable without the runners (which load JAX)."""

METHOD_NAMES = ("sgld", "mclmc", "vi")

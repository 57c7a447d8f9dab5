"""Examples a user copies: a custom problem factory (``my_model``)."""

"""lambda_hat: how far cheap Local Learning Coefficient estimators are from an HMC reference.

The science core. Pure JAX / BlackJAX / NumPy; never imports Prefect.
"""

import jax

# References are float64 (DESIGN.md); x64 must be on before any array is created.
# Cheap methods may still choose float32 arrays explicitly.
jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"

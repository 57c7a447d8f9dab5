"""lambda_hat: how far cheap Local Learning Coefficient estimators are from an HMC reference.

The science core. Pure JAX / BlackJAX / NumPy; never imports Prefect.
"""

import os
import sys

# References are float64 (docs/architecture.md); x64 must be on before any array is created. JAX
# reads JAX_ENABLE_X64 when it is imported, so the package itself does not import JAX
# (``--help`` and argument errors stay fast); if JAX came first, switch it on there.
# Cheap methods may still choose float32 arrays explicitly.
os.environ["JAX_ENABLE_X64"] = "1"
if "jax" in sys.modules:
    sys.modules["jax"].config.update("jax_enable_x64", True)

__version__ = "0.1.0"

"""Samplers: the cheap methods (SGLD, pSGLD, MCLMC, VI) and the HMC reference, the LLC
estimator from loss traces, and the budgeted chunk loop they share. `configs` holds the
method configs and run ids without importing JAX.
"""

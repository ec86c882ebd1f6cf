"""Shipped configs; installed as `infonoise_jax.configs` (see setup.py). Load them by path."""

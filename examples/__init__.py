"""Runnable Flax examples of optax-profit (run them as `python -m examples.<name>.main`)."""

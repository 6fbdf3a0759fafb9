"""Benchmarks of optax-profit against optax.adamw: ``python -m benchmarks.run``."""

"""The toy example's configs: ``default`` (paper scale), ``quick``, ``study``."""

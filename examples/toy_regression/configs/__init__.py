"""Configs of the toy example: ``default`` (paper scale), ``quick`` (demo), ``study``."""

"""Configurations of the toy example: ``default`` (paper scale), ``quick`` (the
demo) and ``study`` (the compute-matched frontier at three batch sizes).

``default.Config`` holds every field; ``default.validate`` checks one.
"""

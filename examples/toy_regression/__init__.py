"""The 2-D toy regression of the PROFIT paper (Sec. 4.1, Table 1, Fig. 3).

Run it from the repository root with ``python -m examples.toy_regression.main``
(``--quick`` for the few-minute demo).
"""

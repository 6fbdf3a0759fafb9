"""The 2-D toy regression of the PROFIT paper (Sec. 4.1, Table 1); see README.md."""

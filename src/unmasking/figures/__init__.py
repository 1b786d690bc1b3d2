"""The paper's figures (SPEC §4): one module per figure, each a function from aggregated datasets to a
matplotlib figure, sharing :mod:`unmasking.figures.style`."""

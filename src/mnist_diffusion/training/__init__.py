"""Training: one step, the data order, EMA, checkpoints and the loop that ties them together."""

"""The MLNT method in pure PyTorch: networks, synthetic label noise, the meta step, EMA teacher,
schedules, iterative training with a mentor, and one training loop. No file or network I/O."""

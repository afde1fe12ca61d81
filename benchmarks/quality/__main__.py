"""``python -m benchmarks.quality``: the quality study (``benchmarks.quality.study``), what ``make quality`` runs."""

from benchmarks.quality.study import main

if __name__ == "__main__":  # spawned worker processes import this module under another name
    raise SystemExit(main())

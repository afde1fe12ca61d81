"""Measurements beside the pipeline, in three parts:

- ``speed/``: ``make bench`` (``python -m benchmarks.run``), results in ``results.json`` and ``docs/benchmarks.md``;
- ``quality/``: ``make quality`` (``python -m benchmarks.quality``), results in ``docs/quality/`` and
  ``docs/results.md``;
- ``gpu/``: the published CIFAR-10 setup for a GPU;
- ``cifar_layout``: the margin behind the CIFAR-10 reader's check that batches hold planes, not interleaved pixels.

``fixtures`` writes tiny datasets in their published layouts (the speed benchmarks and the tests use it);
``template`` fills the reports' templates.
"""

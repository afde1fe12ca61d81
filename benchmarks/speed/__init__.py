"""The speed benchmarks of ``make bench`` (``python -m benchmarks.run``): each module is a section, measured
against its baseline and recorded in ``benchmarks/results.json``.

- ``workload``: the data every section runs on, made as the pipeline makes it; ``measure``: how time and peak
  memory are measured; ``reference``: the authors' M-pass loop, the meta step's baseline;
- the sections: ``meta_step`` (and its profiles), ``scaling``, ``neighbour_search``, ``data_loading``,
  ``inference``, ``serving``, ``experiments``, ``allocator``;
- ``targets``: the one table of targets; ``report``: ``docs/benchmarks.md`` from the results, words in
  ``templates/benchmarks.md``.
"""

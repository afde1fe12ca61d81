"""The quality study (``make quality``): MLNT against its control, CE, early stopping and Confident Learning.

- ``study``: the cells, each a run of the pipeline's steps; raw records in ``docs/quality/results.json``
  (``python -m benchmarks.quality``);
- ``report``: ``docs/results.md`` and the plots from those records, words in ``templates/results.md``;
- ``meta_diagnosis``: the meta loss's gradient next to cross-entropy's in a finished MLNT run;
- ``inner_lr``: MLNT with larger inner learning rates on the study's cells (``docs/quality/inner_lr.md``);
- ``seeds``: MLNT against its control on more seeds, pooled with the study's (``docs/quality/seeds.md``).
"""

"""The eight steps, in the order they run: one name each for the module (``components/<step>.py``), the DVC stage,
the ``params.yaml`` section, the KFP component and the output folder (``artifacts/<step>/``). Steps find each
other's outputs here, not by importing each other."""

from __future__ import annotations

from pathlib import Path

STEPS = ("ingest", "validate", "noise", "baseline", "mlnt", "evaluate", "export", "gate")
ARTIFACTS = Path("artifacts")
FOLDERS = {step: ARTIFACTS / step for step in STEPS}  # each step's output folder, relative to the project root

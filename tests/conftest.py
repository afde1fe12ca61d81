import os

import pytest
import torch

# Under pytest-xdist (`make test` runs one worker per core) each worker, and every process a test starts, trains on
# one thread: two threads a worker would oversubscribe the cores. A serial run keeps up to two threads.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` are skipped, with the reason, where torch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False here); "
                                   "make gpu-check runs it on a GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

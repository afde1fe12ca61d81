import os

import torch

# Under pytest-xdist (`make test` runs one worker per core) each worker, and every process a test starts, trains on
# one thread: two threads a worker would oversubscribe the cores. A serial run keeps up to two threads.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

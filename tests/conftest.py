import os
import sys
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
sys.path.insert(0, str(Path(__file__).parent))  # the example plugin lives in tests/plugins

if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n N: one thread per worker, or N workers x torch's threads
    import torch                           # oversubscribe the cores and every test runs several times slower

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _quiet_progress(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")

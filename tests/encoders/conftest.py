"""Encoder tests run torch with one intra-op thread (restored afterwards).

On a shared 2-core machine torch's thread pool spins against other processes and small
CPU ops become 100x slower; one thread keeps these tests fast and does not change results.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

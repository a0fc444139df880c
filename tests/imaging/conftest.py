"""Imaging tests run torch on one thread: their tiny convolutions gain nothing from more, and on a
shared machine extra threads only contend (a 30-epoch fit took minutes with 2 threads under load)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

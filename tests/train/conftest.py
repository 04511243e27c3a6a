import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    # On a small busy machine two intra-op threads are many times slower than one for these tiny ops.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

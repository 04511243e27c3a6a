import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Protocols run many tiny ops; two intra-op threads on a small busy machine only slow them."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

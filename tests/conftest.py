"""Shared fixtures: float64 default dtype for exactness tests; one torch thread for tiny-matrix tests."""
import pytest
import torch


@pytest.fixture(scope="module")
def single_thread():
    """The matrices in the reference tests are tiny: intra-op threads only add overhead."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def f64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)

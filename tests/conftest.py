import matplotlib
import pyro
import pytest
import torch

matplotlib.use("Agg")
# The models under test are small: one thread is faster, and immune to oversubscription when
# another process (a notebook kernel, a second job) shares the two cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _clean_pyro():
    """Every test starts with an empty param store and a fixed seed."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def small_vae():
    """One small VAE trained on the digits, shared by every test that only reads it:
    ``(recipe result, dataset)``. Tests must not train it further."""
    from fixtures import train_small_vae

    with torch.random.fork_rng():
        return train_small_vae()

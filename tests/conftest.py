import contextlib
import io
import os

# One thread for every numerical library, here and in every process a test starts (README
# examples, notebook kernels, the command in a subprocess): the models under test are small,
# and on a 2-core machine shared with other work a second thread only contends. OpenBLAS
# (numpy, scipy, scikit-learn) is the worst case: with its default of one thread per core,
# the 1000 x 64 SVD of scikit-learn's PCA took 0.3-1.3 s instead of 2 ms, and a README
# example ran 5x slower. Set before numpy and torch are imported, so that they read it.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import matplotlib  # noqa: E402
import pyro  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

matplotlib.use("Agg")
torch.set_num_threads(1)
threadpool_limits(1)  # in case numpy was imported before this file (a plugin)


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


@pytest.fixture(scope="session")
def ppca_run(tmp_path_factory):
    """One ``pyro-lvm fit --model ppca`` run, 2 epochs on the digits, shared by the tests of
    the command: ``(directory, what the command printed)``. Tests that change the run
    (``--resume``, ``diagnose``) work on a copy (``shutil.copytree``)."""
    from pyro_lvm.cli import main

    out = tmp_path_factory.mktemp("ppca_run") / "ppca"
    printed = io.StringIO()
    with torch.random.fork_rng(), contextlib.redirect_stdout(printed):
        code = main(["fit", "--model", "ppca", "--data", "digits", "--latent-dim", "3",
                     "--batch-size", "256", "--lr", "0.02", "--epochs", "2", "--quiet",
                     "--out", str(out)])
    assert code == 0
    return out, printed.getvalue()

"""Sparse coding (Olshausen & Field 1996) with MAP learning: (1) recovery of a known
overcomplete dictionary from simulated sparse data, over many seeds; (2) the shapes of the
features learned on whitened natural-image patches, against PCA components and random
features (the criterion of pyro_lvm.diagnostics.feature_shapes).

    .venv/bin/python benchmarks/sparse_coding.py [--seeds 20] [--patches 10000] [--steps 2000]

The test suite runs a small version of each (tests/test_sparse_coding.py).
"""

import argparse
import time

import pyro
import torch

from pyro_lvm.datasets import image_patches, sparse_dictionary
from pyro_lvm.diagnostics import feature_recovery, feature_shapes
from pyro_lvm.infer import fit
from pyro_lvm.models import SparseCoding


def map_learning(sc, images, steps):
    """Codes (a Delta guide per patch) and dictionary by full-batch Adam on the log joint."""
    fit(sc.model, sc.map_guide_for(len(images)), images, epochs=steps, batch_size=len(images),
        optimizer=pyro.optim.Adam({"lr": 0.05}), progress=False)


def recovery(seed, num_data=2000, patch_dim=16, num_features=24, active=3, noise=0.05):
    atoms, _, images = sparse_dictionary(num_data, patch_dim, num_features, active, noise, seed)
    pyro.clear_param_store()
    torch.manual_seed(10_000 + seed)
    sc = SparseCoding(patch_dim, num_features, alpha=1.0, noise_scale=0.16)
    map_learning(sc, images, 1000)
    return feature_recovery(atoms.T, sc.dictionary.detach().T)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--patches", type=int, default=10000)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--features", type=int, nargs="+", default=[64, 128])
    args = parser.parse_args()
    torch.set_num_threads(1)

    print("1. dictionary recovery: D=16, K=24 (overcomplete), 3 active atoms per patch, "
          "noise 0.05, N=2000, 1000 full-batch steps")
    results = [recovery(seed) for seed in range(args.seeds)]
    for seed, r in enumerate(results):
        print(f"  seed {seed:2d}: worst |cos| {r.worst:.3f}, mean {r.mean:.3f}, "
              f"atoms below 0.9: {int((r.cosine < 0.9).sum())}")
    ok = sum(r.worst > 0.9 for r in results)
    missed = sum(int((r.cosine < 0.9).sum()) for r in results)
    print(f"  every atom recovered (|cos| > 0.9) in {ok} of {len(results)} runs; "
          f"{missed} of {24 * len(results)} atoms missed in all")

    patches = image_patches(size=8, n=args.patches, seed=0).train
    print(f"\n2. whitened natural-image patches: 8x8, {len(patches)} training patches, "
          f"{args.steps} full-batch steps, alpha=1, noise_scale=1")
    pca = torch.linalg.svd(patches - patches.mean(0), full_matrices=False).Vh
    print(f"  PCA components:  {feature_shapes(pca, (8, 8))}")
    for k in args.features:
        rand = torch.randn(k, 64, generator=torch.Generator().manual_seed(k))
        print(f"  random (K={k}):   {feature_shapes(rand, (8, 8))}")
        pyro.clear_param_store()
        torch.manual_seed(0)
        sc = SparseCoding(64, k, alpha=1.0, noise_scale=1.0)
        t = time.perf_counter()
        map_learning(sc, patches, args.steps)
        print(f"  learned (K={k}):  {feature_shapes(sc.dictionary.detach().T, (8, 8))} "
              f"[{time.perf_counter() - t:.0f} s]")


if __name__ == "__main__":
    main()

"""Source of tutorials/02_sparse_coding_natural_images.ipynb; see tutorials/build.py."""

CELLS = [
    ("md", """\
# 02 · Sparse coding of natural images: edges, prior versus average posterior, explaining away

**Claims** (Olshausen & Field 1996; Lange, *Common misconceptions about hierarchical
generative models*):

1. Fitted to whitened natural-image patches, the sparse linear Gaussian model
   I = A x + noise, with a sparse prior p(x) ∝ exp(-Σ|x_i|^α), learns features that are
   **localized and oriented** — edges, like the receptive fields of V1 simple cells.
2. The prior of such a model is better called a regularizer r(x): it is in general **not**
   the average posterior q(x) = mean_n q(x | I_n), because the model does not fit the data
   (its marginal is far from the image distribution).
3. In an **overcomplete** model with α < 1, each posterior is **multimodal** (explaining
   away: the same image is explained by different subsets of features), and still, on data
   simulated from the model, all those posteriors **average back to the simple prior**
   (Bayes' loop)."""),
    ("setup", ""),
    ("md", """\
## The data: whitened natural-image patches

`image_patches` cuts 8x8 patches from the two photographs scikit-learn ships and whitens
them as Olshausen & Field did: the 1/f amplitude spectrum of natural images flattened by a
filter |f| exp(-(f/f0)^4), with a low-pass roll-off at f0 = 0.4 cycles/pixel. No download."""),
    ("code", """\
from pyro_lvm.datasets import image_patches
from pyro_lvm.diagnostics import feature_shapes
from pyro_lvm.diagnostics.plots import plot_features
from pyro_lvm.infer import fit
from pyro_lvm.models import SparseCoding

patches = image_patches(size=8, n=1000 if FAST else 10000, seed=0).train
print(f"{len(patches)} training patches of 8x8, overall variance {patches.var():.2f}")
plot_features(patches[:32], (8, 8), title="whitened patches")"""),
    ("md", """\
## Claim 1: the learned features are localized and oriented

Olshausen & Field's learning rule is MAP learning: for every patch, the codes x_n that
maximize log p(I_n | x_n) + log p(x_n), and a gradient step on the dictionary A between
them. In Pyro this is a `Delta` guide per patch (`map_guide_for`) and the ordinary ELBO,
which for a point-mass guide is the log joint; full-batch Adam moves codes and dictionary
together. The dictionary's columns have unit norm (the scale ambiguity between A and x
is fixed that way). With the prior's scale fixed at 1, the noise scale sets the sparsity:
the MAP codes minimize ||I - A x||^2 / 2 + noise_scale^2 ||x||_1 for alpha = 1."""),
    ("code", """\
torch.manual_seed(0)
sc = SparseCoding(patch_dim=64, num_features=64, alpha=1.0, noise_scale=1.0)
history = fit(sc.model, sc.map_guide_for(len(patches)), patches,
              optimizer=pyro.optim.Adam({"lr": 0.05}), epochs=100 if FAST else 2000,
              batch_size=len(patches), progress=False)
learned = sc.dictionary.detach().T                         # one feature per row
learned_shapes = feature_shapes(learned, (8, 8))
plot_features(learned, (8, 8), shapes=learned_shapes,
              title="learned features (green frame: localized and oriented)")"""),
    ("md", """\
"Localized and oriented" made measurable (`pyro_lvm.diagnostics.feature_shapes`):

- **localization**: the largest share of a feature's energy inside a 4x4 window;
- **orientation**: the concentration of its Fourier power around one orientation (the
  resultant length of the doubled angles: 1 for an edge or a plane wave, 0 for a blob).

Each statistic is compared with its 99th percentile over white-noise features, so a random
feature passes each test 1% of the time. The baselines: PCA components of the same patches
(oriented plane waves spread over the whole patch: oriented, not localized) and random
features (neither)."""),
    ("code", """\
pca = torch.linalg.svd(patches - patches.mean(0), full_matrices=False).Vh
random = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
for name, feats in [("learned", learned), ("PCA", pca), ("random", random)]:
    print(f"{name:8s} {feature_shapes(feats, (8, 8))}")
plot_features(pca, (8, 8), shapes=feature_shapes(pca, (8, 8)), title="PCA components")"""),
    ("md", """\
## Claim 2: the regularizer r(x) is not the average posterior q(x)

To compare the average posterior with the prior we need posteriors, not MAP points: keep
the learned dictionary fixed (`poutine.block` hides its parameters from the optimizer) and
fit an amortized Gaussian guide q(x | I) by the ELBO. Then `information` measures, for each
code coordinate, KL(q(x_i) || r(x_i)) between the exact mixture q(x_i) = mean_n q(x_i | I_n)
and the prior's marginal. (The joint KL(q(x) || r(x)) in 64 dimensions is not reliable
here: its plug-in estimator needs N >> exp(I), and on the simulated patches the mutual
information I printed below reaches its ceiling log N = 9.0 nats.)

The same is done on patches *simulated from the learned model*, with the same guide family.
There the exact posteriors average back to the prior (claim 3), so what remains measures
the guide: a mean-field Gaussian on strongly correlated posteriors is too narrow (notebook
03 shows the same failure). On the natural patches the gap is about twice as large, and the
average posterior's spread is far below the prior's: the MAP learning rule never looks at
the model's marginal p(I), and the sparse linear model is a poor density model of images."""),
    ("code", """\
from pyro import poutine

from pyro_lvm.diagnostics import information, sample_prior
from pyro_lvm.diagnostics.plots import plot_aggregate_vs_prior
from pyro_lvm.guides import AmortizedNormal

frozen = poutine.block(sc.model, hide_types=["param"])     # the dictionary stays as learned

def posterior_fit(images, name):
    guide = AmortizedNormal(frozen, hidden=(128,), name=name)
    fit(frozen, guide, images, optimizer=pyro.optim.Adam({"lr": 3e-3}),
        epochs=2 if FAST else 40, batch_size=100, progress=False)
    return guide

simulated = sc.sample(len(patches))
gaps, mean_field = {}, {}
for name, images in [("natural patches", patches), ("simulated from the model", simulated)]:
    guide = mean_field[name] = posterior_fit(images, name.split()[0])
    info = information(frozen, guide, images, max_points=1000)
    q = info.aggregate  # q(x) over all the images (max_points thins the evaluation only)
    gaps[name] = q.sample(2000)
    kl, se = info.marginal_kl_per_dim, info.marginal_kl_per_dim_se
    print(f"{name:25s} I = {info.mutual_information.value:5.1f} nats | KL(q(x_i) || r(x_i)): "
          f"mean {kl.mean():.3f} +- {se.pow(2).mean().sqrt() / 8:.3f}, max {kl.max():.3f} | "
          f"sd of q(x_i), median {gaps[name].std(0).median():.2f} (prior {2 ** 0.5:.2f})")

r_draws = sample_prior(frozen, torch.zeros(2000, 64), q.blocks)
plot_aggregate_vs_prior(gaps["natural patches"], r_draws, max_dims=4,
                        title="natural patches: q(x) (average posterior) against r(x)")"""),
    ("md", """\
### The same with a flow guide

How much of the residual on simulated patches is the mean-field family? Fit a normalizing
flow instead (`AmortizedFlow`: the encoder's mean and scale, reshaped by two affine
autoregressive transforms conditioned on the patch), on the same frozen dictionary.
Per-coordinate KL needs closed-form marginals of q(x | I), which a flow does not have, so
compare what both guides give: the ELBO (the better posterior has the higher ELBO) and the
spread of the average posterior, the median over codes of the standard deviation of
q(x_i), against the prior's sqrt(2). With exact posteriors, the simulated patches' spread
would be the prior's."""),
    ("code", """\
from pyro_lvm.diagnostics import AggregatePosterior
from pyro_lvm.guides import AmortizedFlow
from pyro_lvm.infer import evaluate_loss

for name, images in [("natural patches", patches), ("simulated from the model", simulated)]:
    flow = AmortizedFlow(frozen, hidden=(128,), context_dim=16, name="flow_" + name.split()[0])
    fit(frozen, flow, images, optimizer=pyro.optim.Adam({"lr": 3e-3}),
        epochs=2 if FAST else 40, batch_size=100, progress=False)
    spread = AggregatePosterior.from_guide(flow, images).sample(2000).std(0).median()
    elbo_mf = -evaluate_loss(frozen, mean_field[name], images[:2000])
    elbo_flow = -evaluate_loss(frozen, flow, images[:2000])
    print(f"{name:25s} ELBO mean-field {elbo_mf:8.2f}, flow {elbo_flow:8.2f} | sd of q(x_i), "
          f"median: mean-field {gaps[name].std(0).median():.2f}, flow {spread:.2f} "
          f"(prior {2 ** 0.5:.2f})")"""),
    ("md", """\
The flow is the better posterior on both sets: its ELBO is higher by about 4 nats per
natural patch and about 6 per simulated patch. On the simulated patches it moves the spread
of the average posterior from 1.15 to 1.30, most of the way to the prior's 1.41: most of the
mean-field residual there was the family, not the model. On the natural patches it moves
from 0.88 to 0.99 and stays far below the prior's: the gap between the average posterior and
the prior on natural images is not an artefact of the guide's family, it is the model's
misfit."""),
    ("code", """\
plot_aggregate_vs_prior(gaps["simulated from the model"], r_draws, max_dims=4,
                        title="simulated from the model: q(x) against r(x)")"""),
    ("md", """\
## Claim 3: multimodal posteriors still average back to the simple prior

The smallest overcomplete model shows explaining away exactly: one pixel, two features,
I = x1 + x2 + noise, with a sparse prior (alpha = 0.7). A bright pixel is explained by
x1 *or* by x2; with alpha < 1 the prior favours one feature on and one off over both half
on, so the posterior along the line x1 + x2 = I has **two modes**. On a grid the posterior
is exact (no approximate family to blame).

Bayes' loop: draw x from the prior, I from p(I | x), and average the exact posteriors over
many simulated I. The average of these bimodal shapes is the prior, up to Monte Carlo
error — while the same average over pixels that do *not* come from the model (a Gaussian
with the same variance) is not."""),
    ("code", """\
import matplotlib.pyplot as plt

toy = SparseCoding(patch_dim=1, num_features=2, alpha=0.7, noise_scale=0.3).double()
with torch.no_grad():
    toy.weight.fill_(1.0)                                  # both features are the pixel
grid = torch.linspace(-8, 8, 81 if FAST else 161, dtype=torch.double)
x1, x2 = torch.meshgrid(grid, grid, indexing="ij")
points = torch.stack([x1.flatten(), x2.flatten()], -1)     # (G, 2) code vectors
log_prior = toy.prior().log_prob(points)                   # the model's own densities
prior = torch.softmax(log_prior, 0)                        # normalized on the grid

def grid_posteriors(pixels):
    \"\"\"Exact posteriors p(x | I) on the grid, one row per pixel value.\"\"\"
    likelihood = dist.Normal(points @ toy.dictionary.T.detach(), toy.noise_scale)
    log_joint = log_prior + likelihood.to_event(1).log_prob(pixels[:, None, :])
    return torch.softmax(log_joint, dim=1)

def average_posterior(pixels):
    \"\"\"mean_n p(x | I_n) on the grid, in chunks of 500 pixels.\"\"\"
    return sum(grid_posteriors(chunk).sum(0) for chunk in pixels.split(500)) / len(pixels)

def kl_to_prior(p):
    return float((p * (p.clamp_min(1e-300).log() - prior.log())).sum())

torch.manual_seed(0)
codes = toy.prior().sample((40_000,))
codes = codes[(codes.abs() < 8).all(1)]                    # the prior restricted to the grid
codes = codes[: 2000 if FAST else 20_000]
pixels = codes @ toy.dictionary.T.detach() + toy.noise_scale * torch.randn(len(codes), 1)
average = average_posterior(pixels)
gaussian_pixels = pixels.std() * torch.randn(len(pixels), 1, dtype=torch.double)
average_off = average_posterior(gaussian_pixels)
print(f"KL(average posterior || prior), pixels from the model:     {kl_to_prior(average):.4f}")
print(f"KL(average posterior || prior), pixels from a Gaussian:    {kl_to_prior(average_off):.4f}")

shown = grid_posteriors(torch.tensor([[4.0], [-3.0], [1.0]], dtype=torch.double))
panels = [(f"p(x | I = {v})", p) for v, p in zip([4.0, -3.0, 1.0], shown)]
panels += [("average posterior (model's pixels)", average), ("prior r(x)", prior),
           ("average posterior (Gaussian pixels)", average_off)]
fig, axes = plt.subplots(1, 6, figsize=(16, 2.9))
for ax, (title, p) in zip(axes, panels):
    ax.imshow(p.reshape(len(grid), len(grid)).T.pow(0.35), origin="lower", extent=(-8, 8, -8, 8),
              cmap="magma")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x1")
axes[0].set_ylabel("x2")
fig.suptitle("explaining away: bimodal posteriors (left) average back to the prior "
             "(shown as density^0.35 to make the tails visible)", fontsize=10)
fig.tight_layout()"""),
    ("md", """\
The single posteriors put their mass near (I, 0) and (0, I): one feature explains the
pixel, the other is explained away. None of them looks like the prior, a cross of mass
along the axes — yet their average over pixels drawn from the model is the prior (the KL
above is Monte Carlo error, and shrinks with more draws). Over pixels the model did not
generate, the average is off: that gap is what the texts call the model's misfit, and what
claim 2 measured on natural images."""),
]

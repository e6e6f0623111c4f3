"""Save a fitted model and load it back, in a new process, in one call.

:func:`save` writes a directory; :func:`load` reads it (or a checkpoint written by
``fit(..., checkpoint=...)``) and returns a :class:`LoadedModel`. A saved directory holds::

    saved_model.json   format and version; how to rebuild the model and guide (class and
                       constructor settings of a built-in, or the name of a user's program);
                       a dummy batch's row shape, dtype and number of datapoints; the data set
                       (a built-in loader's name and options, or an array's shape, dtype and
                       SHA-256: never the data); the history; the metrics; the parameters'
                       names and shapes and the SHA-256 of params.pt
    params.pt          Pyro's parameters by name (unconstrained) and the nn.Modules' state
                       dicts (parameters and buffers, e.g. BatchNorm's running statistics)

Both files are written atomically (params.pt first, the manifest last) and read safely
(``json``, ``torch.load(weights_only=True)``); a missing, corrupt, foreign or newer file
raises :class:`SavedModelError` naming it.

The built-in models (:mod:`pyro_lvm.models`) and guides (:mod:`pyro_lvm.guides`) record their
constructor settings (``config``) and are rebuilt by :func:`load` alone. A user's own pair
(functions with ``pyro.param``, or nn.Modules) is passed to :func:`load`, which runs it once
on a dummy batch (:func:`pyro_lvm.contract.trial`: no random numbers consumed) so that its
parameters exist, checks every name and shape, and copies the saved values in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyro
import pyro.poutine as poutine
import torch

from .contract import identity, program_device, program_owner, run_traced, trial
from .files import atomic_open, versions, write_json
from .guides import (
    AmortizedFlow,
    AmortizedMultivariateNormal,
    AmortizedNormal,
    PerDatapointFlow,
    PerDatapointGuide,
    PerDatapointMultivariateNormal,
    PerDatapointNormal,
)
from .handlers import minibatch
from .infer.checkpoint import FORMAT as CHECKPOINT_FORMAT
from .infer.checkpoint import CheckpointError, load_checkpoint
from .infer.history import History
from .models import PPCA, VAE, GaussianToy, SparseCoding, TwoLayerVAE

__all__ = ["FORMAT", "VERSION", "DataRecord", "LoadedModel", "SavedModelError", "load", "save",
           "update_metrics"]

FORMAT = "pyro_lvm.saved_model"
PARAMS_FORMAT = "pyro_lvm.saved_params"
VERSION = 1
MANIFEST = "saved_model.json"
PARAMS = "params.pt"
CHECKPOINT = "checkpoint.pt"

# the built-in classes load() rebuilds from their recorded settings, and the attribute that
# holds the length of a data row
MODELS = {"PPCA": (PPCA, "data_dim"), "VAE": (VAE, "data_dim"),
          "TwoLayerVAE": (TwoLayerVAE, "data_dim"), "SparseCoding": (SparseCoding, "patch_dim"),
          "GaussianToy": (GaussianToy, "dim")}
GUIDES = {cls.__name__: cls for cls in (
    AmortizedNormal, AmortizedMultivariateNormal, AmortizedFlow, PerDatapointNormal,
    PerDatapointMultivariateNormal, PerDatapointFlow)}
_BATCH = 2  # rows of the dummy batch (tried first; then the batch size, then every row)


class SavedModelError(CheckpointError):
    """A saved-model directory or file that cannot be loaded: missing, corrupt, foreign, of a
    newer version, or holding parameters that do not match the model and guide. (A
    :class:`~pyro_lvm.infer.CheckpointError`: the command line reports it as a bad file.)

    >>> try:
    ...     load("/nonexistent/run")
    ... except SavedModelError as e:
    ...     print(e)
    load: /nonexistent/run does not exist
    """


# -- the data set's record --------------------------------------------------------------------

def _sha256(data) -> str:
    t = torch.as_tensor(np.asarray(data) if not isinstance(data, torch.Tensor) else data)
    t = t.detach().cpu().contiguous().reshape(-1)
    h = hashlib.sha256(f"{t.dtype}{tuple(torch.as_tensor(data).shape)}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _parse_dtype(name: str, source: str) -> torch.dtype:
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise SavedModelError(f"{source}: {name!r} is not a torch dtype")
    return dtype


def _parts(ds) -> dict:
    return {"train": ds.train, "val": ds.val, "test": ds.test}


@dataclass(frozen=True)
class DataRecord:
    """What :func:`save` records about the data: enough to recreate a built-in data set and
    its split (:meth:`load`), or to recognize the same array again (:meth:`matches`); never
    the data themselves.

    ``kind`` is ``"builtin"`` (a loader of ``pyro_lvm.datasets.DATASETS`` with ``options``,
    e.g. ``{"seed": 0, "binarize": "static"}``), ``"dataset"`` (a ``Dataset`` object) or
    ``"array"``; ``shape`` and ``dtype`` are those of the training rows (of the array);
    ``sha256`` is the SHA-256 of each part (``"data"`` for an array).

    >>> rec = DataRecord.describe(torch.zeros(5, 3))
    >>> rec.kind, rec.shape, rec.dtype, rec.matches(torch.zeros(5, 3)), rec.matches(
    ...     torch.ones(5, 3))
    ('array', (5, 3), 'float32', True, False)
    """

    kind: str
    shape: tuple[int, ...]
    dtype: str
    sha256: dict[str, str]
    name: str | None = None
    options: dict = field(default_factory=dict)
    sizes: dict[str, int] | None = None

    @property
    def num_data(self) -> int:
        """Rows of the training part (of the array).

        >>> DataRecord.describe(torch.zeros(7, 2)).num_data
        7
        """
        return int(self.shape[0])

    @classmethod
    def describe(cls, dataset, loaded=None) -> DataRecord:
        """The record of ``dataset``: a built-in loader's spec ``{"name": "digits", "seed": 0,
        **options}`` (hashed from ``loaded``, the data set that spec loads, when the caller
        has it already; else it is loaded once), a ``Dataset``, an array, or a record.

        >>> rec = DataRecord.describe({"name": "digits", "seed": 1, "binarize": "static"})
        >>> rec.kind, rec.shape, rec.options
        ('builtin', (1438, 64), {'seed': 1, 'binarize': 'static'})
        """
        from .datasets import DATASETS, Dataset

        if isinstance(dataset, DataRecord):
            return dataset
        if isinstance(dataset, dict):
            options = {k: (_dtype_name(v) if isinstance(v, torch.dtype) else v)
                       for k, v in dataset.items() if k != "name"}
            name = dataset.get("name")
            if name not in DATASETS:
                raise ValueError(f"save: dataset spec {dataset!r} needs 'name', one of "
                                 f"{sorted(DATASETS)} (for other data pass the array)")
            try:
                json.dumps(options, allow_nan=False)
            except (TypeError, ValueError) as e:
                raise ValueError(f"save: the options of dataset {name!r} must be plain JSON "
                                 f"values: {e}") from e
            ds = loaded if loaded is not None else DATASETS[name](
                **_loader_options(options, "save"))
            return cls("builtin", tuple(ds.train.shape), _dtype_name(ds.train.dtype),
                       {p: _sha256(t) for p, t in _parts(ds).items()}, name, options, ds.sizes)
        if isinstance(dataset, Dataset):
            return cls("dataset", tuple(dataset.train.shape), _dtype_name(dataset.train.dtype),
                       {p: _sha256(t) for p, t in _parts(dataset).items()}, dataset.name, {},
                       dataset.sizes)
        if isinstance(dataset, torch.Tensor | np.ndarray):
            t = torch.as_tensor(dataset)
            if t.dim() == 0:
                raise ValueError("save: dataset must have one row per datapoint, got a scalar")
            return cls("array", tuple(t.shape), _dtype_name(t.dtype), {"data": _sha256(t)})
        raise TypeError(f"save: dataset must be a built-in spec {{'name': ..., 'seed': ...}}, "
                        f"a pyro_lvm.datasets.Dataset or an array, got {type(dataset).__name__}")

    def to_dict(self) -> dict:
        """Plain JSON values (what saved_model.json holds).

        >>> DataRecord.describe(torch.zeros(2, 3)).to_dict()["shape"]
        [2, 3]
        """
        return {"kind": self.kind, "shape": list(self.shape), "dtype": self.dtype,
                "sha256": dict(self.sha256), "name": self.name, "options": dict(self.options),
                "sizes": self.sizes}

    @classmethod
    def from_dict(cls, d: dict) -> DataRecord:
        """Inverse of :meth:`to_dict`.

        >>> rec = DataRecord.describe(torch.zeros(2, 3))
        >>> DataRecord.from_dict(rec.to_dict()) == rec
        True
        """
        return cls(d["kind"], tuple(d["shape"]), d["dtype"], dict(d["sha256"]), d.get("name"),
                   dict(d.get("options") or {}), d.get("sizes"))

    def load(self):
        """The built-in data set, recreated with the same loader, options and seed (same
        split); a SavedModelError if it is not one, or if it no longer hashes the same.

        >>> rec = DataRecord.describe({"name": "digits", "seed": 1})
        >>> rec.load().sizes == rec.sizes
        True
        """
        from .datasets import DATASETS

        if self.kind != "builtin":
            raise SavedModelError(f"the saved data ({self.kind} of shape {self.shape}) are not "
                                  "a built-in data set: load them yourself and check them "
                                  "with .matches(data)")
        ds = DATASETS[self.name](**_loader_options(self.options, "DataRecord.load"))
        if not self.matches(ds):
            raise SavedModelError(f"{self.name} recreated with {self.options} differs from the "
                                  "data set that was saved (its SHA-256 changed): the loader "
                                  "or its source data changed")
        return ds

    def matches(self, data) -> bool:
        """Whether ``data`` (an array, or a Dataset for a data-set record) are the saved data.

        >>> DataRecord.describe(np.arange(4.0)).matches(np.arange(4.0))
        True
        """
        from .datasets import Dataset

        if isinstance(data, Dataset):
            return self.kind != "array" and {p: _sha256(t) for p, t in
                                             _parts(data).items()} == self.sha256
        return self.kind == "array" and _sha256(data) == self.sha256["data"]


def _loader_options(options: dict, call: str) -> dict:
    out = dict(options)
    if isinstance(out.get("dtype"), str):
        out["dtype"] = _parse_dtype(out["dtype"], call)
    return out


# -- the model and guide's records ------------------------------------------------------------

def _method(fn, owner) -> str | None:
    """The method name when ``fn`` is a bound method of ``owner``."""
    if owner is not None and getattr(fn, "__self__", None) is owner:
        return fn.__func__.__name__
    return None


def _type_name(obj) -> str:
    kind = obj if isinstance(obj, type) else type(obj)
    if getattr(obj, "__self__", None) is not None:  # a bound method: its owner's class
        return f"{_type_name(obj.__self__)}.{obj.__func__.__name__}"
    if callable(obj) and hasattr(obj, "__qualname__") and not isinstance(obj, torch.nn.Module):
        return f"{getattr(obj, '__module__', '?')}.{obj.__qualname__}"
    return f"{kind.__module__}.{kind.__qualname__}"


def _dtype_of(module: torch.nn.Module | None) -> str | None:
    if module is None:
        return None
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            return _dtype_name(t.dtype)
    return None


def _settings(obj, classes) -> tuple[str | None, dict | None, str]:
    """(class name, settings, why not) of a built-in object; (None, None, why) otherwise."""
    name = type(obj).__name__
    registered = classes.get(name)
    cls = registered[0] if isinstance(registered, tuple) else registered
    if cls is None or type(obj) is not cls:
        return None, None, f"{_type_name(obj)} is not a built-in pyro_lvm class"
    try:
        return name, obj.config, ""
    except ValueError as e:
        return None, None, str(e)


def _model_record(model) -> dict:
    owner = program_owner(model)
    if isinstance(model, torch.nn.Module) and type(model).__name__ in MODELS:
        program = "model"  # a built-in model object stands for its model(x) program
    else:
        program = _method(model, owner)
    record = {"type": _type_name(model), "program": program, "dtype": _dtype_of(owner)}
    if owner is not None and program is not None:
        cls, settings, why = _settings(owner, MODELS)
        record.update({"class": cls, "settings": settings, "not_rebuilt": why or None})
    else:
        record.update({"class": None, "settings": None,
                       "not_rebuilt": "a function (pass it to load as model=)"})
    return record


def _guide_record(guide, model) -> dict:
    model_owner = program_owner(model)
    owner = program_owner(guide)
    method = _method(guide, model_owner)
    if method is not None:  # a method of the model's own object, e.g. vae.guide
        return {"type": _type_name(guide), "method": method, "class": None, "settings": None,
                "dtype": _dtype_of(owner)}
    record = {"type": _type_name(guide), "method": None, "dtype": _dtype_of(owner)}
    cls, settings, why = _settings(guide, GUIDES) if owner is guide else (None, None, "")
    if cls is not None and identity(guide.model) != identity(model):
        cls, settings, why = None, None, (f"it was built on {_type_name(guide.model)}, not on "
                                          f"the saved model {_type_name(model)}")
    record.update({"class": cls, "settings": settings,
                   "not_rebuilt": why or (None if cls else "a user's guide (pass it to load "
                                          "as guide=)")})
    return record


def _programs(model, guide):
    """(model program, guide program) from what was passed to save."""
    if isinstance(model, torch.nn.Module) and type(model).__name__ in MODELS:
        model_fn = model.model
    else:
        model_fn = model
    if not callable(model_fn):
        raise TypeError(f"save: model must be a Pyro program model(x) (a function, an "
                        f"nn.Module or a bound method) or a built-in model, got "
                        f"{type(model).__name__}")
    if guide is None:
        owner = program_owner(model_fn)
        guide = getattr(owner, "guide", None) if owner is not None else None
        if not callable(guide):
            raise ValueError("save: guide=None means the model's own guide method, but "
                             f"{_type_name(model)} has none: pass guide=")
    return model_fn, guide


# -- running a pair once ----------------------------------------------------------------------

def _row_shape_of(model) -> tuple[int, ...] | None:
    """The length of a data row of a built-in model (or a program of one)."""
    owner = program_owner(model)
    entry = MODELS.get(type(owner).__name__) if owner is not None else None
    if entry is None or type(owner) is not entry[0]:
        return None
    return (int(getattr(owner, entry[1])),)


def _declared(model, guide, x: torch.Tensor, num_data: int, data_plate: str,
              call: str) -> dict[str, torch.Tensor]:
    """Run the guide and the model replayed on it once, as a trial (no random numbers, no
    gradients, eval mode), on the rows 0..B-1 of a data set of ``num_data`` points; every
    parameter it declares, by name, unconstrained."""
    idx = torch.arange(x.shape[0], device=x.device)
    with trial(), minibatch(idx, num_data, data_plate), \
            poutine.trace(param_only=True) as params:
        guide_trace = run_traced(guide, (x,), call=call, role="guide")
        run_traced(poutine.replay(model, trace=guide_trace), (x,), call=call, role="model")
    store = dict(pyro.get_param_store().named_parameters())
    return {name: store[name] for name in params.trace.nodes if name in store}


def _run_once(model, guide, row_shape, dtype: torch.dtype, num_data: int, data_plate: str,
              call: str, rows=(), data=None) -> tuple[dict[str, torch.Tensor], int]:
    """:func:`_declared` on a dummy batch of zeros (or the first rows of ``data``): with the
    row counts ``rows`` first, then 2, then every row (a guide such as AutoNormal fixes its
    plate's size when it is first run); the first error if every count fails. Returns the
    parameters and the row count that worked."""
    device = program_device(model, guide)
    counts = []
    for n in (*rows, _BATCH, num_data):
        n = min(int(n), num_data, len(data) if data is not None else num_data)
        if n >= 1 and n not in counts:
            counts.append(n)
    first = None
    for n in counts:
        x = (torch.as_tensor(data)[:n] if data is not None
             else torch.zeros(n, *row_shape, dtype=dtype)).to(device)
        try:
            return _declared(model, guide, x, num_data, data_plate, call), n
        except ValueError as e:  # the contract's errors (ModelError) and the user's
            first = first or e
    raise first


def _shapes(tensors: dict) -> dict[str, list[int]]:
    return {name: list(t.shape) for name, t in tensors.items()}


# -- save -------------------------------------------------------------------------------------

def save(directory, model, guide=None, *, dataset=None, history=None, metrics=None) -> Path:
    """Save a model and guide (their settings, parameters and buffers), and optionally the
    data set's record, the training history and metrics, to ``directory``; returns it.

    ``model`` is a built-in model (``vae``), a program of one (``vae.model``) or the user's
    own ``model(x)``; ``guide`` defaults to the model's own ``guide`` method. ``dataset`` is
    a built-in loader's spec (``{"name": "digits", "seed": 0, "binarize": "static"}``), a
    :class:`DataRecord` of one (:meth:`DataRecord.describe`), a ``Dataset`` or the training
    array (only its shape, dtype and SHA-256 are kept); a user's
    pair needs it to know the shape of a data row. ``history`` is a
    :class:`~pyro_lvm.infer.History` (or its dict), ``metrics`` a dict of plain values. The
    pair is run once on a dummy batch of zeros (a trial run) to find its parameters.

    Example:
        >>> import tempfile
        >>> from pyro_lvm.models import VAE
        >>> vae = VAE(8, 2, hidden=(4,))
        >>> d = save(tempfile.mkdtemp(), vae, metrics={"elbo": -3.5})
        >>> sorted(p.name for p in d.iterdir())
        ['params.pt', 'saved_model.json']
        >>> loaded = load(d)
        >>> torch.equal(loaded.objects["model"].decoder[0].weight, vae.decoder[0].weight)
        True
    """
    directory = Path(directory)
    model_fn, guide_fn = _programs(model, guide)
    record = None if dataset is None else DataRecord.describe(dataset)
    model_rec, guide_rec = _model_record(model_fn), _guide_record(guide_fn, model_fn)
    model_owner, guide_owner = program_owner(model_fn), program_owner(guide_fn)

    row_shape = _row_shape_of(model_fn) or (record.shape[1:] if record is not None else None)
    if row_shape is None:
        raise ValueError(f"save: cannot tell the shape of a data row of {_type_name(model_fn)}"
                         ": pass dataset= (the training array, a Dataset, or a built-in "
                         "loader's spec {'name': ..., 'seed': ...})")
    dtype = (model_rec["dtype"] or guide_rec["dtype"]
             or (record.dtype if record is not None else None)
             or _dtype_name(torch.get_default_dtype()))
    num_data = (guide_fn.num_data if isinstance(guide_fn, PerDatapointGuide)
                else record.num_data if record is not None else _BATCH)
    data_plate = getattr(model_owner, "data_plate", "data")
    if not isinstance(data_plate, str):
        data_plate = "data"
    params, rows = _run_once(model_fn, guide_fn, row_shape, _parse_dtype(dtype, "save"),
                             num_data, data_plate, "save")
    guide_rec["dtype"] = _dtype_of(guide_owner)  # a lazy guide has its parameters now

    modules = {role: _cpu_state(owner) for role, owner in _owners(model_fn, guide_fn).items()}
    payload = {"format": PARAMS_FORMAT, "version": VERSION,
               "params": {name: p.detach().cpu().clone() for name, p in params.items()},
               "modules": modules}
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_open(directory / PARAMS, "wb") as f:
        torch.save(payload, f)
    if isinstance(history, History):
        history = history.to_dict()
    manifest = {
        "format": FORMAT, "version": VERSION,
        "model": model_rec, "guide": guide_rec,
        "example": {"row_shape": list(row_shape), "dtype": dtype, "num_data": num_data,
                    "rows": rows, "data_plate": data_plate},
        "dataset": None if record is None else record.to_dict(),
        "history": history, "metrics": metrics,
        "params": {"file": PARAMS, "sha256": _file_sha256(directory / PARAMS),
                   "shapes": _shapes(params),
                   "modules": {role: _shapes(sd) for role, sd in modules.items()}},
        "versions": versions(),
    }
    write_json(manifest, directory / MANIFEST)
    return directory


def update_metrics(directory, metrics: dict) -> Path:
    """Replace the metrics recorded in a saved model's ``saved_model.json`` (after computing
    new diagnostics of the same parameters, as ``pyro-lvm diagnose`` does); the parameters
    and everything else stay as saved. Returns the manifest's path.

    >>> import tempfile
    >>> from pyro_lvm.models import PPCA
    >>> d = save(tempfile.mkdtemp(), PPCA(4, 2), dataset=torch.zeros(10, 4), metrics={"a": 1})
    >>> _ = update_metrics(d, {"a": 2}); load(d).metrics
    {'a': 2}
    """
    path = Path(directory) / MANIFEST
    manifest = _read_manifest(path)
    manifest["metrics"] = metrics
    write_json(manifest, path)
    return path


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- load -------------------------------------------------------------------------------------

@dataclass
class LoadedModel:
    """What :func:`load` returns.

    ``model`` and ``guide`` are Pyro programs, ready for ``fit`` and the diagnostics
    (``information(loaded.model, loaded.guide, x)``): for built-ins, bound methods of the
    rebuilt objects (``vae.model``, ``vae.guide``) or the guide object; for a user's pair,
    the programs passed to :func:`load`. ``objects`` maps "model" / "guide" to the
    nn.Modules that own them (the built-in objects). ``dataset`` is a :class:`DataRecord`
    (or None), ``history`` a :class:`~pyro_lvm.infer.History` (or None), ``metrics`` the
    saved dict (or None); ``path`` is the file the parameters came from.

    >>> import tempfile
    >>> from pyro_lvm.models import PPCA
    >>> loaded = load(save(tempfile.mkdtemp(), PPCA(4, 2), dataset=torch.zeros(10, 4)))
    >>> type(loaded.objects["model"]).__name__, loaded.guide.__name__, loaded.dataset.shape
    ('PPCA', 'guide', (10, 4))
    """

    model: Callable
    guide: Callable
    objects: dict[str, torch.nn.Module]
    dataset: DataRecord | None
    history: History | None
    metrics: dict | None
    path: Path


def load(directory, model=None, guide=None, *, data=None) -> LoadedModel:
    """Load what :func:`save` wrote to ``directory`` (or a checkpoint file, or a directory
    holding ``checkpoint.pt``, written by ``fit(..., checkpoint=...)``).

    Built-in models and guides are rebuilt from their settings; pass ``model=`` / ``guide=``
    for a user's pair (or to load into objects of your own). The pair is run once as a trial
    on a dummy batch of zeros (or on ``data``, a few rows, when zeros are not valid data or
    a checkpoint does not record the shape of a row), then every parameter's name and shape
    is checked and the saved values copied in: Pyro's param store, and the state dicts of
    the nn.Modules that own the programs (their buffers too). A fit checkpoint holds Pyro's
    parameters only (its last epoch's; no buffers, dataset or metrics).

    Raises :class:`SavedModelError` naming the file for a missing, corrupt, foreign or newer
    directory, and naming every missing, extra and mismatched parameter.

    Example:
        >>> import tempfile, pyro, pyro.distributions as dist
        >>> def model(x):
        ...     w = pyro.param("w", torch.ones(3))
        ...     with pyro.plate("data", x.shape[0]):
        ...         z = pyro.sample("z", dist.Normal(0., 1.))
        ...         pyro.sample("x", dist.Normal(z[:, None] * w, 1.).to_event(1), obs=x)
        >>> def guide(x):
        ...     a = pyro.param("a", torch.zeros(3))
        ...     with pyro.plate("data", x.shape[0]):
        ...         pyro.sample("z", dist.Normal(x @ a, 1.))
        >>> pyro.clear_param_store()
        >>> _ = pyro.param("w", torch.full((3,), 2.0))
        >>> d = save(tempfile.mkdtemp(), model, guide, dataset=torch.zeros(20, 3))
        >>> pyro.clear_param_store()
        >>> loaded = load(d, model=model, guide=guide)
        >>> pyro.param("w").tolist()
        [2.0, 2.0, 2.0]
    """
    path = Path(directory)
    if not path.exists():
        raise SavedModelError(f"load: {path} does not exist")
    if path.is_dir():
        if (path / MANIFEST).exists():
            return _load_saved(path, model, guide, data)
        if (path / CHECKPOINT).exists():
            return _load_checkpoint(path / CHECKPOINT, model, guide, data)
        raise SavedModelError(f"load: {path} holds no saved model: neither {MANIFEST} (written "
                              f"by pyro_lvm.save) nor {CHECKPOINT} (written by fit(..., "
                              "checkpoint=...))")
    if path.name == MANIFEST:
        return _load_saved(path.parent, model, guide, data)
    return _load_checkpoint(path, model, guide, data)


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SavedModelError(f"load: {path} cannot be read (truncated or corrupted): "
                              f"{e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise SavedModelError(f"load: {path} is not a pyro_lvm saved model (format {found!r}, "
                              f"expected {FORMAT!r})")
    version = manifest.get("version")
    if isinstance(version, int) and version > VERSION:
        raise SavedModelError(f"load: {path} was written by a newer pyro_lvm (format version "
                              f"{version}); this pyro_lvm reads version {VERSION}: upgrade "
                              "pyro_lvm")
    if version != VERSION:
        raise SavedModelError(f"load: {path} has format version {version!r}; this pyro_lvm "
                              f"reads version {VERSION}")
    for key in ("model", "guide", "example", "params"):
        if not isinstance(manifest.get(key), dict):
            raise SavedModelError(f"load: {path} is incomplete: no {key!r} entry")
    return manifest


def _read_params(path: Path, sha256: str | None) -> dict:
    if not path.is_file():
        raise SavedModelError(f"load: {path} does not exist (the parameters of "
                              f"{path.parent / MANIFEST})")
    if sha256 is not None and _file_sha256(path) != sha256:
        raise SavedModelError(f"load: {path} is not the file {MANIFEST} was written with (its "
                              "SHA-256 differs): it was changed, or the directory holds parts "
                              "of two saves")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a corrupt or unsafe file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SavedModelError(f"load: {path} cannot be read (truncated, corrupted, or not a "
                              f"safe torch file): {first}") from e
    if not isinstance(payload, dict) or payload.get("format") != PARAMS_FORMAT:
        raise SavedModelError(f"load: {path} is not a pyro_lvm parameter file (no "
                              f"{PARAMS_FORMAT!r} marker)")
    if payload.get("version") != VERSION:
        raise SavedModelError(f"load: {path} has format version {payload.get('version')!r}; "
                              f"this pyro_lvm reads version {VERSION}")
    return payload


def _rebuild_model(rec: dict, source: Path):
    cls_name = rec.get("class")
    if cls_name not in MODELS:
        raise SavedModelError(f"load: {source}: the model ({rec.get('type')}) cannot be "
                              f"rebuilt ({rec.get('not_rebuilt')}): pass model= (and guide=)")
    try:
        obj = MODELS[cls_name][0](**rec["settings"])
    except (TypeError, ValueError) as e:
        raise SavedModelError(f"load: {source}: {cls_name}(**{rec['settings']}) failed: "
                              f"{e}") from e
    if rec.get("dtype"):
        obj = obj.to(_parse_dtype(rec["dtype"], str(source)))
    return getattr(obj, rec.get("program") or "model")


def _rebuild_guide(rec: dict, model, source: Path):
    if rec.get("method"):
        owner = program_owner(model)
        if owner is None or not callable(getattr(owner, rec["method"], None)):
            raise SavedModelError(f"load: {source}: the guide is the model's method "
                                  f"{rec['method']!r}, which {_type_name(model)} lacks: "
                                  "pass guide=")
        return getattr(owner, rec["method"])
    cls_name = rec.get("class")
    if cls_name not in GUIDES:
        raise SavedModelError(f"load: {source}: the guide ({rec.get('type')}) cannot be "
                              f"rebuilt ({rec.get('not_rebuilt')}): pass guide=")
    try:
        return GUIDES[cls_name](model, **rec["settings"])
    except (TypeError, ValueError) as e:
        raise SavedModelError(f"load: {source}: {cls_name}(model, **{rec['settings']}) "
                              f"failed: {e}") from e


def _mismatch(saved: dict, declared: dict) -> list[str]:
    missing = sorted(set(declared) - set(saved))
    extra = sorted(set(saved) - set(declared))
    differ = [f"{n!r} saved {tuple(saved[n])}, declared {tuple(declared[n])}"
              for n in sorted(set(saved) & set(declared))
              if tuple(saved[n]) != tuple(declared[n])]
    lines = []
    if missing:
        lines.append("missing from the file (declared by the model/guide): "
                     + ", ".join(map(repr, missing)))
    if extra:
        lines.append("extra in the file (not declared by the model/guide): "
                     + ", ".join(map(repr, extra)))
    if differ:
        lines.append("shapes differ: " + "; ".join(differ))
    return lines


def _check_and_copy(path: Path, declared: dict, saved: dict, owners: dict, states: dict) -> None:
    """Check names and shapes of Pyro's parameters and of the modules' state-dict entries
    (those that are not Pyro parameters already), then copy everything in."""
    problems = [f"Pyro parameters: {line}" for line in
                _mismatch(_shapes(saved), _shapes(declared))]
    store_ids = {id(t) for t in declared.values()}
    for role, owner in owners.items():
        covered = {k for k, p in owner.named_parameters() if id(p) in store_ids}
        own = {k: list(v.shape) for k, v in owner.state_dict().items() if k not in covered}
        kept = {k: list(v.shape) for k, v in states.get(role, {}).items() if k not in covered}
        problems += [f"{role} module {type(owner).__name__} state: {line}"
                     for line in _mismatch(kept, own)]
    extra_roles = sorted(set(states) - set(owners))
    if extra_roles:
        problems.append(f"the file holds the state of a {' and a '.join(extra_roles)} module, "
                        "but the program passed is not an nn.Module or a method of one")
    if problems:
        raise SavedModelError(f"load: the parameters in {path} do not match the model and "
                              "guide:\n  " + "\n  ".join(problems))
    with torch.no_grad():
        for role, owner in owners.items():
            if role in states:
                owner.load_state_dict(states[role], strict=True)
        for name, value in saved.items():
            declared[name].copy_(value)


def _owners(model, guide) -> dict[str, torch.nn.Module]:
    """The nn.Modules that own the programs, by role (a module owning both is the model's)."""
    model_owner, guide_owner = program_owner(model), program_owner(guide)
    owners = {} if model_owner is None else {"model": model_owner}
    if guide_owner is not None and guide_owner is not model_owner:
        owners["guide"] = guide_owner
    return owners


def _load_saved(directory: Path, model, guide, data) -> LoadedModel:
    manifest_path = directory / MANIFEST
    manifest = _read_manifest(manifest_path)
    payload = _read_params(directory / manifest["params"].get("file", PARAMS),
                           manifest["params"].get("sha256"))
    if model is None:
        model = _rebuild_model(manifest["model"], manifest_path)
    if guide is None:
        guide = _rebuild_guide(manifest["guide"], model, manifest_path)
    ex = manifest["example"]
    try:
        dtype = _parse_dtype(ex["dtype"], str(manifest_path))
        row_shape = tuple(int(n) for n in ex["row_shape"])
        num_data, rows = int(ex["num_data"]), (int(ex.get("rows", _BATCH)),)
        plate = str(ex.get("data_plate", "data"))
    except (KeyError, TypeError, ValueError) as e:
        raise SavedModelError(f"load: {manifest_path}: its 'example' entry is invalid: "
                              f"{e}") from e
    declared, _ = _run_once(model, guide, row_shape, dtype, num_data, plate, "load", rows, data)
    owners = _owners(model, guide)
    _check_and_copy(directory / PARAMS, declared, payload["params"], owners,
                    payload.get("modules", {}))
    history = manifest.get("history")
    return LoadedModel(
        model=model, guide=guide, objects=owners,
        dataset=None if manifest.get("dataset") is None
        else DataRecord.from_dict(manifest["dataset"]),
        history=None if history is None else _history(history),
        metrics=manifest.get("metrics"), path=directory)


def _history(d: dict) -> History:
    """History from JSON, where write_json turned NaN (no validation loss) into null."""
    fixed = {k: ([float("nan") if v is None else v for v in val] if k in
                 ("train_loss", "val_loss", "epoch_time") else val) for k, val in d.items()}
    return History.from_dict(fixed)


def _load_checkpoint(path: Path, model, guide, data) -> LoadedModel:
    if model is None or guide is None:
        raise SavedModelError(f"load: {path} is a fit checkpoint: it holds parameters only, so "
                              "pass model= and guide= (the pair that was fitted)")
    state = load_checkpoint(path)  # CheckpointError naming the file when it is bad
    if state.get("format") != CHECKPOINT_FORMAT or not isinstance(state.get("params"), dict):
        raise SavedModelError(f"load: {path} is not a fit checkpoint")
    fit_info = state.get("fit", {})
    num_data = int(fit_info.get("num_data", _BATCH))
    row_shape = fit_info.get("row_shape") or _row_shape_of(model)
    if row_shape is None and data is None:
        raise SavedModelError(f"load: {path} does not record the shape of a data row: pass "
                              "data= (a few rows of the data) so that the model and guide can "
                              "create their parameters")
    owner = program_owner(model) or program_owner(guide)
    dtype = (_parse_dtype(fit_info["dtype"], str(path)) if fit_info.get("dtype")
             else next((p.dtype for p in owner.parameters()), torch.get_default_dtype())
             if owner is not None else torch.get_default_dtype())
    rows = (int(fit_info["batch_size"]),) if fit_info.get("batch_size") else ()
    declared, _ = _run_once(model, guide, row_shape, dtype, num_data, "data", "load", rows, data)
    _check_and_copy(path, declared, state["params"], {}, {})
    return LoadedModel(model=model, guide=guide, objects=_owners(model, guide), dataset=None,
                       history=History.from_dict(state["history"]), metrics=None, path=path)

"""A model zfnet did not train, loaded so that every command that takes a run can take it instead.

``--model FILE.py:FACTORY`` imports the file (it is the user's own code, named on the command line,
and runs like any script they run); ``--model package.module:FACTORY`` imports an installed module
(a model zoo's ``resnet50``, say). The factory is called with no arguments and must return an
``nn.Module`` that maps a batch of images (B, 3, N, N) to class scores (B, K).

``--weights FILE`` then loads a state dict into it: a ``.safetensors`` file, or a ``torch.save`` file
read with ``weights_only=True``, so a crafted pickle runs nothing (see
:func:`zfnet.train.checkpoint.read_torch_file`). A file whose keys or shapes do not fit the model is
refused, naming the first few of each kind.

Preprocessing is the paper's, as for a zfnet run: the smaller side resized to
``base_size(N) = round(N * 256 / 224)``, the centre ``base x base`` square, the centre ``N x N`` crop
(the usual "resize 256, centre-crop 224" at N = 224); the pixels, 0-255, normalised by the model's
per-channel mean and standard deviation (:class:`~zfnet.data.transforms.Normalization`), given on
torchvision's 0-1 scale or as a preset (:data:`NORMALIZATIONS`).

Class names: a ``--classes`` file (one name a line, in output order); else, for commands that read a
labelled data set in the model's label space, that set's class folders (there must be as many as
the model has outputs); else ``class_0`` ... ``class_{K-1}``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._validate import Limits, check_value
from ..data.folders import find_classes
from ..data.transforms import Normalization, base_size
from ..errors import CheckpointError, ZFNetError
from ..models.convnet import MAX_INPUT_SIZE
from .checkpoint import first_nonfinite, load_weights, read_torch_file, shape_problems
from .run import LoadedRun, load_run

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "NORMALIZATIONS", "INPUT_SIZES", "DEFAULT_INPUT_SIZE",
    "import_factory", "build_external", "read_state_dict", "load_state_dict_checked", "read_class_names",
    "load_external", "load_run_or_model",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
"""Named (mean, std) presets on the 0-1 scale: ImageNet's (torchvision's models), and pixels / 255."""

INPUT_SIZES = (16, MAX_INPUT_SIZE)
"""The input sides accepted, inclusive."""

DEFAULT_INPUT_SIZE = 224

_LISTED = 20        # callables listed for a missing factory
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


# ------------------------------------------------------------------------------------------- factory

def _split_spec(spec: str) -> tuple[str, str]:
    where, sep, name = str(spec).rpartition(":")
    if not sep or not where or not name:
        raise ZFNetError(f"--model takes FILE.py:FACTORY or package.module:FACTORY, got {spec!r}")
    if not _DOTTED.match(name):
        raise ZFNetError(f"--model {spec!r}: {name!r} is not a Python name (the factory function)")
    return where, name


@contextmanager
def _on_path(folder: Path) -> Iterator[None]:
    """``folder`` first on ``sys.path`` while a user's file imports its neighbours, as a script would."""
    entry = str(folder)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:300]}" if text else type(err).__name__


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise ZFNetError(f"model file {path} does not exist")
    if path.suffix != ".py":
        raise ZFNetError(f"model file {path} is not a .py file")
    # A name of its own, registered while it runs (dataclasses and pickling look modules up by name).
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"zfnet_user_model_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ZFNetError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        with _on_path(path.resolve().parent):
            spec.loader.exec_module(module)
    except SyntaxError as err:
        sys.modules.pop(name, None)
        raise ZFNetError(f"{path} line {err.lineno}: SyntaxError: {err.msg}") from None
    except Exception as err:  # the user's code: any error it raises is reported, in one line
        sys.modules.pop(name, None)
        raise ZFNetError(f"importing {path} failed: {_first_line(err)}") from None
    return module


def _import_module(name: str) -> Any:
    if not _DOTTED.match(name):
        raise ZFNetError(f"--model {name!r} is neither a .py file nor a package.module name")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        missing = err.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            raise ZFNetError(f"cannot import module {name!r}: no module named {missing!r} (is its package "
                             "installed, or its folder on PYTHONPATH?)") from None
        raise ZFNetError(f"importing module {name!r} failed: {_first_line(err)}") from None
    except Exception as err:  # the module's own code
        raise ZFNetError(f"importing module {name!r} failed: {_first_line(err)}") from None


def _callables(module: Any) -> list[str]:
    """Public callables of a module: those defined in it or its package, else all of them."""
    public = [(n, v) for n, v in vars(module).items() if not n.startswith("_") and callable(v)
              and not inspect.ismodule(v)]
    own = [n for n, v in public if str(getattr(v, "__module__", "")).split(".")[0] == module.__name__.split(".")[0]]
    return sorted(own) or sorted(n for n, _ in public)


def import_factory(spec: str) -> Callable[[], nn.Module]:
    """The factory named by ``FILE.py:FACTORY`` or ``package.module:FACTORY``.

    Raises:
        ZFNetError: a malformed spec, a missing or non-``.py`` file, a module that cannot be imported
            (named), a missing factory (listing the module's callables) or one that is not callable.

    Example:
        >>> import_factory("my_models.py:resnet18")  # doctest: +SKIP
        <function resnet18 at 0x...>
    """
    where, name = _split_spec(spec)
    is_file = where.endswith(".py") or "/" in where or "\\" in where or Path(where).is_file()
    module = _import_file(Path(where)) if is_file else _import_module(where)
    obj: Any = module
    for part in name.split("."):
        if not hasattr(obj, part):
            have = _callables(module)
            shown = ", ".join(have[:_LISTED]) + (f" ... ({len(have)} in all)" if len(have) > _LISTED else "")
            raise ZFNetError(f"{where} has no {name!r}; its callables: {shown or 'none'}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ZFNetError(f"{where}:{name} is a {type(obj).__name__}, not a function that builds the model")
    return obj


def build_external(spec: str) -> tuple[nn.Module, Callable[[], nn.Module]]:
    """Import the factory of ``spec``, call it with no arguments, and check it built an ``nn.Module``.

    Returns:
        ``(model in eval mode, factory)``.

    Raises:
        ZFNetError: any problem of :func:`import_factory`, a factory that fails or returns no module.
    """
    factory = import_factory(spec)
    where, name = _split_spec(spec)
    folder = Path(where).resolve().parent if where.endswith(".py") else None

    def make() -> nn.Module:
        try:
            if folder is not None:
                with _on_path(folder):
                    model = factory()
            else:
                model = factory()
        except Exception as err:  # the user's code
            raise ZFNetError(f"calling {name}() of {where} failed: {_first_line(err)}") from None
        if not isinstance(model, nn.Module):
            raise ZFNetError(f"{name}() of {where} returned a {type(model).__name__}, not a torch.nn.Module")
        return model

    return make().eval(), make


# ------------------------------------------------------------------------------------------- weights

def _tensors_of(raw: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a loaded file: the file itself, or its ``state_dict`` / ``model`` entry."""
    if isinstance(raw, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = raw.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                raw = inner
                break
        if raw and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in raw.items()):
            return dict(raw)
        keys = ", ".join(str(k) for k in list(raw)[:5])
        raise CheckpointError(f"{path} holds no state dict (a mapping of parameter names to tensors, or one "
                              f"under 'state_dict' or 'model'); its keys: {keys or 'none'}")
    raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a state dict of parameter names to tensors")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file, or a ``torch.save`` file read with ``weights_only=True``.

    A file holding ``{"state_dict": ...}`` or ``{"model": ...}`` (a training checkpoint) gives that
    entry; keys that all start with ``module.`` (a DistributedDataParallel model's) lose the prefix.

    Raises:
        CheckpointError: missing, unreadable, crafted (nothing in it runs), holding no state dict, or
            holding NaN or infinite values.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        tensors, _ = load_weights(path)
    else:
        tensors = _tensors_of(read_torch_file(path), path)
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    bad = first_nonfinite(tensors)
    if bad is not None:
        raise CheckpointError(f"weights file {path}: {bad} holds NaN or infinite values")
    return tensors


def load_state_dict_checked(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model`` exactly, or say which keys and shapes do not fit.

    BatchNorm's ``num_batches_tracked`` counters may be absent (older files lack them).

    Raises:
        CheckpointError: ``"{source} does not fit the model: 2 missing keys (fc.weight, fc.bias), 1
            unexpected key (head.weight), 1 shape mismatch (conv1.weight: file (8, 3, 3, 3), model
            (16, 3, 3, 3))"`` with the first few of each kind.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = shape_problems(expected, {k: tuple(v.shape) for k, v in state.items()},
                              optional=lambda key: key.endswith("num_batches_tracked"))
    if problems:
        raise CheckpointError(f"{source} does not fit the model: {'; '.join(problems)}")
    try:
        model.load_state_dict(dict(state), strict=False)
    except RuntimeError as err:
        raise CheckpointError(f"{source} does not fit the model: {str(err).strip().splitlines()[0][:300]}") from None


# ------------------------------------------------------------------------------------------- classes

def read_class_names(path: str | Path) -> list[str]:
    """Class names from a text file, one a line in output order (blank lines and surrounding spaces dropped).

    Raises:
        ZFNetError: a missing or unreadable file, or one without names.
    """
    path = Path(path)
    if not path.is_file():
        raise ZFNetError(f"classes file {path} does not exist")
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise ZFNetError(f"cannot read classes file {path}: {err}") from None
    if not names:
        raise ZFNetError(f"classes file {path} names no classes")
    return names


def _data_classes(data: Path, split: str) -> tuple[list[str], Path] | None:
    for folder in (data / "train", data / split):
        if folder.is_dir():
            found = find_classes(folder)
            if found:
                return found, folder
    return None


def _outputs(model: nn.Module, input_size: int, spec: str) -> int:
    """The number of classes the model scores, from one forward pass of a zero image."""
    like = next(iter(model.parameters()), None)
    probe = torch.zeros(1, 3, input_size, input_size)
    if like is not None:
        probe = probe.to(device=like.device, dtype=like.dtype)
    try:
        with torch.no_grad():
            out = model(probe)
    except Exception as err:  # the user's code
        raise ZFNetError(f"{spec} fails on a (1, 3, {input_size}, {input_size}) input: {_first_line(err)}; "
                         "is --input-size right?") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
        raise ZFNetError(f"{spec} returns {got} for one image; zfnet needs class scores of shape (B, K)")
    return int(out.shape[1])


# ------------------------------------------------------------------------------------------- loading

def _input_size(value: int) -> int:
    return check_value(value, int, "input size", what="the model's", limit=Limits(*INPUT_SIZES))


def load_external(spec: str, *, weights: str | Path | None = None, input_size: int = DEFAULT_INPUT_SIZE,
                  mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                  classes: str | Path | None = None, data: str | Path | None = None,
                  split: str = "val") -> LoadedRun:
    """A model zfnet did not train, as a :class:`~zfnet.train.run.LoadedRun` every job accepts.

    Args:
        spec: ``FILE.py:FACTORY`` or ``package.module:FACTORY``; the factory takes no arguments.
        weights: a ``.safetensors`` or ``torch.save`` state dict to load (None: the factory's own weights).
        input_size: the side of the model's square input crop, 16 to 2048.
        mean, std: the model's per-channel input normalisation on the 0-1 scale (default ImageNet's).
        classes: a file of class names, one a line in output order.
        data: a labelled data set in the model's label space: its class folders (``train/``, else
            ``split``) name the classes when ``classes`` is not given.
        split: see ``data``.

    Returns:
        The loaded model with ``root = Path(spec)``, ``metadata["model"] = spec``, ``weights`` the file
        (or ``"factory"``) and the normalisation's mean image at ``base_size(input_size)``.

    Raises:
        ZFNetError: any problem with the spec, the factory, the weights (CheckpointError), the input
            size, the normalisation or the class names.

    Example:
        >>> run = load_external("my_resnet.py:resnet18", weights="resnet18.safetensors")  # doctest: +SKIP
        >>> run.normalize(pixels)  # (B, 3, 256, 256) 0-255 -> ImageNet-normalised floats  # doctest: +SKIP
    """
    size = _input_size(input_size)
    try:
        norm = Normalization.per_channel(mean, std, size=base_size(size))
    except ValueError as err:
        raise ZFNetError(str(err)) from None
    model, factory = build_external(spec)
    if weights is not None:
        load_state_dict_checked(model, read_state_dict(weights), f"weights file {weights}")
    outputs = _outputs(model, size, spec)
    if classes is not None:
        names = read_class_names(classes)
        if len(names) != outputs:
            raise ZFNetError(f"{classes} names {len(names)} classes but {spec} has {outputs} outputs")
    elif data is not None and (found := _data_classes(Path(data), split)) is not None:
        names, folder = found
        if len(names) != outputs:
            raise ZFNetError(f"{folder} has {len(names)} class folders but {spec} has {outputs} outputs; give "
                             "--classes FILE naming the model's classes in output order")
    else:
        names = [f"class_{i}" for i in range(outputs)]
    metadata = {"model": spec, "external": True, "weights": str(weights) if weights is not None else None,
                "input_size": size, "normalization": norm.describe()}
    return LoadedRun(Path(spec), model, norm.mean, names, list(names), metadata, std=norm.std, input_size=size,
                     weights=str(weights) if weights is not None else "factory", factory=factory)


def _normalization(mean: Sequence[float] | None, std: Sequence[float] | None,
                   normalize: str | None) -> tuple[Sequence[float], Sequence[float]]:
    if normalize is not None and (mean is not None or std is not None):
        raise ZFNetError("give --normalize or --mean and --std, not both")
    if (mean is None) != (std is None):
        raise ZFNetError("--mean and --std go together: give both (three numbers each, on the 0-1 scale)")
    if mean is not None and std is not None:
        return mean, std
    preset = normalize or "imagenet"
    if preset not in NORMALIZATIONS:
        raise ZFNetError(f"unknown normalisation {preset!r}; valid: {', '.join(NORMALIZATIONS)}")
    return NORMALIZATIONS[preset]


def load_run_or_model(run: str | Path | None, *, weights: str | None = None, model: str | None = None,
                      input_size: int | None = None, mean: Sequence[float] | None = None,
                      std: Sequence[float] | None = None, normalize: str | None = None,
                      classes: str | Path | None = None, data: str | Path | None = None,
                      split: str = "val") -> LoadedRun:
    """What a command's run arguments name: a zfnet run directory, or a model zfnet did not train.

    Args:
        run: the run directory (or None with ``model``).
        weights: a run's ``best``, ``last`` or ``epoch-N`` (default best); with ``model``, a weights file.
        model: ``FILE.py:FACTORY`` or ``package.module:FACTORY`` (exclusive with ``run``).
        input_size, mean, std, normalize, classes: with ``model`` only; see :func:`load_external`
            (``normalize`` names a preset of :data:`NORMALIZATIONS`; default ``imagenet``).
        data, split: with ``model``: the labelled data set whose class folders name the classes.

    Raises:
        ZFNetError: both or neither of ``run`` and ``model``, model options given with a run, or any
            error of :func:`load_run` / :func:`load_external`.
    """
    if run is not None and model is not None:
        raise ZFNetError(f"give a run directory or --model, not both (got {run} and --model {model})")
    if run is None and model is None:
        raise ZFNetError("give a run directory, or --model FILE.py:FACTORY (or package.module:FACTORY)")
    if model is None:
        given = [flag for flag, v in (("--input-size", input_size), ("--mean", mean), ("--std", std),
                                      ("--normalize", normalize), ("--classes", classes)) if v is not None]
        if given:
            raise ZFNetError(f"{', '.join(given)} describe{'s' * (len(given) == 1)} a --model; the run "
                             f"{run} carries its own")
        return load_run(run, weights or "best")
    m, s = _normalization(mean, std, normalize)
    return load_external(model, weights=weights, input_size=DEFAULT_INPUT_SIZE if input_size is None else input_size,
                         mean=m, std=s, classes=classes, data=data, split=split)

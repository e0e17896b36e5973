"""Correspondence analysis: does occluding the same object part change the features the same way?

Zeiler & Fergus (2014, §5.1, Table 1, Fig. 8) occlude the same part of the face (right eye, left eye,
nose) in 5 dog images, and random object regions of the same size as a control. For image ``i`` and
layer ``l`` the change is ``ε_i = x_i − x̃_i``, the feature vector of the original minus that of the
occluded image, and the consistency of the changes over all pairs of images is

    Δ_l = Σ_{i≠j} H(sign(ε_i), sign(ε_j)),

``H`` the Hamming distance. A lower Δ for a part than for random regions means occluding that part
changes the representation in the same direction in every image: the network has tied the parts of
different images together. The paper reports Δ per part, e.g. 0.067 ± 0.007 at layer 5.

Normalisation, so that the numbers are comparable with the paper's: each pair's Hamming distance is
divided by the feature length ``D`` (the fraction of units whose sign of change differs, zero
included as a sign of its own), and Δ is the mean of that over the ``n (n − 1)`` ordered pairs,
``Σ_{i≠j} H / (n (n − 1) D)``; the ``±`` is the standard deviation over the pairs.

Everything here works on tensors: model inputs (mean subtracted, cropped) and boxes in their pixel
coordinates. :mod:`zfnet.analysis.jobs` reads runs and annotation files and writes the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..graph import eval_mode, model_like, trace
from ..progress import progress
from ..visualize.topk import resolve_layers

__all__ = [
    "layer_features", "occlude", "random_boxes", "sign_hamming", "DeltaScore", "delta_score",
    "CorrespondenceResult", "correspondence", "RANDOM", "DEFAULT_LAYERS", "DEFAULT_PARTS",
]

RANDOM = "random"
"""The name of the control row: random object regions of each part's size."""

DEFAULT_LAYERS = ("conv5", "fc7")
"""The paper's layers 5 and 7."""

DEFAULT_PARTS = ("right_eye", "left_eye", "nose")
"""The paper's parts, in Table 1's order."""


def _check_images(images: torch.Tensor, name: str = "images") -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a tensor (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4 or len(images) == 0:
        raise ValueError(f"{name} must be a non-empty (N, C, H, W) tensor, got shape {tuple(images.shape)}")


def layer_features(model: nn.Module, images: torch.Tensor, layers: str | Sequence[str], *,
                   batch_size: int = 32) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The outputs of named submodules and of the model, one flattened row per image.

    Runs ``model``'s traced graph (:func:`zfnet.graph.trace`) in eval mode under ``torch.no_grad``
    (every module's training flag is restored afterwards); nothing is registered on the model. A
    layer is any name the graph gives (``"conv5"``, ``"features.12"``, ``"layer3.1"``).

    Args:
        model: the network; images are moved to the device and dtype of its parameters.
        images: model inputs (N, C, H, W).
        layers: one submodule name or several.
        batch_size: images per forward pass.

    Returns:
        ``({layer: features (N, D_layer)}, outputs (N, ...))``, on the CPU, float32.

    Raises:
        ValueError: an unknown layer (the message lists the valid names), a bad batch size or
            empty images.
        TypeError: a layer whose output is not a tensor.

    Example:
        >>> from zfnet.models import build
        >>> net = build("zfnet-tiny", num_classes=5)
        >>> feats, logits = layer_features(net, torch.randn(3, 3, 64, 64), ["conv1", "fc7"])
        >>> feats["conv1"].shape, feats["fc7"].shape, logits.shape
        (torch.Size([3, 14400]), torch.Size([3, 128]), torch.Size([3, 5]))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_images(images)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    graph = trace(model)
    names = resolve_layers(graph, layers)
    like = model_like(model)
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    outputs: list[torch.Tensor] = []
    with eval_mode(model), torch.no_grad():
        for batch in images.split(batch_size):
            if like is not None:
                batch = batch.to(device=like.device, dtype=like.dtype)
            values = graph.run(batch, keep=[graph.index_of(name) for name in names])
            for name in names:
                value = values[graph.index_of(name)]
                if not isinstance(value, torch.Tensor):
                    raise TypeError(f"layer {name!r} returns a {type(value).__name__}; features need a tensor")
                chunks[name].append(value.detach().reshape(len(value), -1).to("cpu", torch.float32, copy=True))
            out = values[graph.output]
            outputs.append(out.detach().to("cpu", torch.float32, copy=True))
    return {name: torch.cat(parts) for name, parts in chunks.items()}, torch.cat(outputs)


def _check_boxes(boxes: torch.Tensor, n: int, name: str = "boxes") -> torch.Tensor:
    boxes = torch.as_tensor(boxes)
    if boxes.shape != (n, 4):
        raise ValueError(f"{name} must have shape ({n}, 4) (x0, y0, x1, y1 per image), got {tuple(boxes.shape)}")
    if boxes.is_floating_point():
        boxes = boxes.round()
    boxes = boxes.long()
    if bool((boxes[:, 2] < boxes[:, 0]).any() | (boxes[:, 3] < boxes[:, 1]).any()):
        raise ValueError(f"{name} must have x1 >= x0 and y1 >= y0, got {boxes.tolist()}")
    return boxes


def occlude(images: torch.Tensor, boxes: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """A copy of ``images`` with box ``i`` of image ``i`` set to ``fill`` (the rest of each image unchanged).

    With mean-subtracted inputs the default ``fill=0`` is the mean image: a grey occluder as in the
    paper. Boxes are clipped to the image.

    Args:
        images: (N, C, H, W).
        boxes: (N, 4) ``(x0, y0, x1, y1)`` in pixels, ``x1`` and ``y1`` exclusive.
        fill: the value written into the boxes.

    Returns:
        The occluded images, same shape, dtype and device.

    Example:
        >>> occlude(torch.ones(1, 1, 3, 4), torch.tensor([[1, 0, 3, 2]]))[0, 0]
        tensor([[1., 0., 0., 1.],
                [1., 0., 0., 1.],
                [1., 1., 1., 1.]])
    """
    _check_images(images)
    boxes = _check_boxes(boxes, len(images))
    out = images.clone()
    h, w = images.shape[-2:]
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        x0, x1 = min(max(x0, 0), w), min(max(x1, 0), w)
        y0, y1 = min(max(y0, 0), h), min(max(y1, 0), h)
        out[i, :, y0:y1, x0:x1] = fill
    return out


def random_boxes(sizes: torch.Tensor, regions: torch.Tensor, image_size: tuple[int, int], *,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """One random box per image, of the given size, lying inside the given region where it fits.

    Each box's top-left corner is drawn uniformly among the integer positions that keep the box inside
    its region (e.g. the object's box: the paper's "random parts of the object"). A region smaller than
    the box gets the box centred on it, shifted to lie inside the image.

    Args:
        sizes: (N, 2) ``(width, height)`` of each box, in pixels.
        regions: (N, 4) ``(x0, y0, x1, y1)`` the box must lie in.
        image_size: ``(H, W)`` of the images.
        generator: CPU generator for the positions.

    Returns:
        (N, 4) int64 boxes ``(x0, y0, x1, y1)``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> b = random_boxes(torch.tensor([[4, 2]]), torch.tensor([[10, 10, 20, 20]]), (32, 32), generator=g)
        >>> bool(b[0, 0] >= 10 and b[0, 2] <= 20 and b[0, 2] - b[0, 0] == 4 and b[0, 3] - b[0, 1] == 2)
        True
    """
    sizes = torch.as_tensor(sizes).long()
    n = len(sizes)
    if sizes.shape != (n, 2) or bool((sizes < 0).any()):
        raise ValueError(f"sizes must be (N, 2) non-negative (width, height), got shape {tuple(sizes.shape)}")
    regions = _check_boxes(regions, n, "regions")
    h, w = int(image_size[0]), int(image_size[1])
    if bool((sizes[:, 0] > w).any() | (sizes[:, 1] > h).any()):
        raise ValueError(f"a box of size {sizes.tolist()} does not fit in a {h}x{w} image")
    out = torch.empty((n, 4), dtype=torch.long)
    u = torch.rand((n, 2), generator=generator, dtype=torch.float64)
    for i in range(n):
        corner = []
        for axis, limit in ((0, w), (1, h)):
            size, lo, hi = int(sizes[i, axis]), int(regions[i, axis]), int(regions[i, axis + 2]) - int(sizes[i, axis])
            if hi < lo:  # the region is smaller than the box: centre it there
                lo = hi = (int(regions[i, axis]) + int(regions[i, axis + 2]) - size) // 2
            lo, hi = min(max(lo, 0), limit - size), min(max(hi, 0), limit - size)
            corner.append(lo + min(int(float(u[i, axis]) * (hi - lo + 1)), hi - lo))
        out[i] = torch.tensor([corner[0], corner[1], corner[0] + sizes[i, 0], corner[1] + sizes[i, 1]])
    return out


def sign_hamming(differences: torch.Tensor) -> torch.Tensor:
    """Normalised Hamming distances between the signs of each pair of rows.

    ``result[i, j]`` is the fraction of the ``D`` positions where ``sign(differences[i])`` and
    ``sign(differences[j])`` differ; the signs are -1, 0 and +1, so a unit that changed in one image
    and not in the other counts as a difference.

    Args:
        differences: (N, D), one feature difference ``ε_i`` per row.

    Returns:
        (N, N) float64, symmetric, zero on the diagonal.

    Example:
        >>> sign_hamming(torch.tensor([[1.0, -2.0, 0.0, 3.0], [2.0, 1.0, 0.0, 0.0]]))
        tensor([[0.0000, 0.5000],
                [0.5000, 0.0000]], dtype=torch.float64)
    """
    if not isinstance(differences, torch.Tensor) or differences.dim() != 2 or differences.shape[1] == 0:
        shape = tuple(differences.shape) if isinstance(differences, torch.Tensor) else type(differences).__name__
        raise ValueError(f"differences must be a (N, D) tensor with D > 0, got {shape}")
    signs = torch.sign(differences).to(torch.int8)
    n, d = signs.shape
    out = torch.zeros((n, n), dtype=torch.float64)
    for i in range(n):
        out[i] = (signs[i] != signs).sum(dim=1).double() / d
    return out


@dataclass(frozen=True)
class DeltaScore:
    """Δ of one part at one layer: the mean and standard deviation of the normalised pair distances.

    Attributes:
        mean: mean over the ordered pairs ``i ≠ j`` of ``H(sign ε_i, sign ε_j) / D``; equals the paper's
            ``Σ_{i≠j} H`` divided by the number of pairs and the feature length.
        std: their standard deviation (population, over the pairs).
        pairs: how many pair distances were averaged.
    """

    mean: float
    std: float
    pairs: int


def _pair_values(differences: torch.Tensor) -> torch.Tensor:
    n = len(differences)
    if n < 2:
        raise ValueError(f"Δ needs at least 2 images, got {n}")
    dist = sign_hamming(differences)
    return dist[~torch.eye(n, dtype=torch.bool)]


def _score(values: torch.Tensor) -> DeltaScore:
    return DeltaScore(float(values.mean()), float(values.std(unbiased=False)), int(values.numel()))


def delta_score(differences: torch.Tensor) -> DeltaScore:
    """Δ of a set of feature differences ``ε_i`` (one per image): the normalised Table 1 score.

    Args:
        differences: (N, D) with N >= 2, ``ε_i = features(original_i) − features(occluded_i)``.

    Returns:
        A :class:`DeltaScore` over the ``N (N − 1)`` ordered pairs.

    Example:
        >>> eps = torch.tensor([[1.0, -1.0, 0.0, 0.0], [1.0, -1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
        >>> s = delta_score(eps)
        >>> round(s.mean, 4), s.pairs
        (0.1667, 6)
    """
    return _score(_pair_values(differences))


@dataclass(frozen=True)
class CorrespondenceResult:
    """Table 1: Δ ± std per occluded part and for random regions, at each layer.

    Attributes:
        layers: the layers, in the order asked.
        parts: the parts, in the order asked; :data:`RANDOM` is the control row.
        scores: ``{part or "random": {layer: DeltaScore}}``.
        feature_sizes: ``{layer: D}``, the feature length that normalises the Hamming distances.
        changed: ``{part or "random": {layer: fraction}}``, the mean fraction of units with ``ε ≠ 0``:
            Δ counts a unit that changed in one image and not in the other, so an occluder that changes
            more units tends to a higher Δ whatever the correspondence.
        part_boxes: ``{part: (N, 4)}`` the boxes occluded (model input pixels).
        random_boxes: ``{part: (T, N, 4)}`` the control boxes, ``T`` draws of that part's size.
    """

    layers: tuple[str, ...]
    parts: tuple[str, ...]
    scores: dict[str, dict[str, DeltaScore]]
    feature_sizes: dict[str, int]
    changed: dict[str, dict[str, float]]
    part_boxes: dict[str, torch.Tensor]
    random_boxes: dict[str, torch.Tensor]

    def below_random(self, layer: str) -> list[str]:
        """The parts whose Δ at ``layer`` is lower than the random regions' (the paper's finding)."""
        control = self.scores[RANDOM][layer].mean
        return [p for p in self.parts if self.scores[p][layer].mean < control]


def correspondence(model: nn.Module, images: torch.Tensor, part_boxes: Mapping[str, torch.Tensor], *,
                   object_boxes: torch.Tensor | None = None, layers: str | Sequence[str] = DEFAULT_LAYERS,
                   random_trials: int = 10, fill: float = 0.0, generator: torch.Generator | None = None,
                   batch_size: int = 32, show_progress: bool = False) -> CorrespondenceResult:
    """The correspondence analysis (Table 1): Δ for each occluded part and for random regions.

    For each part, every image has that part occluded (``fill``) and ``ε_i`` is taken at each layer;
    Δ ± std comes from the pairs of images (see :func:`delta_score`). The control: ``random_trials``
    times per part, each image gets a box of that part's size at a random place inside its object box
    (independently per image); the pair distances of all parts and trials make the ``random`` row.

    Args:
        model: any ``nn.Module`` (images go to its parameters' device and dtype).
        images: model inputs (N, C, H, W), mean subtracted and cropped; N >= 2.
        part_boxes: ``{part name: (N, 4) boxes (x0, y0, x1, y1)}`` in input pixels, exclusive ends.
        object_boxes: (N, 4) the region random boxes are drawn in; the whole image when None.
        layers: submodule names (``"conv5"``, ``"features.12"``).
        random_trials: draws of random boxes per part (0: no control row).
        fill: occluder value (0 is the mean image for mean-subtracted inputs).
        generator: CPU generator for the random boxes.
        batch_size: images per forward pass.
        show_progress: a progress bar on a terminal.

    Returns:
        A :class:`CorrespondenceResult`.

    Raises:
        ValueError: fewer than 2 images, no parts, a part called ``"random"``, boxes of the wrong shape,
            an unknown layer, or a negative ``random_trials``.

    Example:
        >>> from zfnet.models import build
        >>> net = build("zfnet-tiny", num_classes=4)
        >>> x = torch.randn(5, 3, 64, 64)
        >>> eyes = torch.tensor([[10, 10, 20, 18]] * 5)
        >>> res = correspondence(net, x, {"eye": eyes}, random_trials=2, generator=torch.Generator().manual_seed(0))
        >>> sorted(res.scores), res.scores["eye"]["conv5"].pairs, res.scores["random"]["fc7"].pairs
        (['eye', 'random'], 20, 40)
    """
    _check_images(images)
    n = len(images)
    if n < 2:
        raise ValueError(f"the correspondence analysis needs at least 2 images, got {n}")
    if not part_boxes:
        raise ValueError("part_boxes is empty; give at least one part")
    if RANDOM in part_boxes:
        raise ValueError(f"{RANDOM!r} names the control row; call the part something else")
    if isinstance(random_trials, bool) or not isinstance(random_trials, int) or random_trials < 0:
        raise ValueError(f"random_trials must be a non-negative int, got {random_trials!r}")
    names = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
    h, w = images.shape[-2:]
    boxes = {p: _check_boxes(b, n, f"boxes of {p!r}") for p, b in part_boxes.items()}
    regions = (torch.tensor([[0, 0, w, h]] * n) if object_boxes is None
               else _check_boxes(object_boxes, n, "object_boxes"))
    clipped = {p: torch.stack([b[:, 0].clamp(0, w), b[:, 1].clamp(0, h), b[:, 2].clamp(0, w),
                               b[:, 3].clamp(0, h)], dim=1) for p, b in boxes.items()}

    reference, _ = layer_features(model, images, names, batch_size=batch_size)
    controls = {p: torch.stack([random_boxes(torch.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], dim=1), regions,
                                             (h, w), generator=generator) for _ in range(random_trials)])
                if random_trials else torch.empty((0, n, 4), dtype=torch.long) for p, b in clipped.items()}

    jobs = [(p, clipped[p]) for p in clipped] + [(RANDOM, controls[p][t]) for p in clipped
                                                 for t in range(random_trials)]
    pair_values: dict[str, dict[str, list[torch.Tensor]]] = {}
    changed: dict[str, dict[str, list[float]]] = {}
    for row, box in progress(jobs, desc="correspondence", unit="it", enabled=show_progress):
        occluded, _ = layer_features(model, occlude(images, box, fill), names, batch_size=batch_size)
        per_layer = pair_values.setdefault(row, {layer: [] for layer in names})
        moved = changed.setdefault(row, {layer: [] for layer in names})
        for layer in names:
            eps = reference[layer] - occluded[layer]
            per_layer[layer].append(_pair_values(eps))
            moved[layer].append(float((eps != 0).double().mean()))
    scores = {row: {layer: _score(torch.cat(v)) for layer, v in per_layer.items()}
              for row, per_layer in pair_values.items()}
    return CorrespondenceResult(layers=tuple(names), parts=tuple(clipped), scores=scores,
                                feature_sizes={layer: int(reference[layer].shape[1]) for layer in names},
                                changed={row: {layer: sum(v) / len(v) for layer, v in per.items()}
                                         for row, per in changed.items()},
                                part_boxes=clipped, random_boxes=controls)

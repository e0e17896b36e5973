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

Whether a part's Δ is really below random is a test, not a comparison of means
(:func:`part_vs_random`): the result keeps every pair distance, for the part's occluder and for each
random draw of its size, and :meth:`CorrespondenceResult.compare` gives a
:class:`zfnet.analysis.stats.Comparison` per part and layer, with an interval and a p-value.

Everything here works on tensors: model inputs (mean subtracted, cropped) and boxes in their pixel
coordinates. :mod:`zfnet.experiments.correspondence` reads runs and annotation files and writes the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..graph import eval_mode, model_like, trace
from ..progress import progress
from ..visualize.topk import resolve_layers
from .stats import ALTERNATIVES, Comparison, null_comparison

__all__ = [
    "layer_features", "occlude", "random_boxes", "sign_hamming", "DeltaScore", "delta_score",
    "CorrespondenceResult", "correspondence", "part_vs_random", "RANDOM", "DEFAULT_LAYERS", "DEFAULT_PARTS",
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
        distances: ``{part: {layer: (T + 1, N, T + 1, N) float64}}``, every pair distance the test
            needs: ``[a, i, b, j]`` is the normalised sign Hamming distance between ``ε`` of image ``i``
            under occluder ``a`` and ``ε`` of image ``j`` under occluder ``b``, where occluder 0 is the
            part and ``1..T`` are the random draws of its size (``random_boxes[part]``). The part's
            pair values are ``[0, :, 0, :]`` off the diagonal, draw ``t``'s are ``[t, :, t, :]``.
    """

    layers: tuple[str, ...]
    parts: tuple[str, ...]
    scores: dict[str, dict[str, DeltaScore]]
    feature_sizes: dict[str, int]
    changed: dict[str, dict[str, float]]
    part_boxes: dict[str, torch.Tensor]
    random_boxes: dict[str, torch.Tensor]
    distances: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    def below_random(self, layer: str) -> list[str]:
        """The parts whose mean Δ at ``layer`` is lower than the random regions'.

        A comparison of means, not a finding: use :meth:`compare` to say whether it is real.
        """
        control = self.scores[RANDOM][layer].mean
        return [p for p in self.parts if self.scores[p][layer].mean < control]

    def compare(self, part: str, layer: str, *, alternative: str = "less", permutations: int = 10_000,
                seed: int = 0, confidence: float = 0.95) -> Comparison:
        """Is ``part``'s Δ at ``layer`` really lower than random regions' of its size? See :func:`part_vs_random`.

        Phrase the outcome with :meth:`Comparison.verdict`, e.g.
        ``result.compare("nose", "conv5").verdict(compared="Δ of the nose", baseline="random regions'")``.

        Raises:
            KeyError: an unknown part or layer (the message lists the valid ones).
            ValueError: no random control (``random_trials=0``), or bad test settings.
        """
        if part not in self.distances:
            raise KeyError(f"unknown part {part!r}; the parts are {', '.join(self.parts)}")
        if layer not in self.distances[part]:
            raise KeyError(f"unknown layer {layer!r}; the layers are {', '.join(self.layers)}")
        return part_vs_random(self.distances[part][layer], alternative=alternative, permutations=permutations,
                              seed=seed, confidence=confidence)

    def comparisons(self, **settings) -> dict[str, dict[str, Comparison]]:
        """``{layer: {part: Comparison}}``: :meth:`compare` for every part at every layer.

        Claims about several at once ("all 3 parts") should use
        :func:`zfnet.analysis.stats.holm` on the family first.
        """
        return {layer: {p: self.compare(p, layer, **settings) for p in self.parts} for layer in self.layers}


def part_vs_random(distances: torch.Tensor, *, alternative: str = "less", permutations: int = 10_000,
                   seed: int = 0, confidence: float = 0.95) -> Comparison:
    """Test a part's Δ against random regions of its size by swapping occluders within each image.

    The statistic is ``Δ_part − Δ_random``: the mean pair distance under the part's occluder minus the
    mean over the random draws of the mean pair distance under each draw (the control matched to the
    part's size; the table's ``random`` row pools all parts' sizes).

    Why this test, and not a paired test over image pairs: the pair distances are paired by image pair
    (the part and every draw occlude the same images), but they are not independent units: the
    ``N (N − 1) / 2`` pairs share ``N`` images, and one odd image moves ``N − 1`` pairs together, so
    a sign-flip test over pairs would find effects that are not there. The unit of chance is the
    image. Under "no correspondence" the part's occluder is one more random occluder of its size: in
    each image the ``T + 1`` feature changes (the part's and the draws') are exchangeable. The test
    shuffles, independently in each image, which occluder plays the part and which plays each draw,
    and recomputes the statistic from the stored cross-occluder distances (that is what
    ``distances[a, i, b, j]`` with ``a ≠ b`` is for). The p-values are Monte Carlo with the ``+1``
    correction; the interval is the observed difference minus the shuffled statistic's quantiles
    (:func:`zfnet.analysis.stats.null_comparison`), so it excludes zero exactly when the two-sided test
    rejects at ``1 − confidence``.

    Note what the null hypothesis is: a part that sits at the same place in every image is compared
    with boxes anywhere on the object, so the test also responds to place alone (spatial units of a
    conv layer that every image's part covers), even in an untrained network.

    Args:
        distances: (T + 1, N, T + 1, N) pair distances, occluder 0 the part (see
            :attr:`CorrespondenceResult.distances`); T >= 1, N >= 2.
        alternative: ``"less"`` (the paper's finding: part below random), ``"greater"``, ``"two-sided"``.
        permutations: random shuffles.
        seed: seeds the shuffles.
        confidence: coverage of the interval.

    Returns:
        A :class:`zfnet.analysis.stats.Comparison` of ``Δ_part − Δ_random``, ``sizes == (N,)`` images.

    Raises:
        ValueError: a tensor of the wrong shape (no random draw, fewer than 2 images), bad settings.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> eps = torch.randn(3, 6, 40, generator=g)  # part + 2 draws, 6 images, 40 units
        >>> eps[0] = eps[0, :1] + 0.1 * eps[0]        # the part changes every image the same way
        >>> d = sign_hamming(eps.reshape(18, 40)).reshape(3, 6, 3, 6)
        >>> c = part_vs_random(d, permutations=999)
        >>> c.significant(), c.difference < 0
        (True, True)
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(ALTERNATIVES)}, got {alternative!r}")
    if isinstance(permutations, bool) or not isinstance(permutations, int) or permutations < 1:
        raise ValueError(f"permutations must be a positive int, got {permutations!r}")
    shape = tuple(distances.shape) if isinstance(distances, torch.Tensor) else type(distances).__name__
    if (not isinstance(distances, torch.Tensor) or distances.dim() != 4 or distances.shape[0] != distances.shape[2]
            or distances.shape[1] != distances.shape[3]):
        raise ValueError(f"distances must be a (T + 1, N, T + 1, N) tensor, got {shape}")
    k, n = distances.shape[:2]
    if k < 2 or n < 2:
        raise ValueError(f"the test needs at least 1 random draw and 2 images, got shape {shape}")
    dist = distances.detach().to("cpu", torch.float64)
    images = torch.arange(n)

    def statistic(chosen: torch.Tensor) -> torch.Tensor:
        # chosen: (B, N, K), chosen[b, i, s] = the occluder of image i that plays slot s (0: the part).
        rows, cols = chosen.permute(0, 2, 1)[..., :, None], chosen.permute(0, 2, 1)[..., None, :]
        pair = dist[rows, images[:, None], cols, images[None, :]]  # (B, K, N, N), zero diagonal
        delta = pair.sum(dim=(-1, -2)) / (n * (n - 1))  # (B, K): Δ of each slot
        return delta[:, 0] - delta[:, 1:].mean(dim=1)

    observed = float(statistic(torch.arange(k).expand(1, n, k))[0])
    g = torch.Generator().manual_seed(seed)
    block = max(1, (1 << 22) // (k * n * n))
    null = torch.cat([statistic(torch.rand((min(block, permutations - s), n, k), generator=g).argsort(dim=-1))
                      for s in range(0, permutations, block)])
    return null_comparison(observed, null, alternative=alternative, confidence=confidence, sizes=(n,),
                           unit="images", method="occluders shuffled within each image")


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

    # (row, part, occluder): occluder 0 is the part's box, 1..T the random draws of its size.
    jobs = [(p, p, 0, clipped[p]) for p in clipped] + [(RANDOM, p, t + 1, controls[p][t]) for p in clipped
                                                       for t in range(random_trials)]
    signs: dict[str, dict[str, list[torch.Tensor]]] = {p: {layer: [] for layer in names} for p in clipped}
    changed: dict[str, dict[str, list[float]]] = {}
    for row, part, _, box in progress(jobs, desc="correspondence", unit="it", enabled=show_progress):
        occluded, _ = layer_features(model, occlude(images, box, fill), names, batch_size=batch_size)
        moved = changed.setdefault(row, {layer: [] for layer in names})
        for layer in names:
            eps = reference[layer] - occluded[layer]
            signs[part][layer].append(torch.sign(eps).to(torch.int8))  # all Δ needs of ε, in a quarter the memory
            moved[layer].append(float((eps != 0).double().mean()))
    # Every occluder against every other, image by image: the within-occluder blocks give Δ, the
    # cross blocks let part_vs_random shuffle occluders within an image.
    k = random_trials + 1
    distances = {p: {layer: sign_hamming(torch.cat(signs[p][layer])).reshape(k, n, k, n) for layer in names}
                 for p in clipped}
    off = ~torch.eye(n, dtype=torch.bool)
    pair_values: dict[str, dict[str, list[torch.Tensor]]] = {}
    for row, part, a, _ in jobs:
        per_layer = pair_values.setdefault(row, {layer: [] for layer in names})
        for layer in names:
            per_layer[layer].append(distances[part][layer][a, :, a, :][off])
    scores = {row: {layer: _score(torch.cat(v)) for layer, v in per_layer.items()}
              for row, per_layer in pair_values.items()}
    return CorrespondenceResult(layers=tuple(names), parts=tuple(clipped), scores=scores,
                                feature_sizes={layer: int(reference[layer].shape[1]) for layer in names},
                                changed={row: {layer: sum(v) / len(v) for layer, v in per.items()}
                                         for row, per in changed.items()},
                                part_boxes=clipped, random_boxes=controls, distances=distances)

"""Feature invariance to vertical translation, scale and rotation.

Zeiler & Fergus (2014, §4.1, Fig. 5) translate 5 images vertically (up to about ±60 px of 224, a
quarter of the image), scale them (1× to 1.8×) and rotate them (0° to 360°), and plot at each step

- the distance between the feature vectors of the original and the transformed image at layers 1
  and 7 ("canonical distance"), and
- the probability the network gives the image's true label,

one curve per image. Small transformations move layer-1 features a lot and layer-7 features much
less (quasi-linearly for translation and scale); the output is stable under translation and scale
but not under rotation, unless the object is rotationally symmetric.

The distance here is the Euclidean distance normalised by the length of the original's feature
vector, ``‖f(x) − f(T x)‖ / ‖f(x)‖``: 0 for the identity, 1 when the change is as large as the
features themselves, comparable between layers of different widths and scales.

Transforms act on the whole base-size image (mean subtracted, so the zeros that come in at the
borders are the mean image, grey) about its centre; the model then sees the centre crop, so a
translation brings real image content into the crop before it brings in grey.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.transforms import center_crop
from ..progress import progress
from .correspondence import layer_features

__all__ = [
    "TRANSFORMS", "UNITS", "DEFAULT_LAYERS", "translate_vertical", "scale_images", "rotate_images",
    "transform_images", "default_steps", "feature_distance", "InvarianceCurves", "invariance",
]

TRANSFORMS = ("translation", "scale", "rotation")
"""The paper's three transformations, rows a-c of Fig. 5."""

UNITS = {"translation": "pixels", "scale": "factor", "rotation": "degrees"}
"""The unit of each transformation's steps."""

DEFAULT_LAYERS = ("conv1", "fc7")
"""The paper's layers 1 and 7."""


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a tensor (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, got shape {tuple(images.shape)}")


def translate_vertical(images: torch.Tensor, pixels: float) -> torch.Tensor:
    """Move the content of each image ``pixels`` down (up when negative); zeros come in at the edge.

    Args:
        images: (N, C, H, W).
        pixels: the shift, rounded to whole pixels.

    Returns:
        The shifted images, same shape, dtype and device.

    Example:
        >>> translate_vertical(torch.arange(1.0, 4.0).reshape(1, 1, 3, 1), 1).flatten()
        tensor([0., 1., 2.])
    """
    _check_images(images)
    if not math.isfinite(float(pixels)):
        raise ValueError(f"pixels must be finite, got {pixels!r}")
    dy = int(round(float(pixels)))
    h = images.shape[-2]
    out = torch.zeros_like(images)
    if abs(dy) >= h:
        return out
    if dy >= 0:
        out[..., dy:, :] = images[..., :h - dy, :]
    else:
        out[..., :h + dy, :] = images[..., -dy:, :]
    return out


def _affine(images: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``out(p) = in(c + matrix (p − c))`` with ``c`` the image centre, ``p = (x, y)`` in pixels (y down);
    bilinear, zeros outside. The identity returns an exact copy."""
    if torch.equal(matrix, torch.eye(2, dtype=matrix.dtype)):
        return images.clone()
    n, _, h, w = images.shape
    # grid_sample's coordinates run from -1 to 1 across the image (align_corners=False), so a map
    # in pixels becomes D A D^-1 with D = diag(2/W, 2/H); both are about the centre.
    d = torch.tensor([2.0 / w, 2.0 / h], dtype=torch.float64)
    norm = d[:, None] * matrix.double() / d[None, :]
    theta = torch.zeros((n, 2, 3), dtype=torch.float64)
    theta[:, :, :2] = norm
    dtype = images.dtype if images.is_floating_point() else torch.float32
    grid = F.affine_grid(theta.to(dtype=dtype, device=images.device), [n, images.shape[1], h, w],
                         align_corners=False)
    return F.grid_sample(images.to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def scale_images(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Magnify each image by ``factor`` about its centre (bilinear; zeros come in when ``factor < 1``).

    Args:
        images: (N, C, H, W) float.
        factor: the magnification, > 0 (the paper's 1 to 1.8).

    Returns:
        The scaled images, same shape.

    Example:
        >>> scale_images(torch.arange(4.0).reshape(1, 1, 1, 4), 2.0).flatten()  # a ramp, twice as steep
        tensor([0.7500, 1.2500, 1.7500, 2.2500])
    """
    _check_images(images)
    factor = float(factor)
    if not math.isfinite(factor) or factor <= 0:
        raise ValueError(f"factor must be a positive number, got {factor!r}")
    return _affine(images, torch.eye(2, dtype=torch.float64) / factor)


def rotate_images(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate each image by ``degrees`` counter-clockwise (as displayed) about its centre; bilinear,
    zeros come in at the corners.

    Args:
        images: (N, C, H, W) float.
        degrees: the angle; whole turns give the image back exactly.

    Returns:
        The rotated images, same shape.

    Example:
        >>> x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
        >>> rotate_images(x, 90).round()[0, 0]
        tensor([[2., 4.],
                [1., 3.]])
    """
    _check_images(images)
    degrees = float(degrees)
    if not math.isfinite(degrees):
        raise ValueError(f"degrees must be finite, got {degrees!r}")
    turn = degrees % 360.0
    if turn == 0.0:
        return images.clone()
    t = math.radians(turn)
    c, s = math.cos(t), math.sin(t)
    # The output at offset (dx, dy) from the centre shows the input at R (dx, dy): with y pointing
    # down, content moves counter-clockwise on screen.
    return _affine(images, torch.tensor([[c, -s], [s, c]], dtype=torch.float64))


def transform_images(images: torch.Tensor, transform: str, amount: float) -> torch.Tensor:
    """Apply one of :data:`TRANSFORMS` by ``amount`` (pixels, factor or degrees: see :data:`UNITS`).

    Example:
        >>> x = torch.randn(2, 3, 8, 8)
        >>> torch.equal(transform_images(x, "rotation", 0), x), torch.equal(transform_images(x, "scale", 1), x)
        (True, True)
    """
    if transform == "translation":
        return translate_vertical(images, amount)
    if transform == "scale":
        return scale_images(images, amount)
    if transform == "rotation":
        return rotate_images(images, amount)
    raise ValueError(f"unknown transform {transform!r}; valid: {', '.join(TRANSFORMS)}")


def default_steps(transform: str, input_size: int) -> list[float]:
    """The paper's ranges: shifts of up to a quarter of the input (13 steps), scale 1 to 1.8 (9 steps),
    rotation 0° to 360° every 10° (37 steps).

    Example:
        >>> default_steps("translation", 112)[:3], default_steps("scale", 112)[-1], len(default_steps("rotation", 112))
        ([-28.0, -23.0, -19.0], 1.8, 37)
    """
    if transform == "translation":
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 4:
            raise ValueError(f"input_size must be an int of at least 4, got {input_size!r}")
        q = input_size // 4
        return sorted({float(round(-q + 2 * q * i / 12)) for i in range(13)})
    if transform == "scale":
        return [round(1.0 + 0.1 * i, 1) for i in range(9)]
    if transform == "rotation":
        return [10.0 * i for i in range(37)]
    raise ValueError(f"unknown transform {transform!r}; valid: {', '.join(TRANSFORMS)}")


def feature_distance(reference: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """``‖reference − features‖ / ‖reference‖`` per row: the normalised Euclidean distance of Fig. 5.

    A zero reference gives 0 where ``features`` is zero too and ``nan`` elsewhere (no scale to measure by).

    Args:
        reference: (N, D) features of the originals.
        features: (N, D) features of the transformed images.

    Returns:
        (N,) float64.

    Example:
        >>> feature_distance(torch.tensor([[3.0, 4.0]]), torch.tensor([[3.0, 1.0]]))
        tensor([0.6000], dtype=torch.float64)
    """
    if reference.shape != features.shape or reference.dim() != 2:
        raise ValueError(f"reference and features must be (N, D) of one shape, got {tuple(reference.shape)} "
                         f"and {tuple(features.shape)}")
    ref, feat = reference.double(), features.double()
    dist = (ref - feat).norm(dim=1)
    scale = ref.norm(dim=1)
    out = dist / scale
    return torch.where(scale > 0, out, torch.where(dist > 0, torch.full_like(out, float("nan")), 0.0))


@dataclass(frozen=True)
class InvarianceCurves:
    """Fig. 5 for one transformation: per image and step, the feature distances and P(true label).

    Attributes:
        transform: one of :data:`TRANSFORMS`.
        steps: (T,) the amounts (:data:`UNITS`).
        distances: ``{layer: (N, T)}`` normalised Euclidean distances to the untransformed image's features.
        prob_true: (N, T) softmax probability of each image's true label.
        predicted: (N, T) int64 the most probable class.
    """

    transform: str
    steps: torch.Tensor
    distances: dict[str, torch.Tensor]
    prob_true: torch.Tensor
    predicted: torch.Tensor


def invariance(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, transform: str,
               steps: Sequence[float], *, layers: str | Sequence[str] = DEFAULT_LAYERS, crop: int | None = None,
               batch_size: int = 32, show_progress: bool = False) -> InvarianceCurves:
    """Transform each image by each step and measure how far its features move and P(true label).

    Each step transforms the images (:func:`transform_images`), takes the centre ``crop`` and runs the
    model; distances are to the features of the untransformed crop (:func:`feature_distance`), and
    P(true) is the softmax of the model's output at each label.

    Args:
        model: any ``nn.Module`` that returns class scores (N, classes).
        images: (N, C, S, S) float, mean subtracted (zeros are the mean image), at least ``crop`` on a side.
        labels: (N,) the true classes.
        transform: ``"translation"``, ``"scale"`` or ``"rotation"``.
        steps: the amounts, in :data:`UNITS`.
        layers: submodule names whose features are compared (``"conv1"``, ``"features.0"``).
        crop: the model's input side; None feeds the whole images.
        batch_size: images per forward pass.
        show_progress: a progress bar over the steps on a terminal.

    Returns:
        :class:`InvarianceCurves`.

    Raises:
        ValueError: an unknown transform or layer, no steps, labels that do not match, or a crop larger
            than the images.

    Example:
        >>> from zfnet.models import build
        >>> net = build("zfnet-tiny", num_classes=4)
        >>> x = torch.randn(2, 3, 73, 73)
        >>> c = invariance(net, x, torch.tensor([0, 3]), "scale", [1.0, 1.4], crop=64)
        >>> c.distances["conv1"][:, 0].tolist(), c.prob_true.shape
        ([0.0, 0.0], torch.Size([2, 2]))
    """
    _check_images(images)
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; valid: {', '.join(TRANSFORMS)}")
    steps = [float(s) for s in steps]
    if not steps:
        raise ValueError("steps is empty; give at least one amount")
    labels = torch.as_tensor(labels).long().flatten()
    if len(labels) != len(images):
        raise ValueError(f"got {len(labels)} labels for {len(images)} images")
    if crop is not None and (isinstance(crop, bool) or not isinstance(crop, int) or crop < 1
                             or crop > min(images.shape[-2:])):
        raise ValueError(f"crop must be an int from 1 to {min(images.shape[-2:])}, got {crop!r}")
    names = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))

    def run(x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return layer_features(model, center_crop(x, crop) if crop else x, names, batch_size=batch_size)

    reference, _ = run(images)
    distances = {layer: torch.empty((len(images), len(steps)), dtype=torch.float64) for layer in names}
    prob_true = torch.empty((len(images), len(steps)), dtype=torch.float64)
    predicted = torch.empty((len(images), len(steps)), dtype=torch.long)
    for t, amount in enumerate(progress(steps, desc=transform, unit="step", enabled=show_progress)):
        features, logits = run(transform_images(images, transform, amount))
        if logits.dim() != 2 or int(labels.max()) >= logits.shape[1] or int(labels.min()) < 0:
            raise ValueError(f"the model returns shape {tuple(logits.shape)}; labels {labels.tolist()} need "
                             "(N, classes) scores with every label below the number of classes")
        for layer in names:
            distances[layer][:, t] = feature_distance(reference[layer], features[layer])
        probs = torch.softmax(logits.double(), dim=1)
        prob_true[:, t] = probs.gather(1, labels[:, None])[:, 0]
        predicted[:, t] = probs.argmax(dim=1)
    return InvarianceCurves(transform, torch.tensor(steps, dtype=torch.float64), distances, prob_true, predicted)

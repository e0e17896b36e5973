"""A run's architecture as the paper's Fig. 3 draws it: every stage with its kernel, stride and output size.

The model is rebuilt from the run's saved configuration on PyTorch's ``meta`` device, where tensors have
shapes but no storage: a forward pass there gives every stage's output shape without allocating or
computing anything, for any registered model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..models import build, model_info

__all__ = ["Stage", "Layer", "Architecture", "architecture", "diagram"]


@dataclass(frozen=True)
class Stage:
    """One stage of the network (``conv1``, ``pool1``, ``norm1``, ...)."""

    name: str
    operation: str
    output: tuple[int, ...]  # (C, H, W) or (F,)
    parameters: int

    @property
    def size(self) -> str:
        """The output as the paper writes it: ``110×110×96`` or ``4096``."""
        if len(self.output) == 3:
            c, h, w = self.output
            return f"{h}×{w}×{c}"
        return "×".join(str(v) for v in self.output)


@dataclass(frozen=True)
class Layer:
    """A paper layer: a conv or FC stage with the pooling and normalisation that follow it."""

    name: str
    stages: tuple[Stage, ...]

    @property
    def output(self) -> tuple[int, ...]:
        return self.stages[0].output

    @property
    def parameters(self) -> int:
        return sum(s.parameters for s in self.stages)


@dataclass(frozen=True)
class Architecture:
    """A model's layers, its input and its parameter count."""

    layers: tuple[Layer, ...]
    input_size: int
    in_channels: int
    parameters: int


def _operation(module: nn.Module) -> str | None:
    """A short description of a stage, or None for stages not shown (flatten)."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if convs:
        c = convs[0]
        k, s, p = c.kernel_size, c.stride, c.padding
        pad = f", pad {p[0]}" if isinstance(p, tuple) and p[0] else ""
        relu = " + ReLU" if any(isinstance(m, nn.ReLU) for m in module.modules()) else ""
        return f"{c.out_channels} filters {k[0]}×{k[1]}, stride {s[0]}{pad}{relu}"
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if linears:
        relu = " + ReLU" if any(isinstance(m, nn.ReLU) for m in module.modules()) else ""
        return f"fully connected, {linears[0].out_features} units{relu}"
    if isinstance(module, nn.MaxPool2d):
        k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
        s = module.stride if isinstance(module.stride, int) else module.stride[0]
        return f"max pool {k}×{k}, stride {s}"
    if isinstance(module, nn.Dropout):
        return f"dropout {module.p:g}"
    if isinstance(module, nn.Flatten):
        return None
    if isinstance(module, nn.ReLU):
        return "ReLU"
    name = type(module).__name__
    return "contrast normalisation" if "Norm" in name else name


def architecture(config: dict[str, Any], num_classes: int) -> Architecture:
    """The stages of a run's model, grouped into the paper's layers, built on the meta device.

    Args:
        config: the run's ``config.json`` (``model`` and ``model_options``).
        num_classes: the width of the last layer (the run's class count).

    Returns:
        The layers (each a conv or FC stage with the stages that follow it), input and parameter count.

    Raises:
        ValueError: an unknown model or options it does not accept.
    """
    name = str(config.get("model"))
    options = dict(config.get("model_options") or {})
    with torch.device("meta"):
        model = build(name, num_classes=num_classes, **options)
    size = int(getattr(model, "input_size", model_info(name).input_size))
    in_channels = int(getattr(getattr(model, "config", None), "in_channels", 3))
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [child.register_forward_hook(lambda _m, _i, out, n=n: shapes.__setitem__(n, tuple(out.shape[1:])))
             for n, child in model.named_children()]
    try:
        with torch.no_grad():
            model(torch.empty(1, in_channels, size, size, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    layers: list[Layer] = []
    current: list[Stage] = []
    head = None
    for n, child in model.named_children():
        op = _operation(child)
        if op is None or n not in shapes:
            continue
        stage = Stage(n, op, shapes[n], sum(p.numel() for p in child.parameters()))
        starts = isinstance(child, (nn.Conv2d, nn.Linear)) or any(
            isinstance(m, (nn.Conv2d, nn.Linear)) for m in child.modules())
        if starts:
            if current:
                layers.append(Layer(head or current[0].name, tuple(current)))
            current, head = [stage], n
        else:
            current.append(stage)
    if current:
        layers.append(Layer(head or current[0].name, tuple(current)))
    return Architecture(tuple(layers), size, in_channels, sum(p.numel() for p in model.parameters()))


def diagram(arch: Architecture) -> dict[str, Any]:
    """Geometry of a Fig. 3-like drawing, as numbers for the SVG template.

    Each block is a box seen from the front-left: its thickness grows with the channels (log scale), its
    face with the map side; FC layers are thin bars whose height grows with their width.
    """
    blocks = [("input", (arch.in_channels, arch.input_size, arch.input_size), None)]
    for la in arch.layers:
        last = [s.output for s in la.stages if len(s.output) == 3][-1:]
        pooled = f"→ {last[0][1]}×{last[0][2]}" if last and last[0][1:] != la.output[1:] else None
        blocks.append((la.name, la.output, pooled))
    biggest = max(out[1] if len(out) == 3 else 1 for _, out, _ in blocks)
    widest = max(max(out[0], 1) for _, out, _ in blocks)
    height, pad, x = 170.0, 34.0, 40.0
    shapes = []
    for name, out, pooled in blocks:
        if len(out) == 3:
            c, side = out[0], out[1]
            h = 22 + 110 * math.sqrt(side / biggest)
            t = 3 + 22 * math.log1p(c) / math.log1p(widest)
            label = f"{out[1]}×{out[2]}×{c}"
        else:
            c = out[0]
            h = 20 + 90 * math.log1p(c) / math.log1p(widest)
            t, label = 6.0, str(c)
        dx, dy = 0.3 * h, 0.22 * h
        y = (height - h - dy) / 2 + 8

        def pts(*xy: float) -> str:
            return " ".join(f"{xy[i]:.1f},{xy[i + 1]:.1f}" for i in range(0, len(xy), 2))

        shapes.append({
            "name": name, "label": label, "pooled": pooled, "fc": len(out) != 3, "cx": round(x + (t + dx) / 2, 1),
            "front": pts(x, y + dy, x + t, y + dy, x + t, y + dy + h, x, y + dy + h),
            "top": pts(x, y + dy, x + dx, y, x + dx + t, y, x + t, y + dy),
            "side": pts(x + t, y + dy, x + t + dx, y, x + t + dx, y + h, x + t, y + dy + h),
        })
        x += max(t + dx + pad, 7.0 * max(len(label), len(name)) + 14)  # room for the labels below
    return {"width": round(x, 1), "height": height + 64, "shapes": shapes,
            "name_y": height + 24, "label_y": height + 42, "pooled_y": height + 58}

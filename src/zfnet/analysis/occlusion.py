"""Occlusion sensitivity (Zeiler & Fergus 2014, §4.2, Fig. 7), computed exactly and incrementally.

A grey square (the mean pixel, 0 after mean subtraction) slides over the image; at each position the
network's output is recorded. The paper shows four panels beside the input: (b) the total activation
of the feature map of a chosen layer (conv5) that responds most strongly to the clean image, (c) that
map's deconvnet projection, (d) the probability of the true class and (e) the most probable class,
each as a function of the occluder's position.

One full forward pass per position wastes most of its work: the occluder changes only the part of
each layer that it can reach (its *projective field*, given by every stage's kernel, stride and
padding), and that part is small in the early, expensive layers. Following the idea of Krypton
(Nakandala et al., SIGMOD 2019), :func:`occlusion` keeps every layer's activations of the clean image
and, for a batch of occluder positions at once, recomputes only the changed rectangle of each layer
from the clean activations around it. The first fully connected layer is updated incrementally when
the changed part of its input is small (``W x' = W x + W[:, changed] (x' - x)[changed]``); from the
first stage it cannot reason about (an adaptive pooling, say) it falls back to full computation.
The result equals one full forward pass per position up to floating-point rounding.

Two optional approximate modes measure their own error, the SSIM of their probability map against the
exact one (:func:`ssim`): ``"approximate"`` caps the projective field at a fraction of each map, as
Krypton's approximate inference does; ``"coarse"`` computes every other grid position exactly,
interpolates the rest, and drills down (computes exactly) wherever the interpolation's corners disagree
by more than a tolerance or predict different top classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..visualize.deconvnet import Deconvnet, _eval_mode, _Stage

__all__ = ["occlusion", "OcclusionResult", "occlusion_grid", "ssim", "MODES"]

#: The ways :func:`occlusion` can compute the maps.
MODES = ("exact", "approximate", "coarse", "brute")

# Stages applied position by position: their output at a pixel depends only on the input at that pixel.
_POINTWISE = frozenset({"relu", "lrn", "bn", "pass"})
_WINDOWED = frozenset({"conv", "pool"})


@dataclass(frozen=True)
class OcclusionResult:
    """The paper's occlusion panels for one image.

    Attributes:
        prob_true: (GH, GW) softmax probability of ``target`` with the occluder at each position (panel d).
        top_class: (GH, GW) the most probable class at each position (panel e).
        top_prob: (GH, GW) that class's probability.
        activity: (GH, GW) total activation of feature map ``channel`` of ``layer`` (panel b).
        projection: (C, H, W) the deconvnet projection of that map's strongest activation on the
            unoccluded image (panel c).
        channel: the feature map of ``layer`` whose strongest activation on the clean image is largest.
        target: the class whose probability ``prob_true`` holds.
        clean_prob: ``target``'s probability on the unoccluded image.
        clean_activity: the map's total activation on the unoccluded image.
        layer, window, stride, fill, mode: how the maps were made.
        ssim: approximate and coarse modes with ``check=True``: SSIM of ``prob_true`` against the exact map;
            else None.

    Position ``(i, j)`` of a grid is the occluder with its top-left corner at pixel
    ``(i * stride, j * stride)``.
    """

    prob_true: torch.Tensor
    top_class: torch.Tensor
    top_prob: torch.Tensor
    activity: torch.Tensor
    projection: torch.Tensor
    channel: int
    target: int
    clean_prob: float
    clean_activity: float
    layer: str
    window: int
    stride: int
    fill: float
    mode: str
    ssim: float | None = None

    @property
    def grid(self) -> tuple[int, int]:
        """(GH, GW): occluder positions per column and per row."""
        return tuple(self.prob_true.shape)  # type: ignore[return-value]

    def most_sensitive(self) -> tuple[int, int]:
        """Pixel (row, column) of the centre of the occluder that lowers ``prob_true`` most."""
        flat = int(torch.argmin(self.prob_true))
        i, j = divmod(flat, self.prob_true.shape[1])
        half = (self.window - 1) / 2
        return int(round(i * self.stride + half)), int(round(j * self.stride + half))


def occlusion_grid(height: int, width: int, window: int, stride: int) -> tuple[int, int]:
    """Number of occluder positions (rows, columns) that keep a ``window`` square inside the image.

    Example:
        >>> occlusion_grid(224, 224, 32, 8)
        (25, 25)
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be at least 1, got window={window}, stride={stride}")
    if window > min(height, width):
        raise ValueError(f"the occluder ({window} px) is larger than the image ({height}x{width})")
    return (height - window) // stride + 1, (width - window) // stride + 1


# -- the incremental engine ---------------------------------------------------------------------------


@dataclass
class _Region:
    """Activations of a batch of occluded images, stored as their difference from the clean image.

    For item ``n`` the activation equals the clean one except inside the rectangle with top-left
    corner ``(rows[n], cols[n])`` and size ``patch.shape[-2:]``, where it is ``patch[n]`` (which may also
    hold unchanged values).
    """

    patch: torch.Tensor  # (P, C, h, w)
    rows: torch.Tensor  # (P,)
    cols: torch.Tensor  # (P,)


def _out_span(start: torch.Tensor, size: int, stage: _Stage, axis: int, in_len: int, out_len: int,
              cap: float | None) -> tuple[torch.Tensor, int]:
    """Output rows a window stage must recompute when input rows [start, start + size) changed.

    Returns per-item offsets and one common size (so the batch stays one tensor): the exact span of
    every item fits inside its rectangle; near the border the rectangle is shifted inwards.
    """
    k = stage.dilation[axis] * (stage.kernel[axis] - 1) + 1
    s, p = stage.stride[axis], stage.padding[axis]
    # Output o reads padded input rows [o*s, o*s + k); padded row = real row + p.
    lo = torch.div(start + p - k + s, s, rounding_mode="floor")  # ceil((start + p - k + 1) / s)
    hi = torch.div(start + size - 1 + p, s, rounding_mode="floor") + 1
    lo, hi = lo.clamp(0, out_len), hi.clamp(0, out_len)
    span = int((hi - lo).max()) if len(lo) else 1
    span = max(1, min(span, out_len))
    if cap is not None:
        limit = max(1, math.ceil(cap * out_len))
        if span > limit:
            centre = (lo + hi) / 2
            lo = torch.floor(centre - limit / 2).long()
            span = limit
    return lo.clamp(0, out_len - span), span


def _overlay(clean: torch.Tensor, region: _Region, rows: torch.Tensor, cols: torch.Tensor,
             height: int, width: int) -> torch.Tensor:
    """The (P, C, height, width) windows of ``clean`` (C, H, W) at ``rows``/``cols``, with the region's patch.

    ``clean`` and the offsets are in the same (possibly padded) coordinates; ``region`` offsets too.
    Parts of the patch outside a window are dropped, parts of a window outside the patch are clean.
    """
    # Plain slicing per item: far cheaper than one advanced-indexing gather over (P, C, h, w).
    ph, pw = region.patch.shape[-2:]
    out = torch.empty((len(rows), clean.shape[0], height, width), dtype=clean.dtype, device=clean.device)
    geometry = torch.stack([rows, cols, region.rows, region.cols]).tolist()
    for n, (r, c, pr, pc) in enumerate(zip(*geometry)):
        out[n] = clean[:, r:r + height, c:c + width]
        top, left = max(r, pr), max(c, pc)
        bottom, right = min(r + height, pr + ph), min(c + width, pc + pw)
        if top < bottom and left < right:
            out[n, :, top - r:bottom - r, left - c:right - c] = region.patch[n, :, top - pr:bottom - pr,
                                                                             left - pc:right - pc]
    return out


def _pad_for(stage: _Stage, clean: torch.Tensor, out_shape: tuple[int, ...]) -> torch.Tensor:
    """``clean`` (C, H, W) padded as the stage pads it, plus enough at the end for ceil-mode windows."""
    pads = []
    for axis in (1, 0):  # F.pad wants (left, right, top, bottom)
        k = stage.dilation[axis] * (stage.kernel[axis] - 1) + 1
        p = stage.padding[axis]
        need = (out_shape[axis + 1] - 1) * stage.stride[axis] + k  # padded length the last window reaches
        pads += [p, max(0, need - p - clean.shape[axis + 1])]
    value = -math.inf if stage.kind == "pool" else 0.0
    return F.pad(clean, pads, value=value)


def _windowed(stage: _Stage, region: _Region, clean_in: torch.Tensor, padded: torch.Tensor,
              out_shape: tuple[int, ...], cap: float | None) -> _Region:
    """Recompute the changed rectangle of a convolution or max-pooling."""
    spans = []
    for axis, start in enumerate((region.rows, region.cols)):
        size = region.patch.shape[-2 + axis]
        spans.append(_out_span(start, size, stage, axis, clean_in.shape[1 + axis], out_shape[1 + axis], cap))
    (orow, oh), (ocol, ow) = spans
    k = [stage.dilation[a] * (stage.kernel[a] - 1) + 1 for a in range(2)]
    s = stage.stride
    ih, iw = (oh - 1) * s[0] + k[0], (ow - 1) * s[1] + k[1]
    shifted = _Region(region.patch, region.rows + stage.padding[0], region.cols + stage.padding[1])
    window = _overlay(padded, shifted, orow * s[0], ocol * s[1], ih, iw)
    m = stage.module
    if stage.kind == "conv":
        out = F.conv2d(window, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)
    else:
        out = F.max_pool2d(window, m.kernel_size, m.stride, 0, m.dilation, ceil_mode=False)
    return _Region(out, orow, ocol)


def _linear_delta(stage: _Stage, region: _Region, clean_in: torch.Tensor) -> torch.Tensor:
    """``W (x' - x)`` of a Linear fed by a flattened (C, H, W) map, from the changed rectangle only."""
    c, h, w = clean_in.shape
    ph, pw = region.patch.shape[-2:]
    weight = stage.module.weight.view(-1, c, h, w)
    delta = torch.empty(len(region.rows), weight.shape[0], dtype=region.patch.dtype, device=region.patch.device)
    offsets = torch.stack([region.rows, region.cols], 1)
    for r0, c0 in torch.unique(offsets, dim=0).tolist():  # items that share a rectangle share its weights
        pick = (offsets[:, 0] == r0) & (offsets[:, 1] == c0)
        change = region.patch[pick] - clean_in[:, r0:r0 + ph, c0:c0 + pw]
        delta[pick] = change.flatten(1) @ weight[:, :, r0:r0 + ph, c0:c0 + pw].reshape(weight.shape[0], -1).T
    return delta


def _materialise(region: _Region, clean: torch.Tensor) -> torch.Tensor:
    """The full (P, C, H, W) activations of a region."""
    return _overlay(clean, region, torch.zeros_like(region.rows), torch.zeros_like(region.cols),
                    clean.shape[1], clean.shape[2])


class _Engine:
    """Clean activations of one image and the machinery to run batches of occluded copies of it."""

    def __init__(self, deconv: Deconvnet, image: torch.Tensor, layer_index: int, channel: int | None,
                 cap: float | None) -> None:
        self.deconv = deconv
        self.stages = deconv._stages
        self.layout = deconv._layout(tuple(image.shape))
        self.layer_index = layer_index
        self.cap = cap
        acts = [image[None]]
        with torch.no_grad():
            for stage in self.stages:
                acts.append(deconv._run_stage(stage, acts[-1]))
        self.clean = [a[0] for a in acts]  # clean[i]: input of stage i; clean[i + 1]: its output
        target = self.clean[layer_index + 1]
        spatial = target.flatten(1).amax(1) if target.dim() == 3 else target
        if channel is not None and not 0 <= channel < len(spatial):
            raise ValueError(f"channel {channel} is out of range for {deconv._stages[layer_index].name!r} "
                             f"({len(spatial)} maps)")
        self.channel = int(spatial.argmax()) if channel is None else channel
        self.clean_activity = float(self._total(target[None])[0])
        self.logits = self.clean[-1]
        self.padded: dict[int, torch.Tensor] = {}
        self.dense_from = len(self.stages)
        for i, stage in enumerate(self.stages):
            if stage.kind in _WINDOWED:
                self.padded[i] = _pad_for(stage, self.clean[i], self.layout.outputs[i])
            elif stage.kind not in _POINTWISE:
                self.dense_from = i
                break
        # A Linear right after Flatten (or directly on the maps) is updated incrementally when the
        # changed part of its input is small; it is computed in full otherwise.
        self.incremental_linear: int | None = None
        j = self.dense_from
        if j < len(self.stages) and self.stages[j].kind == "flatten" and j + 1 < len(self.stages):
            j += 1
        if j < len(self.stages) and self.stages[j].kind == "linear" and self.clean[self.dense_from].dim() == 3:
            self.incremental_linear = j

    def _total(self, act: torch.Tensor) -> torch.Tensor:
        """The map's total activation (a unit's value for a 1-D layer), per item."""
        picked = act[:, self.channel]
        return picked.flatten(1).sum(1) if picked.dim() > 1 else picked

    def run(self, rows: torch.Tensor, cols: torch.Tensor, window: int, fill: float
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (P, K) and activity (P,) for occluders with top-left corners ``rows``/``cols``."""
        image = self.clean[0]
        patch = torch.full((len(rows), image.shape[0], window, window), fill, dtype=image.dtype, device=image.device)
        state: _Region | torch.Tensor = _Region(patch, rows, cols)
        activity = None
        i = 0
        while i < len(self.stages):
            stage = self.stages[i]
            if isinstance(state, _Region) and i < self.dense_from:
                if stage.kind in _POINTWISE:
                    state = _Region(stage.module(state.patch), state.rows, state.cols)
                else:
                    state = _windowed(stage, state, self.clean[i], self.padded[i], self.layout.outputs[i], self.cap)
            elif isinstance(state, _Region):
                clean_in = self.clean[i]
                ph, pw = state.patch.shape[-2:]
                small = ph * pw * 2 <= clean_in.shape[1] * clean_in.shape[2]
                j = self.incremental_linear
                if j is not None and small and not i <= self.layer_index < j:
                    state = self.clean[j + 1][None] + _linear_delta(self.stages[j], state, clean_in)
                    i = j + 1
                    if i - 1 == self.layer_index:
                        activity = self._total(state)
                    continue
                state = _materialise(state, clean_in)
                state = self.deconv._run_stage(stage, state)
            else:
                state = self.deconv._run_stage(stage, state)
            if i == self.layer_index:
                activity = self._activity(state, i)
            i += 1
        assert isinstance(state, torch.Tensor) and activity is not None
        return state, activity

    def _activity(self, state: _Region | torch.Tensor, i: int) -> torch.Tensor:
        if isinstance(state, torch.Tensor):
            return self._total(state)
        clean = self.clean[i + 1]
        ph, pw = state.patch.shape[-2:]
        r = state.rows[:, None] + torch.arange(ph, device=clean.device)
        c = state.cols[:, None] + torch.arange(pw, device=clean.device)
        before = clean[self.channel][r[:, :, None], c[:, None, :]].flatten(1).sum(1)  # (P,)
        after = state.patch[:, self.channel].flatten(1).sum(1)
        return self.clean_activity + (after - before)


# -- public API ---------------------------------------------------------------------------------------


def ssim(a: torch.Tensor, b: torch.Tensor, *, data_range: float | None = None, window: int = 7,
         sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al. 2004) of two 2-D maps, averaged over Gaussian windows.

    Args:
        a, b: maps of the same shape (H, W).
        data_range: the value range L in the SSIM constants (default: the range of ``b``, or 1).
        window: side of the Gaussian window, shrunk to the map if the map is smaller.
        sigma: its standard deviation.

    Returns:
        1.0 for identical maps, less the more they differ.

    Example:
        >>> m = torch.rand(25, 25)
        >>> ssim(m, m)
        1.0
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"ssim needs two 2-D maps of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.double(), b.double()
    if data_range is None:
        data_range = float(b.max() - b.min()) or 1.0
    size = max(1, min(window, *a.shape))
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = (g[:, None] * g[None, :] / g.sum() ** 2)[None, None]

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t[None, None], g)[0, 0]

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return round(float(value.mean()), 12)


def occlusion(model: nn.Module | Deconvnet, image: torch.Tensor, target: int, window: int, stride: int,
              fill: float = 0.0, layer: str = "conv5", batch_size: int = 64, *, mode: str = "exact",
              cap: float = 0.5, tol: float = 0.05, check: bool = True, channel: int | None = None,
              progress: object | None = None) -> OcclusionResult:
    """Slide a grey square over ``image`` and record the paper's four occlusion panels (Fig. 7).

    Args:
        model: any feed-forward CNN the deconvnet accepts (see :class:`zfnet.deconvnet.Deconvnet`),
            or a Deconvnet of it; run in eval mode, its training flags restored afterwards.
        image: one image (C, H, W) in the model's input space (mean-subtracted), on its device.
        target: the class whose probability is mapped (panel d), usually the true label.
        window: side of the square occluder in pixels.
        stride: step between occluder positions; the top-left corner visits (i*stride, j*stride)
            for every i, j that keep the square inside the image.
        fill: the occluder's value; 0 is the paper's grey square (the mean pixel after mean subtraction).
        layer: the layer whose strongest feature map gives panels (b) and (c).
        batch_size: occluder positions computed together.
        mode: ``"exact"`` (incremental, equal to brute force up to rounding), ``"approximate"``
            (projective fields capped at ``cap`` of each map), ``"coarse"`` (every other position
            exact, the rest interpolated unless the neighbours disagree by more than ``tol``) or
            ``"brute"`` (one full forward pass per position, the reference).
        cap: approximate mode: the largest share of a map's side that a changed rectangle may span.
        tol: coarse mode: a position between computed ones is computed too when the target
            probabilities of its interpolation corners span more than ``tol``, or their top classes
            differ; otherwise its logits and activity are interpolated bilinearly. 0 computes all.
        check: approximate and coarse modes: also compute the exact map and store the SSIM against it.
        channel: the feature map for panels (b) and (c); default: the strongest on the clean image.
        progress: optional object with ``update(n)`` called after each batch (a progress bar).

    Returns:
        An :class:`OcclusionResult`.

    Raises:
        ValueError: an image that is not (C, H, W), a target out of range, an occluder larger than the
            image, an unknown layer or mode, a cap outside (0, 1], a negative tol.

    Example:
        >>> import torch
        >>> from zfnet.models import build
        >>> net = build("zfnet-tiny", num_classes=5)
        >>> result = occlusion(net, torch.randn(3, 64, 64), target=2, window=16, stride=8)
        >>> result.prob_true.shape, result.projection.shape
        (torch.Size([7, 7]), torch.Size([3, 64, 64]))
    """
    deconv = model if isinstance(model, Deconvnet) else Deconvnet(model)
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be one (C, H, W) tensor, got {shape}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
    if not 0 < cap <= 1:
        raise ValueError(f"cap must be in (0, 1], got {cap}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not tol >= 0:
        raise ValueError(f"tol must be at least 0, got {tol}")
    gh, gw = occlusion_grid(image.shape[1], image.shape[2], int(window), int(stride))
    layer_index = deconv._stage_index(layer)
    with _eval_mode(deconv.model), torch.no_grad():
        engine = _Engine(deconv, image, layer_index, channel, cap if mode == "approximate" else None)
        classes = engine.logits.shape[-1]
        if not 0 <= int(target) < classes:
            raise ValueError(f"target {target} is out of range for a model with {classes} classes")
        ii, jj = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        rows, cols = (ii.flatten() * stride).to(image.device), (jj.flatten() * stride).to(image.device)

        def compute(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """Logits and activity at the grid positions ``index`` (flat), in batches."""
            out_l, out_a = [], []
            for start in range(0, len(index), batch_size):
                chunk = index[start:start + batch_size].to(rows.device)
                r, c = rows[chunk], cols[chunk]
                out, act = _brute(engine, r, c, window, fill) if mode == "brute" else engine.run(r, c, window, fill)
                out_l.append(out)
                out_a.append(act)
                if progress is not None:
                    progress.update(len(r))  # type: ignore[attr-defined]
            return torch.cat(out_l), torch.cat(out_a)

        if mode == "coarse":
            logits, activity, computed = _coarse_to_fine(compute, gh, gw, int(target), tol)
            if progress is not None:
                progress.update(gh * gw - computed)  # type: ignore[attr-defined]  # interpolated
        else:
            logits, activity = compute(torch.arange(gh * gw))
        probs = torch.softmax(logits.float(), dim=1)
        top_prob, top_class = probs.max(1)
        clean_prob = float(torch.softmax(engine.logits.float(), 0)[target])
        projection = deconv.project(image[None], layer, engine.channel, keep="max")[0]
    result = OcclusionResult(
        prob_true=probs[:, target].reshape(gh, gw).cpu(), top_class=top_class.reshape(gh, gw).cpu(),
        top_prob=top_prob.reshape(gh, gw).cpu(), activity=activity.float().reshape(gh, gw).cpu(),
        projection=projection.cpu(), channel=engine.channel, target=int(target), clean_prob=clean_prob,
        clean_activity=engine.clean_activity, layer=layer, window=int(window), stride=int(stride),
        fill=float(fill), mode=mode)
    if mode in ("approximate", "coarse") and check:
        exact = occlusion(deconv, image, target, window, stride, fill, layer, batch_size, mode="exact",
                          channel=engine.channel)
        result = _replace(result, ssim=ssim(result.prob_true, exact.prob_true))
    return result


def _coarse_axis(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every other index of ``0 .. n-1`` and the last: the coarse lines, and for each index its two
    neighbouring coarse lines and its weight on the second (0 on a coarse line)."""
    coarse = sorted(set(range(0, n, 2)) | {n - 1})
    lo = torch.tensor([max(c for c in coarse if c <= i) for i in range(n)])
    hi = torch.tensor([min(c for c in coarse if c >= i) for i in range(n)])
    weight = torch.where(hi > lo, (torch.arange(n) - lo).float() / (hi - lo).clamp(min=1).float(), 0.0)
    return torch.tensor(coarse), lo, hi, weight


def _coarse_to_fine(compute, gh: int, gw: int, target: int, tol: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The coarse mode: exact at every other row and column, interpolated or drilled down in between.

    Returns the logits and activities of every position and how many positions were computed."""
    rows_c, r_lo, r_hi, r_w = _coarse_axis(gh)
    cols_c, c_lo, c_hi, c_w = _coarse_axis(gw)
    done = torch.zeros(gh, gw, dtype=torch.bool)
    done[rows_c[:, None], cols_c[None, :]] = True
    first = done.flatten().nonzero().flatten()
    logits_c, act_c = compute(first)
    dev = logits_c.device
    logits = torch.zeros(gh * gw, logits_c.shape[1], dtype=logits_c.dtype, device=dev)
    activity = torch.zeros(gh * gw, dtype=act_c.dtype, device=dev)
    logits[first.to(dev)], activity[first.to(dev)] = logits_c, act_c
    # The four corners of every position's interpolation cell (flat indices, all computed) and their weights.
    corners = [(r[:, None] * gw + c[None, :]).flatten().to(dev) for r in (r_lo, r_hi) for c in (c_lo, c_hi)]
    wr, wc = r_w[:, None].expand(gh, gw).flatten(), c_w[None, :].expand(gh, gw).flatten()
    weights = [w.to(dev) for w in ((1 - wr) * (1 - wc), (1 - wr) * wc, wr * (1 - wc), wr * wc)]
    probs = torch.softmax(logits.float(), dim=1)
    corner_p = torch.stack([probs[k, target] for k in corners])
    corner_top = torch.stack([probs[k].argmax(1) for k in corners])
    disagree = (corner_p.max(0).values - corner_p.min(0).values > tol) | (corner_top != corner_top[0]).any(0)
    done = done.flatten().to(dev)
    refine = ~done & disagree
    index = refine.nonzero().flatten()
    if len(index):
        logits[index], activity[index] = compute(index.cpu())
    rest = ~(done | refine)
    if rest.any():
        mix = sum(w[:, None] * logits[k].float() for w, k in zip(weights, corners))
        mix_a = sum(w * activity[k].float() for w, k in zip(weights, corners))
        logits[rest] = mix[rest].to(logits.dtype)
        activity[rest] = mix_a[rest].to(activity.dtype)
    return logits, activity, len(first) + len(index)


def _replace(result: OcclusionResult, **changes: object) -> OcclusionResult:
    from dataclasses import replace

    return replace(result, **changes)


def _brute(engine: _Engine, rows: torch.Tensor, cols: torch.Tensor, window: int, fill: float
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """One full forward pass per occluder position (the reference the exact mode must equal)."""
    images = engine.clean[0].expand(len(rows), -1, -1, -1).clone()
    for n, (r, c) in enumerate(zip(rows.tolist(), cols.tolist())):
        images[n, :, r:r + window, c:c + window] = fill
    t = images
    activity = None
    for i, stage in enumerate(engine.stages):
        t = engine.deconv._run_stage(stage, t)
        if i == engine.layer_index:
            activity = engine._total(t)
    assert activity is not None
    return t, activity

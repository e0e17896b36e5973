"""``zfnet occlusion``: the paper's Fig. 7 for images of a model, and the pointing game on ground truth.

:func:`run` runs :func:`zfnet.analysis.occlusion.occlusion` on each image (given files, or a seeded
choice of one image per class of a data folder), draws the paper's panels and writes
``OUT/occlusion.json`` (with ``.md`` and ``.csv`` tables). With a synthetic data folder (or any
folder whose ``annotations.json`` gives object boxes) it also plays the *pointing game*
(:func:`pointing_game`): over the correctly classified images, how often the occluder position that
lowers the true class's probability most has its centre inside the object's box.

The pointing game, a pass over a data set, runs under ``torchrun`` (each process plays its share of the
images, each played alone, so the game is the single-process one; rank 0 alone writes) and resumes: its
running state is saved in the output folder, and the same command run again after an interruption
continues it.

Example:
    >>> from zfnet.experiments import occlusion
    >>> result = occlusion.run(occlusion.Config(run="runs/zfnet", data="data/synth"), "out/occ")  # doctest: +SKIP
    >>> print(result.summary())  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..analysis.occlusion import MODES, OcclusionResult, occlusion
from ..data.annotations import map_box, read_part_annotations
from ..data.folders import open_dataset
from ..data.images import image_problem, image_size
from ..data.loader import ImageStream
from ..data.transforms import center_crop, load_image
from ..distributed import DistContext
from ..errors import ImageError, ZFNetError
from ..progress import progress
from ..results import Figure, Report, Table, write_results
from ..scan import Rows, Scan, model_fingerprint
from ..train.run import LoadedRun
from ..visualize.deconvnet import Deconvnet
from ..visualize.layers import default_layers, traced_deconvnet
from ..visualize.occlusion_figure import draw_occlusion
from ..visualize.receptive_field import crop_windows, receptive_fields
from ..visualize.topk import project_top_activations, top_activations
from .base import MAX_BATCH, MAX_COUNT, MAX_SEED, MAX_SIDE, ModelSource, option, write_config
from .base import Result as _Result

__all__ = ["Config", "Result", "run", "pointing_game", "default_window", "NAME", "HELP", "DESCRIPTION"]

NAME = "occlusion"
HELP = "occlusion sensitivity of a model: the paper's Fig. 7 panels"
DESCRIPTION = ("Slide a grey square over each image and map (b) the total activity of the strongest feature map "
               "of --layer, (c) its projection, (d) the true class's probability and (e) the most probable class. "
               "Exact incremental inference: only the part of each layer the occluder reaches is recomputed. "
               "With --data, one image per class and, with --pointing-game, how often the most sensitive "
               "position falls in the object's box.")


@dataclass(frozen=True, kw_only=True)
class Config(ModelSource):
    """The occlusion experiment's options (``zfnet occlusion --help`` shows the same)."""

    what = "occlusion option"

    image: tuple[str, ...] = option((), flag="--image", nargs="+", metavar="IMG", max_items=10_000,
                                    help="image files (instead of --data)")
    data: str | None = option(None, help="data folder: one seeded image per class of --split (instead of --image)")
    images: int = option(10, low=1, high=10_000, help="with --data: images shown")
    split: str = option("val", help="with --data: split folder")
    target: str | None = option(None, help="class to map, name or index (default: the image's folder's class, "
                                "else the prediction)")
    window: int | None = option(None, low=1, high=MAX_SIDE, help="occluder side in pixels (default: 32 at 224 px "
                                "input, in proportion)")
    stride: int | None = option(None, low=1, high=MAX_SIDE, help="occluder step (default: window / 4)")
    layer: str | None = option(None, help="layer of panels (b) and (c) (default: conv5; for another --model, the "
                               "deepest of its top-level stages that hold convolutions)")
    mode: str = option("exact", choices=MODES,
                       help="exact; approximate (projective fields capped at --cap); coarse (every other "
                       "position, drilling down where neighbours differ by more than --tol), with their SSIM "
                       "against exact; brute (one full forward per position, the reference)")
    cap: float = option(0.5, low=0, high=1, low_open=True, help="approximate mode: largest share of a map "
                        "recomputed")
    tol: float = option(0.05, low=0, high=1, help="coarse mode: probability spread between neighbours above which "
                        "a position is computed")
    pointing_game: int | None = option(None, low=1, high=MAX_COUNT, metavar="N",
                                       help="with --data: play the pointing game on up to N images (needs "
                                       "annotations.json)")
    batch_size: int = option(64, low=1, high=MAX_BATCH, help="occluder positions per batch")
    seed: int = option(0, low=0, high=MAX_SEED, help="seed of the choice of images")
    others: int = option(3, low=0, high=16, help="panel (c) also shows the strongest map's projections on this "
                         "many other images, its top activations among --search-images (0: none)")
    search_images: int = option(200, low=1, high=MAX_COUNT, metavar="N",
                                help="images searched for panel (c)'s other images: with --data a seeded subset "
                                "of N images of --split, with --image the other given images")

    def __post_init__(self) -> None:
        super().__post_init__()
        if bool(self.image) == (self.data is not None):
            raise ZFNetError("give image files (--image) or a data folder (--data), one of them")
        if self.pointing_game is not None and self.data is None:
            raise ZFNetError("--pointing-game needs --data (a folder with annotations.json)")


@dataclass
class Result(_Result):
    """The occlusion experiment's numbers: ``numbers["images"]`` (one record per image) and
    ``numbers["pointing_game"]`` (None without it)."""

    kind = NAME

    def lines(self) -> list[str]:
        out = []
        for r in self.numbers["images"]:
            inside = "" if r["most_sensitive_in_box"] is None else (
                ", in the object's box" if r["most_sensitive_in_box"] else ", outside the object's box")
            truth = _marked(r)
            out.append(f"{r['image']}: p({r['target_name']}{truth}) {r['clean_prob']:.3f} unoccluded, "
                       f"{r['min_prob']:.3f} at its lowest{inside}")
        game = self.numbers["pointing_game"]
        if game and game["images"]:
            out.append(f"pointing game: {game['hits']}/{game['images']} = {100 * game['fraction']:.1f}% of the "
                       f"correctly classified images within {game['tolerance']} px of the object's box, "
                       f"{100 * game['strict_fraction']:.1f}% inside it")
        return out


def default_window(input_size: int) -> tuple[int, int]:
    """The occluder (side, step) for an input size: 32 and 8 pixels at the paper's 224, in proportion.

    Example:
        >>> default_window(224), default_window(112)
        ((32, 8), (16, 4))
    """
    window = max(1, round(input_size * 32 / 224))
    return window, max(1, window // 4)


def _find_annotations(path: Path) -> tuple[Path, str] | None:
    """The ``annotations.json`` of a data folder above ``path`` and ``path`` relative to that folder."""
    for parent in list(path.resolve().parents)[:4]:
        candidate = parent / "annotations.json"
        if candidate.is_file():
            return candidate, path.resolve().relative_to(parent).as_posix()
    return None


class _Boxes:
    """Object boxes from annotation files, mapped into a run's input pixels."""

    def __init__(self, base: int, crop: int) -> None:
        self.base, self.crop = base, crop
        self.files: dict[Path, dict[str, dict[str, Any]]] = {}

    def of(self, path: Path) -> list[int] | None:
        found = _find_annotations(path)
        if found is None:
            return None
        file, rel = found
        if file not in self.files:
            try:
                self.files[file] = read_part_annotations(file)
            except ZFNetError:
                self.files[file] = {}
        entry = self.files[file].get(rel)
        if not entry or entry.get("box") is None:
            return None
        return map_box(entry["box"], image_size(path), self.base, self.crop)


def _input(loaded: LoadedRun, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(model input (3, S, S), displayed crop (3, S, S) uint8) of an image file.

    Raises:
        ImageError: the file cannot be read by zfnet's image rules (see :mod:`zfnet.data.images`).
    """
    img = load_image(path, loaded.base_size)
    device = next(loaded.model.parameters()).device
    x = center_crop(loaded.normalize(img[None]), loaded.input_size)[0].to(device)
    return x, center_crop(img[None], loaded.input_size)[0]


def _target(loaded: LoadedRun, path: Path, target: str | int | None, x: torch.Tensor) -> tuple[int, int | None]:
    """(class to map, true label if the image's folder names a class of the run)."""
    label = loaded.classes.index(path.parent.name) if path.parent.name in loaded.classes else None
    if target is None:
        if label is not None:
            return label, label
        with torch.no_grad():
            return int(loaded.model.eval()(x[None]).argmax()), None
    if isinstance(target, str) and not target.lstrip("-").isdigit():
        names = {n: i for i, n in enumerate(loaded.classes)} | {n: i for i, n in enumerate(loaded.class_names)}
        if target not in names:
            raise ZFNetError(f"unknown class {target!r}; the run's classes: {', '.join(loaded.classes)}")
        return names[target], label
    index = int(target)
    if not 0 <= index < len(loaded.classes):
        raise ZFNetError(f"class index {index} is out of range (the run has {len(loaded.classes)} classes)")
    return index, label


def _grid(t: torch.Tensor, digits: int = 5) -> list[list[float]]:
    return [[round(float(v), digits) for v in row] for row in t]


def _inside(point: tuple[int, int], box: Sequence[int]) -> bool:
    r, c = point
    x0, y0, x1, y1 = box
    return x0 <= c < x1 and y0 <= r < y1


def _record(result: OcclusionResult, shown: str, loaded: LoadedRun, label: int | None,
            box: list[int] | None, figure: str) -> dict[str, Any]:
    point = result.most_sensitive()
    return {
        "image": shown, "label": loaded.class_names[label] if label is not None else None,
        "target": result.target, "target_name": loaded.class_names[result.target], "box": box,
        "channel": result.channel, "layer": result.layer, "clean_prob": round(result.clean_prob, 6),
        "min_prob": round(float(result.prob_true.min()), 6), "most_sensitive": list(point),
        "most_sensitive_in_box": _inside(point, box) if box is not None else None,
        "prob_true": _grid(result.prob_true), "top_class": result.top_class.tolist(),
        "activity": _grid(result.activity, 4), "ssim": result.ssim, "figure": figure,
    }


def pointing_game(loaded: LoadedRun, data: str | Path, *, split: str = "val", window: int | None = None,
                  stride: int | None = None, max_images: int | None = None, mode: str = "exact",
                  tolerance: int | None = None, batch_size: int = 64, ctx: DistContext | None = None,
                  state_dir: str | Path | None = None, show_progress: bool = True) -> dict[str, Any]:
    """The pointing game: does the most sensitive occluder position fall on the object?

    For every image of ``split`` (the first ``max_images``, taken round-robin over the classes)
    that the model classifies correctly on its own, the occluder whose position lowers the true
    class's probability most is found. As in the pointing game of Zhang et al. (2016), a *hit* is
    when that occluder's centre lies inside the object's box (from ``DATA/annotations.json``, mapped
    to the input crop) or within ``tolerance`` pixels of it; default: their 15 pixels at 224 px, in
    proportion to the input size. The strict rate (tolerance 0) is reported too.

    The images are a :class:`~zfnet.scan.Scan`: under ``torchrun`` (``ctx``) each process plays its
    share of them and every process gets the whole game, equal to one process's; with ``state_dir``
    the running state is saved there as it goes and a call interrupted (even by ``kill -9``) continues
    where it was when made again with the same arguments. The state is removed when the game is done.

    Returns:
        ``{"images": correctly classified images scored, "hits", "fraction": hits / images,
        "strict_hits", "strict_fraction", "tolerance", "skipped_wrong": misclassified images,
        "skipped_unreadable": images of the game skipped as unreadable (named in warnings),
        "distances": per scored image, pixels from the point to the box (0 inside), "window", "stride"}``.

    Raises:
        ZFNetError: no ``annotations.json`` with boxes in ``data``.
    """
    game, scan = _pointing_game(loaded, data, split=split, window=window, stride=stride, max_images=max_images,
                                mode=mode, tolerance=tolerance, batch_size=batch_size, ctx=ctx, state_dir=state_dir,
                                show_progress=show_progress)
    scan.clear()
    return game


def _pointing_game(loaded: LoadedRun, data: str | Path, *, split: str, window: int | None, stride: int | None,
                   max_images: int | None, mode: str, tolerance: int | None, batch_size: int,
                   ctx: DistContext | None, state_dir: str | Path | None,
                   show_progress: bool) -> tuple[dict[str, Any], Scan]:
    """:func:`pointing_game` and its scan, whose saved state the caller removes once the game is written."""
    ctx = ctx or DistContext()
    model = loaded.model.eval()
    dwin, dstride = default_window(loaded.input_size)
    window, stride = window or dwin, stride or dstride
    if tolerance is None:
        tolerance = round(15 * loaded.input_size / 224)
    annotations = Path(data) / "annotations.json"
    if not annotations.is_file():
        raise ZFNetError(f"{data} has no annotations.json with object boxes; the pointing game needs them")
    dataset = open_dataset(data, split, loaded.base_size, classes=loaded.classes)
    order = _spread(dataset.targets, max_images)
    boxes = _Boxes(loaded.base_size, loaded.input_size)
    deconv = Deconvnet(model)
    device = next(model.parameters()).device
    # Decoded image by image as the game reads them (a game on a few images of a large split decodes those).
    stream = ImageStream(dataset, workers=0, cache="none", show_progress=False)
    # Per image, in the game's order: 0 no box, 1 misclassified, 2 scored (with its distance to the box),
    # 3 unreadable.
    rows = Rows()
    normalization = loaded.normalization
    fingerprint = [model_fingerprint(model), model_fingerprint(normalization.mean),
                   None if normalization.std is None else model_fingerprint(normalization.std),
                   hashlib.sha256(annotations.read_bytes()).hexdigest(), [str(p) for p, _ in dataset.samples],
                   dataset.targets, loaded.base_size, loaded.input_size, window, stride, mode, batch_size]
    # One image per chunk: each is hundreds of forward passes, so the processes' shares stay even and a
    # save never waits on more than one image.
    scan = Scan(order, 1, ctx=ctx, state_dir=state_dir, name="pointing-game", fingerprint=fingerprint)

    def consume(batch, positions: torch.Tensor) -> None:
        inputs = center_crop(loaded.normalize(batch.images), loaded.input_size)
        for x, index, position in zip(inputs, batch.indices.tolist(), positions):
            path, label = dataset.samples[index]
            status, distance = 0, float("nan")
            try:
                box = boxes.of(path)
            except ImageError as err:  # decoded, but its size cannot be read: skipped as unreadable
                dataset.note_bad([(dataset.display_path(path), err.reason)])
                box, status = None, 3
            if box is not None:
                x = x.to(device)
                with torch.no_grad():
                    right = int(model(x[None]).argmax()) == label
                status = 2 if right else 1
                if right:
                    result = occlusion(deconv, x, label, window, stride, mode=mode, batch_size=batch_size,
                                       check=False)
                    distance = _distance(result.most_sensitive(), box)
            rows.add(position[None], status=torch.tensor([status]),
                     distance=torch.tensor([distance], dtype=torch.float64))

    scan.run(stream, consume, [rows], show_progress=show_progress and ctx.is_main, desc="pointing game")
    played = rows.result()  # every readable image of the game, in its order
    status = played.get("status", torch.zeros(0, dtype=torch.long))
    distances = played["distance"][status == 2].tolist() if played else []
    scored = len(distances)
    hits = sum(d <= tolerance for d in distances)
    strict = sum(d == 0 for d in distances)
    game = {"images": scored, "hits": hits, "fraction": hits / scored if scored else None,
            "strict_hits": strict, "strict_fraction": strict / scored if scored else None, "tolerance": tolerance,
            "skipped_wrong": int((status == 1).sum()), "skipped_unreadable": len(order) - int((status != 3).sum()),
            "distances": [round(d, 2) for d in distances], "window": window,
            "stride": stride, "split": split, "mode": mode}
    return game, scan


def _other_images(loaded: LoadedRun, deconv: Deconvnet, layer: str, results: list[OcclusionResult],
                  paths: list[Path], inputs: list[tuple[torch.Tensor, torch.Tensor]], config: Config,
                  show_progress: bool) -> list[dict[str, Any] | None]:
    """Panel (c)'s other images (the paper's Fig. 7 c): per shown image, the top activations of its strongest
    map among the searched images other than itself, projected and cut to the activation's receptive field.

    Returns per shown image ``{"paths", "values", "projections": (k, 3, h, w)}`` (None: no other image).

    Rank 0 alone runs it, in one process, under ``torchrun`` too: it reads ``--search-images`` images (200
    by default, held in memory at once) for a handful of figures only rank 0 draws, a few seconds of work
    beside the pointing game's pass, which is the one shared.
    """
    if config.data is not None:
        dataset = open_dataset(config.data, config.split, loaded.base_size, classes=loaded.classes)
        g = torch.Generator().manual_seed(config.seed + 1)
        order = torch.randperm(len(dataset), generator=g)[:config.search_images].tolist()
        pool_paths, pool = [], []
        for i in sorted(order):
            path = dataset.samples[i][0]
            try:
                pool.append(_input(loaded, path)[0])
            except ImageError as err:
                dataset.note_bad([(dataset.display_path(path), err.reason)])
                continue
            pool_paths.append(path)
    else:
        pool_paths, pool = list(paths), [x for x, _ in inputs]
    if len(pool) < 2:
        return [None] * len(results)
    images = torch.stack(pool)
    k = config.others + 1  # one more: an image may be its own strongest
    batches = [images[i:i + 64] for i in range(0, len(images), 64)]
    top = top_activations(deconv.model, progress(batches, desc="panel (c) search", unit="batch",
                                                 enabled=show_progress), layer, k=k)[layer]
    field = receptive_fields(deconv, (loaded.input_size, loaded.input_size), in_channels=3)[layer]
    resolved = [p.resolve() for p in pool_paths]
    out: list[dict[str, Any] | None] = []
    for path, result in zip(paths, results):
        c = result.channel
        keep = [j for j in range(k) if int(top.image_index[c, j]) >= 0
                and resolved[int(top.image_index[c, j])] != path.resolve()][:config.others]
        if not keep:
            out.append(None)
            continue
        projected = project_top_activations(deconv, top, images, channels=[c]).projections[0, keep]
        windows = field.windows(top.position[c, keep].clamp(min=0))
        out.append({"paths": [pool_paths[int(top.image_index[c, j])] for j in keep],
                    "values": [float(top.values[c, j]) for j in keep],
                    "projections": crop_windows(projected, windows)})
    return out


def _distance(point: tuple[int, int], box: Sequence[int]) -> float:
    """Euclidean distance in pixels from ``point`` (row, column) to the box's pixels (0 inside)."""
    r, c = point
    x0, y0, x1, y1 = box
    dx = max(x0 - c, 0, c - (x1 - 1))
    dy = max(y0 - r, 0, r - (y1 - 1))
    return float((dx * dx + dy * dy) ** 0.5)


def _spread(labels: Sequence[int], n: int | None) -> list[int]:
    """Up to ``n`` indices, taken round-robin over the classes (all of them when ``n`` is None)."""
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    order: list[int] = []
    queues = [list(v) for _, v in sorted(by_class.items())]
    while queues and (n is None or len(order) < n):
        for q in queues:
            if q and (n is None or len(order) < n):
                order.append(q.pop(0))
        queues = [q for q in queues if q]
    return order


def run(config: Config, out: str | Path, *, loaded: LoadedRun | None = None, show_progress: bool = True) -> Result:
    """Occlusion panels (Fig. 7) for images of a model; writes PNGs, ``OUT/occlusion.json``, ``.md``, ``.csv``
    and ``occlusion.config.json``.

    Args:
        config: the options; ``config.image`` (files, whose folder name gives the true class when it is
            one of the model's) or ``config.data`` (one seeded image per class of ``config.split``, up to
            ``config.images``; its ``annotations.json`` gives the object boxes).
        out: output folder.
        loaded: the model, when the caller has loaded it already (else ``config`` names it).
        show_progress: progress bars.

    Under ``torchrun`` the pointing game, the one pass over a data set, is shared by the processes
    (:func:`pointing_game`); rank 0 alone draws the panels and writes. The game's running state is saved
    in ``out`` as it goes: the same command run again after an interruption continues it. On the other
    processes the result holds the pointing game only (``out`` None).
    """
    ctx = config.context()
    loaded = loaded if loaded is not None else config.load(data=config.data, split=config.split)
    images, data, n_images, split, target = config.image, config.data, config.images, config.split, config.target
    window, stride, layer, mode, cap, tol = (config.window, config.stride, config.layer, config.mode, config.cap,
                                             config.tol)
    pointing, batch_size, seed = config.pointing_game, config.batch_size, config.seed
    model = loaded.model.eval()
    deconv = traced_deconvnet(model, loaded.input_size, name=str(loaded.metadata.get("model", loaded.root)))
    if layer is None:
        layer = "conv5" if "conv5" in deconv.layer_names else default_layers(model, loaded.input_size, deconv)[-1]
    if layer not in deconv.layer_names:
        raise ZFNetError(f"unknown layer {layer!r}; valid names: {', '.join(deconv.layer_names)}")
    dwin, dstride = default_window(loaded.input_size)
    window, stride = window or dwin, stride or dstride
    if window > loaded.input_size:
        raise ZFNetError(f"the occluder ({window} px) is larger than the model's input ({loaded.input_size} px)")
    paths = [Path(p) for p in images]
    for p in paths:  # each given image by the one set of rules, before anything is computed or written
        problem = image_problem(p)
        if problem is not None:
            raise ImageError(p, problem)
    boxes = _Boxes(loaded.base_size, loaded.input_size)
    if paths:
        inputs = [_input(loaded, p) for p in paths]
        for p in paths:
            boxes.of(p)
    else:
        dataset = open_dataset(data, split, loaded.base_size, classes=loaded.classes)
        per_class: dict[int, list[int]] = {}
        for i, y in enumerate(dataset.targets):
            per_class.setdefault(y, []).append(i)
        g = torch.Generator().manual_seed(seed)
        inputs = []
        for _, members in sorted(per_class.items()):
            if len(paths) == n_images:
                break
            # The seeded choice, or the next readable image of the class when it cannot be read.
            first = int(torch.randint(len(members), (1,), generator=g))
            for k in range(len(members)):
                path = dataset.samples[members[(first + k) % len(members)]][0]
                try:
                    pair = _input(loaded, path)
                    boxes.of(path)
                except ImageError as err:
                    dataset.note_bad([(dataset.display_path(path), err.reason)])
                    continue
                inputs.append(pair)
                paths.append(path)
                break
        if not paths:
            raise ZFNetError(f"no readable image in {Path(data) / split}")
    # Every process checks the targets (an unknown class is an error on all of them, before any collective).
    classes = [_target(loaded, path, target, x) for path, (x, _) in zip(paths, inputs)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    game, scan = None, None
    if pointing and data is not None:
        game, scan = _pointing_game(loaded, data, split=split, window=window, stride=stride, max_images=pointing,
                                    mode="exact", tolerance=None, batch_size=batch_size, ctx=ctx, state_dir=out,
                                    show_progress=show_progress)
    if not ctx.is_main:
        ctx.barrier()  # rank 0 has written the game: this process's saved share has served
        if scan is not None:
            scan.clear()
        return Result(None, {"kind": NAME, "images": [], "pointing_game": game})
    results, labels = [], []
    bar = progress(total=len(paths), desc="occlusion", unit="img", enabled=show_progress)
    with bar:
        for (x, _), (cls, label) in zip(inputs, classes):
            results.append(occlusion(deconv, x, cls, window, stride, layer=layer, mode=mode, cap=cap, tol=tol,
                                     batch_size=batch_size))
            labels.append(label)
            bar.update(1)
    others = _other_images(loaded, deconv, layer, results, paths, inputs, config, show_progress) \
        if config.others else [None] * len(paths)
    records = []
    for n, (path, (_, shown), result, label, other) in enumerate(zip(paths, inputs, results, labels, others)):
        box = boxes.of(path)
        figure = f"occlusion-{n:03d}.png"
        name = _display(path, data)
        draw_occlusion(shown, result, out / figure, class_names=loaded.class_names, box=box,
                       title=f"{name}: occluder {window} px, step {stride}",
                       predicted=label is None and target is None,
                       others=other["projections"] if other else None)
        records.append(_record(result, name, loaded, label, box, figure))
        chosen = "target" if target is not None else "label" if label is not None else "prediction"
        records[-1]["class_from"] = chosen
        records[-1]["others"] = [{"image": _display(p, data), "value": round(v, 6)}
                                 for p, v in zip(other["paths"], other["values"])] if other else []
    numbers = {"kind": NAME, "run": str(loaded.root), "model": loaded.metadata.get("model"),
               "window": window, "stride": stride, "layer": layer, "mode": mode, "images": records,
               "pointing_game": game}
    report = _report(numbers)
    files = write_results(out, NAME, numbers, report)
    files["config"] = write_config(out, NAME, config, window=window, stride=stride, layer=layer)
    numbers["report"] = report.to_json()
    ctx.barrier()  # occlusion.json is written: every process's saved share of the game has served
    if scan is not None:
        scan.clear()
    return Result(out, numbers, files)


def _display(path: Path, data: str | Path | None) -> str:
    if data is not None:
        try:
            return path.resolve().relative_to(Path(data).resolve()).as_posix()
        except ValueError:
            pass
    return path.name


def _marked(record: dict[str, Any]) -> str:
    """How a record's mapped class was chosen, when it is not the image's known class."""
    return {"prediction": ", predicted", "target": ", chosen"}.get(record.get("class_from", "label"), "")


def _report(payload: dict[str, Any]) -> Report:
    figures = [Figure(r["figure"], f"{r['image']} ({r['target_name']}{_marked(r)}): "
                      f"probability {r['clean_prob']:.2f} unoccluded, {r['min_prob']:.2f} at the most sensitive "
                      "position", {"image": r["image"], "label": r["label"] or r["target_name"]})
               for r in payload["images"]]
    rows = [[r["image"], r["target_name"] + _marked(r),
             f"{r['clean_prob']:.3f}", f"{r['min_prob']:.3f}",
             "" if r["most_sensitive_in_box"] is None else ("yes" if r["most_sensitive_in_box"] else "no")]
            for r in payload["images"]]
    tables = [Table("Per image: the mapped class's probability unoccluded and at its lowest; whether the most "
                    "sensitive occluder's centre lies in the object's box",
                    ["image", "class", "p unoccluded", "p lowest", "in box"], rows)]
    game = payload.get("pointing_game")
    if game and game.get("images"):
        tables.append(Table("Pointing game on the validation images the model classifies correctly",
                            ["images", "hit rate (within tolerance)", "tolerance", "hit rate (inside box)",
                             "occluder", "step"],
                            [[game["images"], f"{100 * game['fraction']:.1f}%", f"{game['tolerance']} px",
                              f"{100 * game['strict_fraction']:.1f}%", game["window"], game["stride"]]]))
    return Report("Occlusion sensitivity (Fig. 7)",
                  "A grey square slides over each image: panel (d) maps the true class's probability and (e) the "
                  f"most probable class at each position, (b) the total activity of the strongest {payload['layer']} "
                  "map and (c) its projection. If the model recognises the object itself, rather than its "
                  "surroundings, the probability drops when the object is covered. An image whose class is not "
                  "known is mapped for its predicted class, marked so.",
                  tables=tables, figures=figures)

"""The visualize experiment on a tiny trained run: PNGs that load, an index.json that matches top_activations."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers.trees import make_tree
from PIL import Image

from zfnet import Deconvnet, receptive_fields, top_activations
from zfnet.data.folders import open_dataset
from zfnet.data.transforms import center_crop
from zfnet.errors import ZFNetError
from zfnet.experiments import visualize as job
from zfnet.experiments.visualize import Config, compare_architectures, run
from zfnet.train import TrainConfig, load_run, train
from zfnet.visualize.figures import aliasing, dead_filter_fraction


def visualize_run(run_dir, data, *, out, show_progress=False, maps=16, **options):
    """The experiment on a run directory, as ``zfnet visualize`` runs it; returns index.json's content."""
    maps = tuple(maps) if isinstance(maps, list) else maps
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    return run(Config(run=str(run_dir), data=str(data), maps=maps, **options), out, show_progress=False).numbers


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two-epoch zfnet-tiny and alexnet-tiny runs (snapshots 1 and 2) on the ``tiny_tree`` data set."""
    root = tmp_path_factory.mktemp("vis")
    data = make_tree(root / "data", classes=3, per_class=8, val_per_class=4)
    out = {}
    for model in ("zfnet-tiny", "alexnet-tiny"):
        torch.manual_seed(0)
        cfg = TrainConfig(data=str(data), out=str(root / model), model=model, epochs=2, batch_size=8, workers=0,
                          snapshots=(1, 2))
        train(cfg, show_progress=False)
        out[model] = root / model
    return data, out


@pytest.fixture(scope="module")
def visualized(runs, tmp_path_factory):
    data, paths = runs
    out = tmp_path_factory.mktemp("figs")
    index = visualize_run(paths["zfnet-tiny"], data, maps=4, out=out, show_progress=False)
    return data, paths["zfnet-tiny"], out, index


def _png(path) -> Image.Image:
    img = Image.open(path)
    img.load()
    assert img.format == "PNG"
    return img


def test_every_figure_is_written_and_loads(visualized):
    _, _, out, index = visualized
    layers = ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert set(index["figures"]) == ({f"top9-{la}" for la in layers} | {f"evolution-{la}" for la in layers}
                                     | {"filters-conv1"})
    for name in index["figures"].values():
        img = _png(out / name)
        assert img.width >= 300 and img.height >= 200, name
    assert _png(out / "top9-conv3.png").width >= 1000  # four map pairs side by side
    assert index["snapshots"] == [1, 2]


def test_index_json_matches_top_activations(visualized):
    data, run, out, index = visualized
    assert json.loads((out / "index.json").read_text()) == index
    loaded = load_run(run)
    ds = open_dataset(data, "val", loaded.base_size, classes=loaded.classes)
    assert index["images"] == len(ds) == 12
    # An independent pass: every val image in data set order, mean subtracted, centre crop.
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    x = center_crop(x.float() - loaded.mean, loaded.input_size)
    top = top_activations(loaded.model, x.split(5), list(index["layers"]), k=9)
    for layer, maps in index["layers"].items():
        assert len(maps) == 4
        assert index["figures"][f"top9-{layer}"] == maps[next(iter(maps))]["png"]
        for c, entry in maps.items():
            c = int(c)
            values = entry["values"]
            assert len(values) == len(entry["image_ids"]) == len(entry["positions"]) == 9
            assert values == sorted(values, reverse=True)
            assert all(0 <= i < len(ds) for i in entry["image_ids"])
            assert len(set(entry["image_ids"])) == 9  # one entry per image
            # Same model, same inputs, different batching: equal up to float32 rounding.
            torch.testing.assert_close(torch.tensor(values), top[layer].values[c], rtol=1e-4, atol=1e-4)
            assert entry["image_ids"][0] == int(top[layer].image_index[c, 0])
            assert entry["positions"][0] == top[layer].position[c, 0].tolist()


def test_maps_subset_images_and_validation(runs, tmp_path):
    data, paths = runs
    index = visualize_run(paths["zfnet-tiny"], data, layers=["conv2"], maps=[1, 3], k=3, max_images=5,
                          out=tmp_path, show_progress=False, evolution_images=4)
    assert index["images"] == 5
    assert list(index["layers"]["conv2"]) == ["1", "3"]
    ids = {i for e in index["layers"]["conv2"].values() for i in e["image_ids"]}
    assert len(ids) <= 5 and all(0 <= i < 12 for i in ids)
    with pytest.raises(ZFNetError, match=r"unknown layer 'conv9'.*conv1"):
        visualize_run(paths["zfnet-tiny"], data, layers=["conv9"], out=tmp_path, show_progress=False)
    with pytest.raises(ZFNetError, match="out of range"):
        visualize_run(paths["zfnet-tiny"], data, layers=["conv1"], maps=[99], out=tmp_path, show_progress=False)
    with pytest.raises(ZFNetError, match="visualize option k must be a whole number from 1"):
        visualize_run(paths["zfnet-tiny"], data, k=0, out=tmp_path, show_progress=False)


def test_compare_architectures(runs, tmp_path):
    _, paths = runs
    result = compare_architectures(paths["alexnet-tiny"], paths["zfnet-tiny"], tmp_path, maps=8,
                                   show_progress=False)
    assert json.loads((tmp_path / "architectures.json").read_text()) == result
    img = _png(tmp_path / result["png"])
    assert img.width >= 1000 and img.height >= 800
    assert [r["model"] for r in result["runs"]] == ["alexnet-tiny", "zfnet-tiny"]
    for row, name, stride in zip(result["runs"], ("alexnet-tiny", "zfnet-tiny"), (4, 2)):
        w = load_run(paths[name]).model.conv1.conv.weight
        assert row["conv1_stride"] == [stride, stride]  # each model's own conv1 stride
        assert row["dead_fraction"] == dead_filter_fraction(w)
        assert row["aliasing"] == pytest.approx(aliasing(w, stride))
        assert row["aliasing"] != pytest.approx(aliasing(w, 6 - stride))  # the other model's stride differs
        assert 0 < row["aliasing"] <= 1 and len(row["maps"]) == 8
        assert all(0 <= i < 12 for i in row["image_ids"])


def test_compare_architectures_draws_projections_cut_to_the_receptive_field(runs, tmp_path, monkeypatch):
    data, paths = runs
    drawn = []
    monkeypatch.setattr(job, "draw_architecture_comparison", lambda panels, path: drawn.extend(panels) or path)
    result = compare_architectures(paths["alexnet-tiny"], paths["zfnet-tiny"], tmp_path, maps=4,
                                   show_progress=False)
    for panel, row, name in zip(drawn, result["runs"], ("alexnet-tiny", "zfnet-tiny")):
        loaded = load_run(paths[name])
        model = loaded.model
        field = receptive_fields(model, 64)["conv2"].size  # alexnet-tiny's conv2 sees 51 px, zfnet-tiny's 27
        assert panel["projections"].shape == (4, 3, *field)
        assert panel["stride"] == (model.conv1.conv.stride[0],) * 2
        # The whole-image projection of each map's strongest activation, computed again: the cut keeps all
        # of it (the deconvnet signal never leaves the receptive field), so nothing was cut off.
        ds = open_dataset(data, "val", loaded.base_size, classes=loaded.classes)
        x = torch.stack([center_crop(ds[i][0].float() - loaded.mean, loaded.input_size) for i in row["image_ids"]])
        whole = Deconvnet(model).project(x, "conv2", torch.tensor(row["maps"]))
        assert whole.abs().amax() > 0
        torch.testing.assert_close(panel["projections"].abs().sum(dim=(1, 2, 3)), whole.abs().sum(dim=(1, 2, 3)),
                                   rtol=1e-4, atol=1e-6)  # same sums up to float32 rounding


def test_run_without_snapshots_has_no_evolution_figure(runs, tmp_path):
    data, paths = runs
    run = tmp_path / "run"
    shutil.copytree(paths["zfnet-tiny"], run, ignore=shutil.ignore_patterns("snapshots"))
    index = visualize_run(run, data, layers=["conv1"], maps=2, out=tmp_path / "figs", show_progress=False)
    assert index["snapshots"] == [] and set(index["figures"]) == {"top9-conv1", "filters-conv1"}
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["filters-conv1.png", "index.json", "maps",
                                                                     "top9-conv1.png", "visualize.config.json"]
    entry = next(iter(index["layers"]["conv1"].values()))
    assert "evolution_png" not in entry and (tmp_path / "figs" / entry["projections_png"]).is_file()


def test_every_map_has_its_own_tiles(visualized):
    data, run, out, index = visualized
    names = load_run(run).class_names
    for entries in index["layers"].values():
        for entry in entries.values():
            proj, patches = _png(out / entry["projections_png"]), _png(out / entry["patches_png"])
            assert proj.size == patches.size  # two 3x3 grids of the same windows
            assert min(proj.size) >= 96  # enlarged for the report
            assert len(entry["labels"]) == len(entry["image_ids"]) and set(entry["labels"]) <= set(names)
            # The fixture shows 4 maps, fewer than evolution_maps (8): every map has its strip.
            strip = _png(out / entry["evolution_png"])
            assert strip.width > strip.height  # one row: a projection per snapshot (2 here)


def test_the_resolved_config_is_written_beside_the_figures(runs, tmp_path):
    data, paths = runs
    run(Config(run=str(paths["zfnet-tiny"]), data=str(data), layers=("conv2",), maps=2, max_images=4,
               evolution_images=4), tmp_path, show_progress=False)
    saved = json.loads((tmp_path / "visualize.config.json").read_text())
    assert saved["experiment"] == "visualize" and saved["resolved"] == {"layers": ["conv2"]}
    assert Config.from_mapping(saved["config"]) == Config(run=str(paths["zfnet-tiny"]), data=str(data),
                                                          layers=("conv2",), maps=2, max_images=4, evolution_images=4)


def test_cli_flags_come_from_the_config(runs, tmp_path, capsys):
    data, paths = runs
    config = tmp_path / "options.toml"
    config.write_text('layers = ["conv1"]\nmaps = 2\nmax-images = 4\nevolution_images = 4\nk = 2\n')
    from zfnet.cli import main

    assert main(["visualize", str(paths["zfnet-tiny"]), "--data", str(data), "--out", str(tmp_path / "o"),
                 "--config", str(config), "--k", "3"]) == 0
    index = json.loads((tmp_path / "o" / "index.json").read_text())
    assert list(index["layers"]) == ["conv1"] and index["k"] == 3 and index["images"] == 4  # the flag wins
    assert "visualised 2 feature maps of conv1 over 4 images" in capsys.readouterr().out

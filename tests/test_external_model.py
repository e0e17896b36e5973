"""A model zfnet did not train: ``--model FILE.py:FACTORY`` or ``package.module:FACTORY``, ``--weights``,
its input normalisation, and one-line errors for everything a user can get wrong."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers.cli import one_line_error
from safetensors.torch import save_file

from zfnet.cli import main
from zfnet.data.transforms import Normalization, base_size, center_crop, load_image
from zfnet.errors import CheckpointError, ZFNetError
from zfnet.models import build
from zfnet.train.external import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    import_factory,
    load_external,
    load_run_or_model,
    read_state_dict,
)
from zfnet.train.run import LoadedRun

SIZE = 32  # the models' input side: 48 px images resized to base_size(32) = 37, centre-cropped to 32

# A chain CNN (conv, ReLU, max-pool, linear) written as a user would, outside zfnet.
CNN = textwrap.dedent('''
    import torch
    from torch import nn

    NOT_A_FACTORY = 3


    class TinyCNN(nn.Module):
        def __init__(self, num_classes=3):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 5, stride=2, padding=2)   # (B, 8, 16, 16)
            self.relu1 = nn.ReLU()
            self.pool1 = nn.MaxPool2d(2)                           # (B, 8, 8, 8)
            self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
            self.relu2 = nn.ReLU()
            self.pool2 = nn.MaxPool2d(2)                           # (B, 16, 4, 4)
            self.fc = nn.Linear(16 * 4 * 4, num_classes)

        def forward(self, x):
            x = self.pool1(self.relu1(self.conv1(x)))
            x = self.pool2(self.relu2(self.conv2(x)))
            return self.fc(torch.flatten(x, 1))


    def tiny_cnn():
        return TinyCNN()


    def returns_tensor():
        return torch.zeros(3)


    def broken():
        raise RuntimeError("no weights here")
''')

# ResNet's basic block: the residual sum `out += identity` is not a chain of modules.
RESNET = textwrap.dedent('''
    import torch
    from torch import nn


    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += identity
            return self.relu(out)


    class ResNet(nn.Module):
        def __init__(self, num_classes=3):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.relu = nn.ReLU()
            self.maxpool = nn.MaxPool2d(2)
            self.layer1 = BasicBlock(8, 8)
            self.layer2 = BasicBlock(8, 16, stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer2(self.layer1(x))
            return self.fc(torch.flatten(self.avgpool(x), 1))


    def resnet_tiny():
        return ResNet()
''')

# Which branch runs depends on the input's values: no tracer can follow it.
UNTRACEABLE = textwrap.dedent('''
    import torch
    from torch import nn


    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3)
            self.b = nn.Conv2d(3, 4, 5)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            x = self.a(x) if float(x.mean()) > 0 else self.b(x)
            return self.fc(x.mean(dim=(2, 3)))


    def branchy():
        return Branchy()
''')


def _write(folder: Path, name: str, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(source)
    return path


@pytest.fixture
def cnn_file(tmp_path) -> Path:
    return _write(tmp_path / "models", "my_cnn.py", CNN)


def _reference(path: Path, seed: int = 1) -> torch.nn.Module:
    """The file's TinyCNN, imported independently of zfnet, with seeded weights."""
    spec = importlib.util.spec_from_file_location("reference_cnn", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(seed)
    return module.TinyCNN().eval()


# ----------------------------------------------------------------------------------------- loading

def test_python_file_factory_and_weights_round_trip(cnn_file, tmp_path):
    reference = _reference(cnn_file)
    state = reference.state_dict()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = reference(x)
    files = {"st": tmp_path / "w.safetensors", "pt": tmp_path / "w.pt", "ckpt": tmp_path / "ckpt.pth",
             "ddp": tmp_path / "ddp.pt"}
    # Metadata as Hugging Face writes it: not JSON.
    save_file({k: v.contiguous() for k, v in state.items()}, str(files["st"]), metadata={"format": "pt"})
    torch.save(state, files["pt"])
    torch.save({"epoch": 3, "state_dict": state, "lr": 0.1}, files["ckpt"])       # a training checkpoint
    torch.save({f"module.{k}": v for k, v in state.items()}, files["ddp"])         # a DDP model's keys
    for name, path in files.items():
        loaded = load_external(f"{cnn_file}:tiny_cnn", weights=path, input_size=SIZE)
        with torch.no_grad():
            assert torch.equal(loaded.model(x), expected), name
        assert loaded.weights == str(path) and loaded.metadata["model"] == f"{cnn_file}:tiny_cnn"
    assert loaded.classes == ["class_0", "class_1", "class_2"] and loaded.input_size == SIZE
    assert loaded.base_size == base_size(SIZE) and not loaded.is_run
    fresh = loaded.untrained()  # the factory again: the same architecture, its own initialisation
    assert type(fresh).__name__ == "TinyCNN" and not torch.equal(fresh.fc.weight, loaded.model.fc.weight)


def test_package_module_factory(tmp_path, monkeypatch):
    site = tmp_path / "site"
    _write(site / "zoo_pkg", "__init__.py", "")
    _write(site / "zoo_pkg", "vision.py", CNN)
    monkeypatch.syspath_prepend(str(site))
    try:
        loaded = load_external("zoo_pkg.vision:tiny_cnn", input_size=SIZE)
        assert type(loaded.model).__name__ == "TinyCNN" and loaded.weights == "factory"
        assert import_factory("zoo_pkg.vision:TinyCNN")().fc.out_features == 3  # a class is a factory too
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == "zoo_pkg"]:
            del sys.modules[name]


def test_package_module_end_to_end_in_a_subprocess(tmp_path, tiny_tree):
    """The real command, the package found on PYTHONPATH (as an installed zoo would be on sys.path)."""
    site = tmp_path / "site"
    _write(site / "zoo_pkg", "__init__.py", "")
    _write(site / "zoo_pkg", "vision.py", CNN)
    reference = _reference(site / "zoo_pkg" / "vision.py")
    save_file(reference.state_dict(), str(tmp_path / "w.safetensors"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p))
    out = tmp_path / "eval.json"
    done = subprocess.run([sys.executable, "-m", "zfnet", "evaluate", "--model", "zoo_pkg.vision:tiny_cnn",
                           "--weights", str(tmp_path / "w.safetensors"), "--input-size", str(SIZE),
                           "--data", str(tiny_tree), "--workers", "0", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "zoo_pkg.vision:tiny_cnn" in done.stdout
    assert json.loads(out.read_text())["results"][0]["images"] == 12


def test_crafted_pickle_runs_nothing(cnn_file, tmp_path, tiny_tree, capsys):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # unpickling would create the marker file

    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": Exploit()}, evil)
    with pytest.raises(CheckpointError, match="refusing to load"):
        read_state_dict(evil)
    one_line_error(capsys, ["evaluate", "--model", f"{cnn_file}:tiny_cnn", "--weights", str(evil),
                             "--input-size", str(SIZE), "--data", str(tiny_tree)], "refusing to load", str(evil))
    assert not marker.exists()


def test_weights_that_do_not_fit_name_the_first_keys(cnn_file, tmp_path):
    state = _reference(cnn_file).state_dict()
    for k in ("fc.weight", "fc.bias", "conv2.bias", "conv1.bias"):
        del state[k]
    state.update({f"head.{i}": torch.zeros(1) for i in range(5)})
    state["conv1.weight"] = torch.zeros(8, 3, 3, 3)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_external(f"{cnn_file}:tiny_cnn", weights=path, input_size=SIZE)
    message = str(info.value)
    assert "4 missing keys (conv1.bias, conv2.bias, fc.weight, ...)" in message
    assert "5 unexpected keys (head.0, head.1, head.2, ...)" in message
    assert "1 shape mismatch (conv1.weight: file (8, 3, 3, 3), model (8, 3, 5, 5))" in message
    not_weights = tmp_path / "opt.pt"
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, not_weights)
    with pytest.raises(CheckpointError, match="holds no state dict .* its keys: epoch, optimizer"):
        read_state_dict(not_weights)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "nope.safetensors")


def test_factory_errors(cnn_file, tmp_path):
    spec = str(cnn_file)
    with pytest.raises(ZFNetError, match="has no 'nope'; its callables: TinyCNN, broken, returns_tensor, tiny_cnn$"):
        import_factory(f"{spec}:nope")
    with pytest.raises(ZFNetError, match="NOT_A_FACTORY is a int, not a function"):
        import_factory(f"{spec}:NOT_A_FACTORY")
    with pytest.raises(ZFNetError, match=r"returns_tensor\(\) of .* returned a Tensor, not a torch.nn.Module"):
        load_external(f"{spec}:returns_tensor")
    with pytest.raises(ZFNetError, match=r"calling broken\(\) of .* failed: RuntimeError: no weights here"):
        load_external(f"{spec}:broken")
    with pytest.raises(ZFNetError, match="model file .*missing.py does not exist"):
        import_factory(f"{tmp_path / 'missing.py'}:f")
    with pytest.raises(ZFNetError, match="is not a .py file"):
        import_factory(f"{_write(tmp_path, 'model.txt', 'x')}:f")
    with pytest.raises(ZFNetError, match="cannot import module 'no_such_zoo.models': no module named 'no_such_zoo'"):
        import_factory("no_such_zoo.models:resnet50")
    with pytest.raises(ZFNetError, match="takes FILE.py:FACTORY or package.module:FACTORY"):
        import_factory("resnet50")
    bad = _write(tmp_path, "bad.py", "import torch\nraise ImportError('needs timm')\n")
    with pytest.raises(ZFNetError, match="importing .*bad.py failed: ImportError: needs timm"):
        import_factory(f"{bad}:f")
    with pytest.raises(ZFNetError, match="fails on a \\(1, 3, 64, 64\\) input: .* is --input-size right"):
        load_external(f"{spec}:tiny_cnn", input_size=64)


def test_a_file_imports_its_neighbours(tmp_path):
    folder = tmp_path / "project"
    _write(folder, "blocks.py", CNN)
    main_file = _write(folder, "nets.py", "from blocks import TinyCNN\n\ndef net():\n    return TinyCNN()\n")
    assert type(load_external(f"{main_file}:net", input_size=SIZE).model).__name__ == "TinyCNN"
    assert str(folder) not in sys.path
    sys.modules.pop("blocks", None)


# ----------------------------------------------------------------------------------------- preprocessing

def test_a_zfnet_run_keeps_exactly_its_numbers():
    mean = torch.rand(3, 73, 73) * 255
    run = LoadedRun(Path("run"), build("zfnet-tiny", num_classes=3), mean, ["a", "b", "c"], ["a", "b", "c"], {})
    pixels = torch.randint(0, 256, (2, 3, 73, 73), dtype=torch.uint8)
    assert torch.equal(run.normalize(pixels), pixels.float() - mean)  # bit for bit: no division
    assert run.input_size == 64 and run.is_run and run.std is None


def test_per_channel_normalisation_is_torchvisions(cnn_file):
    loaded = load_external(f"{cnn_file}:tiny_cnn", input_size=SIZE)  # ImageNet's by default
    pixels = torch.randint(0, 256, (2, 3, 37, 37), dtype=torch.uint8)
    m, s = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    # (x - 255 m) / (255 s) against torchvision's (x / 255 - m) / s: float32 rounding of values up to ~2.6.
    assert torch.allclose(loaded.normalize(pixels), (pixels / 255 - m) / s, atol=1e-5)
    assert torch.allclose(loaded.normalization.invert(loaded.normalize(pixels)), pixels.float(), atol=1e-4)
    assert loaded.metadata["normalization"] == {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    unit = load_external(f"{cnn_file}:tiny_cnn", input_size=SIZE, mean=(0, 0, 0), std=(1, 1, 1))
    assert torch.allclose(unit.normalize(pixels), pixels / 255, atol=1e-6)
    with pytest.raises(ZFNetError, match="0-1 scale .* got 123.675,116.28,103.53; divide 0-255 values by 255"):
        load_external(f"{cnn_file}:tiny_cnn", mean=(123.675, 116.28, 103.53))
    with pytest.raises(ZFNetError, match="std is on the 0-1 scale and positive, got 0,0.2,0.2"):
        load_external(f"{cnn_file}:tiny_cnn", std=(0, 0.2, 0.2))
    with pytest.raises(ValueError, match="three finite numbers"):
        Normalization.per_channel((0.5, float("nan"), 0.5), (0.2, 0.2, 0.2), size=4)


# ----------------------------------------------------------------------------------------- the commands

def test_evaluate_preprocesses_as_torchvision_does(cnn_file, tmp_path, tiny_tree, capsys):
    reference = _reference(cnn_file)
    save_file(reference.state_dict(), str(tmp_path / "w.safetensors"))
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--model", f"{cnn_file}:tiny_cnn", "--weights", str(tmp_path / "w.safetensors"),
                 "--input-size", str(SIZE), "--mean", "0.5,0.4,0.3", "--std", "0.2,0.25,0.3",
                 "--data", str(tiny_tree), "--workers", "0", "--json", str(out)]) == 0
    assert "my_cnn.py:tiny_cnn" in capsys.readouterr().out
    got = json.loads(out.read_text())["results"][0]
    # Independently: resize to 37, centre-crop 32, (x / 255 - mean) / std, the classes in folder order.
    classes = sorted(p.name for p in (tiny_tree / "train").iterdir())
    m, s = torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1)
    wrong = 0
    for path in sorted((tiny_tree / "val").rglob("*.png")):
        x = (center_crop(load_image(path, base_size(SIZE)), SIZE) / 255 - m) / s
        with torch.no_grad():
            wrong += int(reference(x[None]).argmax()) != classes.index(path.parent.name)
    assert got["images"] == 12 and got["top1_error"] == pytest.approx(wrong / 12)


def test_occlusion_and_visualize_of_a_python_file(cnn_file, tmp_path, tiny_tree, capsys):
    weights = tmp_path / "w.pt"
    torch.save(_reference(cnn_file).state_dict(), weights)
    names = _write(tmp_path, "names.txt", "disc\n\nbar\ncross\n")
    image = sorted((tiny_tree / "val" / "bar").iterdir())[0]
    occ = tmp_path / "occ"
    assert main(["occlusion", "--model", f"{cnn_file}:tiny_cnn", "--weights", str(weights), "--input-size",
                 str(SIZE), "--normalize", "unit", "--classes", str(names), "--image", str(image),
                 "--out", str(occ), "--window", "8", "--stride", "4"]) == 0
    record = json.loads((occ / "occlusion.json").read_text())
    assert record["model"] == f"{cnn_file}:tiny_cnn" and record["layer"] == "conv2"  # its deepest conv stage
    assert record["images"][0]["label"] == "bar" and (occ / "occlusion-000.png").is_file()

    vis = tmp_path / "vis"
    assert main(["visualize", "--model", f"{cnn_file}:tiny_cnn", "--weights", str(weights), "--input-size",
                 str(SIZE), "--data", str(tiny_tree), "--out", str(vis), "--maps", "2", "--k", "2"]) == 0
    index = json.loads((vis / "index.json").read_text())
    assert list(index["layers"]) == ["conv1", "conv2"] and index["weights"] == str(weights)
    assert index["images"] == 12 and index["snapshots"] == []
    assert (vis / "top2-conv2.png").is_file() and (vis / "filters-conv1.png").is_file()
    assert "visualised 4 feature maps of conv1, conv2" in capsys.readouterr().out


def test_probes_and_transfer_on_frozen_layers_by_module_path(cnn_file, tmp_path, tiny_tree, capsys):
    common = ["--model", f"{cnn_file}:tiny_cnn", "--input-size", str(SIZE), "--data", str(tiny_tree),
              "--per-class", "4", "--splits", "1", "--workers", "0", "--quiet"]
    assert main(["experiment", "probes", *common, "--out", str(tmp_path / "pr"), "--layers", "conv1,pool2,fc",
                 "--classifiers", "softmax"]) == 0
    probes = json.loads((tmp_path / "pr" / "probes.json").read_text())
    assert probes["layers"] == ["conv1", "pool2", "fc"] and probes["feature_dims"]["pool2"] == 16 * 4 * 4
    assert main(["experiment", "transfer", *common, "--out", str(tmp_path / "tr"), "--layer", "pool2"]) == 0
    transfer = json.loads((tmp_path / "tr" / "transfer.json").read_text())
    assert transfer["scratch"] is None and transfer["untrained"] is not None  # no zfnet recipe to train it with
    assert "no from-scratch baseline" in capsys.readouterr().err


def test_invariance_of_a_model_from_a_file(cnn_file, tmp_path, tiny_tree):
    out = tmp_path / "inv"
    assert main(["invariance", "--model", f"{cnn_file}:tiny_cnn", "--input-size", str(SIZE), "--data",
                 str(tiny_tree), "--out", str(out), "--layers", "conv1,fc", "--images", "2", "--shifts=0,4",
                 "--scales", "1,1.2", "--angles", "0,90", "--quiet"]) == 0
    record = json.loads((out / "invariance.json").read_text())
    assert record["layers"] == ["conv1", "fc"] and record["weights"] == "factory"
    assert {i["class"] for i in record["images"]} <= {"bar", "cross", "disc"}  # the data set's class folders


# ----------------------------------------------------------------------------------------- CLI errors

def test_run_and_model_are_exclusive(cnn_file, tmp_path, tiny_tree, capsys):
    spec = f"{cnn_file}:tiny_cnn"
    one_line_error(capsys, ["evaluate", str(tmp_path / "run"), "--model", spec, "--data", str(tiny_tree)],
                    "not both")
    one_line_error(capsys, ["occlusion", "--image", "a.png", "--out", str(tmp_path / "o")],
                    "give a run directory, or --model")
    one_line_error(capsys, ["visualize", str(tmp_path / "run"), "--data", str(tiny_tree), "--out",
                             str(tmp_path / "v"), "--normalize", "imagenet", "--input-size", "64"],
                    "--input-size, --normalize describe a --model")
    with pytest.raises(ZFNetError, match="not both"):
        load_run_or_model(tmp_path, model=spec)


def test_flag_errors_are_one_line(cnn_file, tmp_path, tiny_tree, capsys):
    base = ["evaluate", "--model", f"{cnn_file}:tiny_cnn", "--data", str(tiny_tree)]
    one_line_error(capsys, [*base, "--input-size", "8"], "--input-size", "from 16 to 2048")
    one_line_error(capsys, [*base, "--mean", "0.5,0.5"], "--mean", "three")
    one_line_error(capsys, [*base, "--mean", "0.5,0.5,0.5"], "--mean and --std go together")
    one_line_error(capsys, [*base, "--normalize", "imagenet", "--mean", "0.5,0.5,0.5", "--std", "0.2,0.2,0.2"],
                    "not both")
    one_line_error(capsys, [*base, "--normalize", "caffe"], "invalid choice")
    one_line_error(capsys, [*base, "--input-size", str(SIZE), "--model", f"{cnn_file}:nope"],
                    "has no 'nope'", "tiny_cnn")
    one_line_error(capsys, [*base, "--input-size", str(SIZE), "--classes", str(_write(tmp_path, "c.txt", "a\nb\n"))],
                    "names 2 classes but", "has 3 outputs")
    two = tmp_path / "two"
    for split in ("train", "val"):
        for c in ("x", "y"):
            (two / split / c).mkdir(parents=True)
    one_line_error(capsys, ["evaluate", "--model", f"{cnn_file}:tiny_cnn", "--input-size", str(SIZE),
                             "--data", str(two)], "2 class folders but", "--classes FILE")


def test_a_model_that_cannot_be_traced_is_one_line(tmp_path, tiny_tree, capsys):
    path = _write(tmp_path, "branchy.py", UNTRACEABLE)
    one_line_error(capsys, ["visualize", "--model", f"{path}:branchy", "--input-size", str(SIZE), "--data",
                             str(tiny_tree), "--out", str(tmp_path / "v")], "cannot trace", "branchy")
    image = sorted((tiny_tree / "val" / "bar").iterdir())[0]
    one_line_error(capsys, ["occlusion", "--model", f"{path}:branchy", "--input-size", str(SIZE), "--image",
                             str(image), "--out", str(tmp_path / "o")], "cannot trace")


def test_occlusion_of_a_resnet_style_model(tmp_path, tiny_tree):
    path = _write(tmp_path, "my_resnet.py", RESNET)
    image = sorted((tiny_tree / "val" / "disc").iterdir())[0]
    out = tmp_path / "occ"
    assert main(["occlusion", "--model", f"{path}:resnet_tiny", "--input-size", str(SIZE), "--normalize",
                 "imagenet", "--image", str(image), "--out", str(out), "--window", "8", "--stride", "4"]) == 0
    record = json.loads((out / "occlusion.json").read_text())
    assert record["layer"] == "layer2"  # the deepest of conv1, layer1, layer2
    assert len(record["images"][0]["prob_true"]) == (SIZE - 8) // 4 + 1


def test_a_resnet_style_model_through_visualize_correspondence_invariance_and_the_report(tmp_path):
    from zfnet.data.synthetic import write_synthetic

    tiny_tree = tmp_path / "data"  # synthetic, faces among its classes: the part boxes correspondence needs
    write_synthetic(tiny_tree, classes=4, per_class=2, val_per_class=4, size=SIZE, progress=False)
    path = _write(tmp_path, "my_resnet.py", RESNET.replace("num_classes=3", "num_classes=4"))
    model = ["--model", f"{path}:resnet_tiny", "--input-size", str(SIZE)]
    vis = tmp_path / "vis"
    # a block, and the second call of a ReLU module that each block runs twice
    assert main(["visualize", *model, "--data", str(tiny_tree), "--out", str(vis), "--maps", "2", "--k", "2",
                 "--layers", "layer1,layer2.relu#2"]) == 0
    index = json.loads((vis / "index.json").read_text())
    assert list(index["layers"]) == ["layer1", "layer2.relu#2"]
    tiles = [entry["projections_png"] for entry in index["layers"]["layer2.relu#2"].values()]
    assert tiles and all("#" not in t and (vis / t).is_file() for t in tiles)  # plain file names, plain URLs
    corr = tmp_path / "corr"
    assert main(["correspondence", *model, "--data", str(tiny_tree), "--out", str(corr), "--layers",
                 "layer1,layer2"]) == 0
    inv = tmp_path / "inv"
    assert main(["invariance", *model, "--data", str(tiny_tree), "--out", str(inv), "--layers", "layer1,fc"]) == 0
    site = tmp_path / "site"
    assert main(["report", str(vis), str(corr), str(inv), "--out", str(site)]) == 0
    pages = sorted(p.name for p in site.glob("layer-*.html"))
    assert len(pages) == 2, pages
    html = (site / pages[1]).read_text()
    for ref in set(__import__("re").findall(r'(?:src|href)="([^"#:]+\.png)"', html)):
        assert (site / ref).is_file(), ref

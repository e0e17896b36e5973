"""The public API: the curated names import from ``zfnet``, lazily, each from one home."""

from __future__ import annotations

import subprocess
import sys

import pytest

import zfnet

PUBLIC = ["build", "Deconvnet", "top_activations", "receptive_field", "occlusion", "correspondence", "invariance",
          "load_run", "train", "build_report"]


@pytest.mark.parametrize("name", PUBLIC)
def test_the_issue_names_import_from_zfnet(name):
    assert name in zfnet.__all__
    assert callable(getattr(zfnet, name))


def test_import_zfnet_loads_neither_torch_nor_matplotlib():
    code = "import sys, zfnet; print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_train_is_the_training_loop_even_after_its_package_is_imported(tmp_path):
    import zfnet.train.loop  # binds zfnet.train to the package: it must still run the loop

    assert zfnet.train is sys.modules["zfnet.train"]
    calls = []
    original = zfnet.train.loop.train
    try:
        zfnet.train.loop.train = lambda config, **kw: calls.append((config, kw))
        sys.modules["zfnet.train"].train = zfnet.train.loop.train
        zfnet.train("config", resume=True)
    finally:
        zfnet.train.loop.train = original
        sys.modules["zfnet.train"].train = original
    assert calls == [("config", {"resume": True, "show_progress": True})]


def test_importing_matplotlib_users_does_not_switch_the_backend():
    code = ("import matplotlib; matplotlib.use('svg'); import zfnet.visualize.occlusion_figure, zfnet.results, "
            "zfnet.experiments.occlusion; print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "svg"


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        zfnet.nope  # noqa: B018

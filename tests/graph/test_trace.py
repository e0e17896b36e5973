"""The traced graph: layer names, order, errors, and nothing left on the model."""

from __future__ import annotations

import pytest
import torch
from helpers.zoo import FAMILIES, DataDependentBranch, ReorderedChain
from torch import nn

from zfnet import Deconvnet, receptive_fields, top_activations
from zfnet.analysis.occlusion import occlusion
from zfnet.graph import TraceError, trace
from zfnet.models import build


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               and not getattr(m, "_backward_pre_hooks", None) for m in model.modules())


def test_zfnet_layer_names_are_the_papers_in_execution_order():
    names = trace(build("zfnet-tiny")).layer_names
    assert [n for n in names if "." not in n and n.startswith(("conv", "fc"))] == [
        "conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    assert names.index("conv1.conv") < names.index("conv1") < names.index("pool1")


def test_resnet_names_blocks_and_numbers_a_reused_module():
    graph = trace(FAMILIES["resnet"]())
    names = graph.layer_names
    for name in ("layer4", "layer3.1", "layer1.0.relu#1", "layer1.0.relu#2", "fc"):
        assert name in names
    assert names.index("layer1.0.relu#1") < names.index("layer1.0.relu#2") < names.index("layer1.0")
    with pytest.raises(ValueError, match=r"'layer1.0.relu' runs 2 times; name one call: layer1.0.relu#1, "
                                         r"layer1.0.relu#2"):
        graph.index_of("layer1.0.relu")
    with pytest.raises(ValueError, match=r"unknown layer 'layer9'; valid names: .*layer4"):
        graph.index_of("layer9")


def test_registration_order_is_not_execution_order():
    names = trace(ReorderedChain()).layer_names
    pools = [n for n in names if "pool" in n]
    relus = [n for n in names if "relu" in n]
    assert names.index(pools[0]) < names.index(relus[0])  # forward runs the pool first


def test_data_dependent_control_flow_says_so_and_how_to_mark_a_leaf():
    with pytest.raises(TraceError, match=r"cannot trace DataDependentBranch.*control flow.*leaves=\["):
        Deconvnet(DataDependentBranch())


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) if x.sum() > 0 else self.avg(x)


class _HoldsBranchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.down = _Branchy()
        self.head = nn.Conv2d(4, 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.down(self.relu(self.conv(x))))


def test_a_leaf_module_runs_for_top_k_and_is_refused_by_the_deconvnet():
    model = _HoldsBranchy().eval()
    with pytest.raises(TraceError, match="leaves="):
        Deconvnet(model)
    deconv = Deconvnet(model, leaves=["down"])
    assert deconv.layer_names == ["conv", "relu", "down", "head"]
    x = torch.randn(2, 3, 16, 16)
    top = top_activations(deconv.graph, [x], ["head"], k=2)["head"]
    assert top.values.shape == (5, 2)
    assert deconv.project(x, "relu", 1).abs().sum() > 0  # below the leaf: fine
    with pytest.raises(TypeError, match=r"no rule for graph node 'down' \(down \(_Branchy\)\)"):
        deconv.project(x, "head", 0)
    with pytest.raises(ValueError, match=r"leaves \['nope'\] are not submodules"):
        Deconvnet(model, leaves=["nope"])


def test_nothing_is_left_on_the_model_after_calls_and_errors():
    model = FAMILIES["resnet"]().train()
    model.layer2.eval()  # a mixed state must come back as it was
    x = torch.randn(2, 3, 64, 64)
    deconv = Deconvnet(model)
    deconv.project(x, "layer3", 1)
    occlusion(model, x[0], target=1, window=16, stride=16, layer="layer3")
    top_activations(model, [x], ["layer2", "layer1.0.relu#2"], k=1)
    receptive_fields(model, 64)
    with pytest.raises(ValueError):
        deconv.project(x, "layer3", 999)
    with pytest.raises(ValueError):
        deconv.project(torch.randn(2, 5, 64, 64), "layer3", 0)
    assert _no_hooks(model)
    assert model.training and model.layer1.training and not model.layer2.training


def test_a_global_pool_feeding_a_gate_is_recomputed_in_full_and_said():
    model = FAMILIES["efficientnet"]().eval()
    result = occlusion(model, torch.randn(3, 64, 64), target=0, window=16, stride=16, layer="features.3")
    assert "AdaptiveAvgPool2d" in result.stats["full_from"] and "mixes the whole map" in result.stats["full_from"]
    plain = occlusion(FAMILIES["resnet"]().eval(), torch.randn(3, 64, 64), target=0, window=16, stride=16,
                      layer="layer3")
    assert plain.stats["incremental_ops"] >= 10 and plain.stats["full_from"] is None
    assert "layer" in plain.stats["whole_map_from"]  # the changed rectangle grows to the whole map

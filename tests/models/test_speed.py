"""prepare_for_speed: same modules, same names, same function, faster layout."""

import copy
import os

import pytest
import torch
import torch.nn.functional as F

from zfnet.models import build
from zfnet.models.speed import prepare_for_speed, retain_freed_host_memory

# Channels-last and NCHW convolutions sum in different orders; through zfnet-tiny's eight layers
# float32 rounding stays below ~1e-6 of each tensor's scale, so 1e-4 of it is a wide margin that
# still catches any real difference (a wrong layout or window shows up at 1e-2 and above).
REL = 1e-4


def _close(got: torch.Tensor, ref: torch.Tensor) -> bool:
    return float((got - ref).abs().max()) <= REL * float(ref.abs().max())


def _batch(n: int = 4):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 64, 64, generator=g) * 50, torch.randint(0, 1000, (n,), generator=g)


def _logits_and_grads(model, x, y):
    model.zero_grad(set_to_none=True)
    logits = model(x)
    F.cross_entropy(logits, y).backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.fixture
def pair():
    reference = build("zfnet-tiny")
    return reference, copy.deepcopy(reference)


def test_same_object_modules_and_state_dict_keys(pair):
    reference, model = pair
    prepared = prepare_for_speed(model, train=True, retain_memory=False)
    assert prepared is model
    assert [n for n, _ in model.named_modules()] == [n for n, _ in reference.named_modules()]
    assert list(model.state_dict()) == list(reference.state_dict())
    assert [type(m) for m in model.modules()] == [type(m) for m in reference.modules()]


def test_cpu_default_is_channels_last_and_train_flag_sets_mode(pair):
    _, model = pair
    prepare_for_speed(model, train=False, retain_memory=False)
    assert not model.training and not any(m.training for m in model.modules())
    assert model.conv1.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.fc6.linear.weight.is_contiguous()
    prepare_for_speed(model, train=True, retain_memory=False)
    assert model.training


def test_channels_last_off_keeps_layout(pair):
    _, model = pair
    prepare_for_speed(model, train=True, channels_last=False, retain_memory=False)
    assert all(p.is_contiguous() for p in model.parameters())


@pytest.mark.parametrize("channels_last_input", [False, True])
def test_outputs_and_gradients_match_unprepared(pair, channels_last_input):
    reference, model = pair
    prepare_for_speed(model, train=False, retain_memory=False)  # eval: no dropout on either side
    reference.eval()
    x, y = _batch()
    xf = x.contiguous(memory_format=torch.channels_last) if channels_last_input else x
    ref_logits, ref_grads = _logits_and_grads(reference, x, y)
    logits, grads = _logits_and_grads(model, xf, y)
    assert _close(logits, ref_logits)
    for name, g in ref_grads.items():
        assert _close(grads[name], g), name


def test_hooks_see_every_stage(pair):
    _, model = pair
    prepare_for_speed(model, train=False, retain_memory=False)
    seen = []
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: seen.append(n))
               for n, m in model.named_modules() if n]
    try:
        with torch.inference_mode():
            model(_batch(2)[0])
    finally:
        for h in handles:
            h.remove()
    assert set(seen) == {n for n, _ in model.named_modules() if n}


def test_training_step_matches_unprepared(pair):
    # One SGD step in eval mode (deterministic) leaves the same weights.
    reference, model = pair
    prepare_for_speed(model, train=False, retain_memory=False)
    reference.eval()
    x, y = _batch()
    for net in (reference, model):
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        F.cross_entropy(net(x), y).backward()
        opt.step()
    for (name, p), q in zip(reference.named_parameters(), model.parameters()):
        assert _close(q.detach(), p.detach()), name


def test_rejects_non_modules():
    with pytest.raises(TypeError, match="nn.Module"):
        prepare_for_speed(torch.zeros(3), train=True)


def test_retain_freed_host_memory_is_idempotent():
    first = retain_freed_host_memory()
    assert isinstance(first, bool)
    assert retain_freed_host_memory() is first
    x = torch.randn(1 << 22)  # 16 MiB: allocations still work afterwards
    assert torch.isfinite(x.sum())


@pytest.mark.skipif(os.environ.get("ZFNET_TEST_COMPILE") != "1",
                    reason="torch.compile takes tens of seconds; set ZFNET_TEST_COMPILE=1")
def test_compiled_matches_and_keeps_state_dict_keys(pair):
    reference, model = pair
    prepare_for_speed(model, train=False, compile=True, retain_memory=False)
    assert list(model.state_dict()) == list(reference.state_dict())
    reference.eval()
    x, y = _batch()
    ref_logits, ref_grads = _logits_and_grads(reference, x, y)
    logits, grads = _logits_and_grads(model, x.contiguous(memory_format=torch.channels_last), y)
    assert _close(logits, ref_logits)
    for name, g in ref_grads.items():
        assert _close(grads[name], g), name
    prepare_for_speed(model, train=False, compile=True, retain_memory=False)  # idempotent
    with torch.inference_mode():
        assert _close(model(x), ref_logits)
        seen = []
        handle = model.conv3.register_forward_hook(lambda m, i, o: seen.append(o.shape))
        try:
            model(x)  # a hook added after compilation still runs (recompiles)
        finally:
            handle.remove()
        model(x)
    assert len(seen) == 1
    clone = copy.deepcopy(model)  # the compiled forward is rebound to the copy
    with torch.no_grad():
        clone.fc8.bias.add_(1.0)
        assert _close(clone(x), ref_logits + 1.0) and _close(model(x), ref_logits)

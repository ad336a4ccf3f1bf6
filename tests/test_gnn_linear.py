"""gnn.layers.linear: the linear layer every model uses, large float32 CPU products by oneDNN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gnn.layers import linear as lin
from gnn.layers.linear import Linear

needs_onednn = pytest.mark.skipif(lin._ROUTINE is None, reason="this torch build has no oneDNN linear routine")


def _both(x_shape, out_features, bias=True, seed=0):
    """A Linear and an nn.Linear with the same parameters, and an input."""
    torch.manual_seed(seed)
    ours = Linear(x_shape[-1], out_features, bias=bias)
    ref = nn.Linear(x_shape[-1], out_features, bias=bias)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(*x_shape)
    return ours, ref, x


def _forward_backward(layer, x, g):
    x = x.clone().requires_grad_(True)
    y = layer(x)
    y.backward(g)
    grads = [x.grad] + [p.grad for p in layer.parameters()]
    return y.detach(), grads


@needs_onednn
@pytest.mark.parametrize("x_shape,out_features,bias", [
    ((8192, 64), 64, True),        # an encoder's projection over a whole graph: y, dx by oneDNN, dW by torch
    ((900, 300), 40, False),       # y, dx, dW by oneDNN
    ((100, 500), 300, True),       # y, dW by oneDNN, dx by torch (< 256 rows)
    ((3, 2800, 64), 32, True),     # leading dimensions (LayerAttention's (L, N, d))
])
def test_linear_equals_torch_linear_forward_and_gradients(monkeypatch, x_shape, out_features, bias):
    monkeypatch.setenv(lin.ENV_SWITCH, "1")   # the oneDNN path on any processor
    ours, ref, x = _both(x_shape, out_features, bias)
    assert lin.uses_onednn(x, ours.weight), "the shape must take the oneDNN path for this test to mean anything"
    g = torch.randn(*x_shape[:-1], out_features)
    y, grads = _forward_backward(ours, x, g)
    y_ref, grads_ref = _forward_backward(ref, x, g)
    assert y.shape == y_ref.shape
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


@needs_onednn
@pytest.mark.parametrize("x_shape,out_features,products", [((8192, 64), 64, 2), ((256, 1000), 256, 3)])
def test_linear_takes_the_onednn_routine_and_the_switch_turns_it_off(monkeypatch, x_shape, out_features, products):
    monkeypatch.setenv(lin.ENV_SWITCH, "1")
    ours, ref, x = _both(x_shape, out_features)
    calls = []
    routine = lin._ROUTINE
    monkeypatch.setattr(lin, "_ROUTINE", lambda *a: calls.append(a) or routine(*a))
    xg = x.clone().requires_grad_(True)
    ours(xg).sum().backward()
    assert len(calls) == products, "y and dx go through oneDNN; dW too when W is at least as large as the rows"
    calls.clear()
    monkeypatch.setenv(lin.ENV_SWITCH, "0")
    y = ours(x)
    assert not calls
    assert torch.equal(y, ref(x)), "switched off, the layer is torch's own linear, bit for bit"


@needs_onednn
@pytest.mark.parametrize("capability,vendor,scope", [
    ("AVX512", "AuthenticAMD", "all"),     # Zen 4 / Zen 5: MKL runs its AVX2 code there
    ("AVX2", "AuthenticAMD", "tall"),      # Zen 3 and older: oneDNN only over a whole graph's rows
    ("AVX512", "GenuineIntel", "none"),    # MKL gives Intel its AVX-512 code
    ("DEFAULT", "", "none"),
])
def test_onednn_scope_follows_the_processor_and_the_switch(monkeypatch, capability, vendor, scope):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(lin, "_cpu_vendor", lambda: vendor)
    assert lin.onednn_scope() == scope
    monkeypatch.setattr(lin, "_SCOPE", lin.onednn_scope())
    graph, batch = (torch.randn(20000, 64), torch.randn(64, 64)), (torch.randn(256, 1000), torch.randn(300, 1000))
    monkeypatch.delenv(lin.ENV_SWITCH, raising=False)
    assert lin.uses_onednn(*graph) is (scope != "none"), "a whole graph's projection: oneDNN on AMD processors"
    assert lin.uses_onednn(*batch) is (scope == "all"), "a head's layer over a batch: oneDNN only in scope all"
    assert lin.onednn_products(20000, 64, 64) == {"all": (True, True, False), "tall": (True, True, False),
                                                  "none": (False, False, False)}[scope]
    assert lin.onednn_products(8000, 64, 64) == {"all": (True, True, False), "tall": (False, False, False),
                                                 "none": (False, False, False)}[scope]
    monkeypatch.setenv(lin.ENV_SWITCH, "1")
    assert lin.uses_onednn(*batch) and lin.onednn_products(256, 1000, 300) == (True, True, True), "=1: scope all"
    monkeypatch.setenv(lin.ENV_SWITCH, "0")
    assert not lin.uses_onednn(*graph) and lin.onednn_products(20000, 64, 64) == (False, False, False)


def test_small_float64_and_autocast_products_stay_with_torch(monkeypatch):
    monkeypatch.setenv(lin.ENV_SWITCH, "1")
    w32 = torch.randn(64, 64)
    assert not lin.uses_onednn(torch.randn(16, 64), w32), "small products: torch (MKL) is faster"
    assert not lin.uses_onednn(torch.randn(4096, 64, dtype=torch.float64), w32.double()), "float64: torch"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not lin.uses_onednn(torch.randn(4096, 64), w32), "autocast decides the dtype itself"
    ours, ref, x = _both((8, 5), 3)
    assert torch.equal(ours(x), ref(x))


def test_frozen_weight_and_input_without_gradient(monkeypatch):
    monkeypatch.setenv(lin.ENV_SWITCH, "1")
    ours, ref, x = _both((8192, 64), 64)
    ours.weight.requires_grad_(False)
    ref.weight.requires_grad_(False)
    g = torch.randn(8192, 64)
    y, grads = _forward_backward(ours, x, g)
    y_ref, grads_ref = _forward_backward(ref, x, g)
    assert ours.weight.grad is None
    torch.testing.assert_close(grads[0], grads_ref[0], rtol=1e-5, atol=1e-5)
    ours.weight.requires_grad_(True)
    ours(x).sum().backward()   # x needs no gradient
    torch.testing.assert_close(ours.weight.grad, torch.ones(8192, 64).t().mm(x), rtol=1e-5, atol=1e-3)


def test_linear_is_an_nn_linear_with_the_same_state_dict():
    layer = Linear(7, 3)
    assert isinstance(layer, nn.Linear)
    assert set(layer.state_dict()) == {"weight", "bias"}
    nn.Linear(7, 3).load_state_dict(layer.state_dict())

"""The image models (``lenet``, ``resnet18``): shapes, normalisation without
client state, parameter counts, seeded initialisation, the ``models`` listing,
which unlearning methods can use them, and the image-signal scenario
(``configs/image_signal.toml``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedforget.cli import main
from fedforget.config import ConfigError, load_scenario
from fedforget.models import build_model, has_hidden_relu_neurons, parameter_count
from fedforget.protocol.local import LocalFederation
from fedforget.training import train_local
from fedforget.unlearning import ClientData, get_method
from fedforget.unlearning.fnn import hidden_relu_layers
from fedforget.unlearning.forsaken import neuron_layers
from tests.conftest import tiny

#: ResNet-18 with a CIFAR stem on 3x32x32, 10 classes (GroupNorm has BatchNorm's affine parameters).
RESNET18_CIFAR10 = 11_173_962


@pytest.mark.parametrize(
    "name, shape",
    [("lenet", (1, 28, 28)), ("lenet", (3, 32, 32)), ("lenet", (1, 8, 8)), ("lenet", (1, 4, 4)),
     ("resnet18", (1, 28, 28)), ("resnet18", (3, 32, 32)), ("resnet18", (1, 8, 8))],
)
def test_output_shapes(name, shape):
    m = build_model(name, shape, 7, [16], seed=0)
    assert m(torch.zeros(2, *shape)).shape == (2, 7)


def test_lenet_names_its_minimum_size_and_needs_images():
    with pytest.raises(ValueError, match="lenet needs images of at least 4x4 pixels, got 3x3"):
        build_model("lenet", (1, 3, 3), 10, [], seed=0)
    with pytest.raises(ValueError, match="lenet needs image input"):
        build_model("lenet", (30,), 10, [], seed=0)


def test_lenet_is_lenet5_shaped():
    m = build_model("lenet", (1, 32, 32), 10, [999], seed=0)  # hidden is ignored
    convs = [x for x in m if isinstance(x, nn.Conv2d)]
    linears = [x for x in m if isinstance(x, nn.Linear)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(6, (5, 5)), (16, (5, 5))]
    assert [lin.out_features for lin in linears] == [120, 84, 10]
    assert parameter_count("lenet", (1, 28, 28), 10, []) == 107_786


def test_resnet18_keeps_no_client_statistics():
    m = build_model("resnet18", (3, 32, 32), 10, [], seed=0)
    assert not any(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in m.modules())
    assert any(isinstance(x, nn.GroupNorm) for x in m.modules())
    assert not [n for n, _ in m.named_buffers() if "running" in n]
    assert list(m.state_dict()) == [n for n, _ in m.named_parameters()]  # the state is the weights


def test_resnet18_parameter_count_and_stems():
    assert parameter_count("resnet18", (3, 32, 32), 10, [128]) == RESNET18_CIFAR10
    built = build_model("resnet18", (3, 32, 32), 10, [], seed=0)
    assert sum(p.numel() for p in built.parameters()) == RESNET18_CIFAR10
    # CIFAR stem up to 64 px (3x3 conv, no max-pool); ImageNet's above (7x7 conv + max-pool)
    small, large = (build_model("resnet18", (3, s, s), 10, [], seed=0) for s in (64, 96))
    assert small[0].kernel_size == (3, 3) and not any(isinstance(x, nn.MaxPool2d) for x in small)
    assert large[0].kernel_size == (7, 7) and isinstance(large[3], nn.MaxPool2d)
    assert parameter_count("resnet18", (1, 28, 28), 10, []) == RESNET18_CIFAR10 - 2 * 9 * 64


@pytest.mark.parametrize("name, shape", [("lenet", (1, 28, 28)), ("resnet18", (3, 32, 32))])
def test_seeded_init_is_deterministic(name, shape):
    a, b, c = (build_model(name, shape, 10, [], seed=s) for s in (1, 1, 2))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["0.weight"], sc["0.weight"])


def test_models_listing_prints_parameter_counts(capsys):
    assert main(["models", "--input-shape", "3,32,32", "--classes", "10"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Models (model.name; widths in model.hidden):")
    assert "resnet18: ResNet-18" in out and "parameters: 11,173,962 (input 3,32,32, 10 classes" in out
    assert "lenet: LeNet-5 style" in out and "from: fedforget.models" in out
    assert main(["models", "--input-shape", "30"]) == 0
    out = capsys.readouterr().out
    assert "does not fit this shape: cnn needs image input (C, H, W), got shape (30,)" in out
    assert "parameters: 5,258 (input 30, 10 classes" in out  # mlp 30-128-10
    assert main(["models", "--input-shape", "3,x"]) == 2


# ----------------------------------------------------------- which methods can use them


def test_structure_the_methods_see():
    lenet = build_model("lenet", (1, 8, 8), 4, [], seed=0)
    resnet = build_model("resnet18", (1, 8, 8), 4, [], seed=0)
    assert hidden_relu_layers(lenet) == ["0", "3", "7", "9"] == neuron_layers(lenet)
    assert hidden_relu_layers(resnet) == [] and neuron_layers(resnet) == ["9"]  # the classifier
    assert has_hidden_relu_neurons("lenet", []) and has_hidden_relu_neurons("resnet18", [128]) is False
    assert has_hidden_relu_neurons("someone:else", [8]) is None


def test_fnn_refuses_resnet18_when_the_scenario_loads():
    events = [{"round": 2, "client": 1}]
    with pytest.raises(ConfigError, match="fnn prunes hidden ReLU neurons.*'resnet18'"):
        tiny(model={"name": "resnet18"}, events=events, unlearning={"methods": ["fnn"]})
    tiny(model={"name": "lenet", "hidden": []}, events=events, unlearning={"methods": ["fnn"]})
    tiny(model={"name": "resnet18"}, events=events, unlearning={"methods": ["forsaken", "pga", "perturb"]})


def _image_clients(seed: int = 0):
    """Four clients of 8x8 one-channel blobs; client 0 withdraws."""
    g = torch.Generator().manual_seed(seed)
    centres = 1.5 * torch.randn(4, 1, 8, 8, generator=g)
    clients = {}
    for c in range(4):
        y = torch.randint(0, 4, (80,), generator=g)
        x = centres[y] + torch.randn(80, 1, 8, 8, generator=g)
        clients[c] = ClientData(c, x[:50], y[:50], x[50:], y[50:], 4)
    return clients, (centres[y[:30]] + torch.randn(30, 1, 8, 8, generator=g), y[:30])


METHODS = [
    ("forsaken", {"generator": "identity", "steps": 2, "target_se": 0.0, "max_accuracy_drop": 1.0}),
    ("fnn", {"iterations": 1}),
    ("pga", {"epochs": 1}),
]


@pytest.mark.parametrize("method, params", METHODS)
def test_unlearning_cores_run_on_lenet(method, params):
    clients, server = _image_clients()
    model = build_model("lenet", (1, 8, 8), 4, [], seed=0)
    train_local(model, torch.cat([c.x_train for c in clients.values()]),
                torch.cat([c.y_train for c in clients.values()]), epochs=5, batch_size=20, lr=0.1, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fed = LocalFederation(lambda: build_model("lenet", (1, 8, 8), 4, [], seed=0), clients, [0], 4,
                          server_validation=server)
    out, _ = get_method(method, params).unlearn(model, fed)
    after = out.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_forsaken_moves_only_resnet18s_classifier():
    clients, server = _image_clients()
    model = build_model("resnet18", (1, 8, 8), 4, [], seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fed = LocalFederation(lambda: build_model("resnet18", (1, 8, 8), 4, [], seed=0), clients, [0], 4,
                          server_validation=server)
    params = {"generator": "identity", "steps": 1, "target_se": 0.0, "max_accuracy_drop": 1.0}
    out, _ = get_method("forsaken", params).unlearn(model, fed)
    moved = {k for k, v in out.state_dict().items() if not torch.equal(before[k], v)}
    assert moved <= {"9.weight", "9.bias"}
    assert np.all([torch.isfinite(v).all() for v in out.state_dict().values()])


# ------------------------------------------------------------ the image-signal scenario

IMAGE_SIGNAL = Path(__file__).resolve().parent.parent / "configs" / "image_signal.toml"


def test_image_signal_is_a_real_scenario_with_its_figures_in_the_docs():
    sc = load_scenario(IMAGE_SIGNAL)
    reference = load_scenario(IMAGE_SIGNAL.parent / "withdrawal.toml")
    assert sc.unlearning.methods == reference.unlearning.methods
    assert sc.data.dataset == "mnist5k" and sc.oracle.attack == "lira"
    page = (IMAGE_SIGNAL.parent.parent / "docs" / "explanation" / "image-signal.md").read_text()
    assert "fedforget run configs/image_signal.toml --engine inline" in page and "2026-12-03" in page


@pytest.mark.slow
def test_image_signal_original_is_seen_and_retrain_is_not(tmp_path):
    """image_signal.toml cut at its event (original and retrain only, about 30 s):
    the loss attack sees client 2 in original's calibration model, not in retrain's."""
    import fedforget

    overrides = ["unlearning.methods=[]", "oracle.controls=0", 'oracle.attack="loss"', "train.rounds=16"]
    with pytest.warns(UserWarning, match="unlearning.methods is empty"):
        sc = load_scenario(IMAGE_SIGNAL, overrides)
    m = fedforget.run(sc, engine="inline", out=tmp_path / "run").metrics
    auc = m[(m.metric.str.startswith("mia_auc")) & (m.client == 2)].set_index(["arm", "round", "metric"]).value
    assert auc["original", 15, "mia_auc"] >= 0.6
    assert auc["retrain", 15.5, "mia_auc_lo"] <= 0.5 <= auc["retrain", 15.5, "mia_auc_hi"]
    acc = m[(m.metric == "test_accuracy") & (m.arm == "original") & (m["round"] == 15)].value
    assert acc.iloc[0] >= 0.85

"""Gradient reversal, the schedules, the AlexNet branches and their initialisation."""
import math
import urllib.error

import pytest
import torch
from torchvision.models import AlexNet_Weights, alexnet

from dann.errors import UserError
from dann.model import DANNAlexNet, build_model, grad_reverse
from dann.schedules import alpha_at, lr_factor


def test_gradient_reversal_is_identity_forward_and_minus_alpha_backward():
    x = torch.randn(5, 3, requires_grad=True)
    upstream = torch.randn(5, 3)
    y = grad_reverse(x, 0.3)
    assert torch.equal(y, x)
    y.backward(upstream)
    assert torch.allclose(x.grad, -0.3 * upstream)


def test_alpha_schedules():
    assert alpha_at(0.7, 0.25, "constant") == 0.25
    assert alpha_at(0.0, 1.0, "dann") == 0.0
    assert alpha_at(0.5, 2.0, "dann") == pytest.approx(2.0 * (2 / (1 + math.exp(-5)) - 1))
    assert alpha_at(1.0, 1.0, "dann") == pytest.approx(0.99991, abs=1e-5)


def test_lr_schedules():
    assert [lr_factor(0, e, "step", 20, 0.1) for e in (0, 19, 20, 39, 40)] == \
        pytest.approx([1, 1, 0.1, 0.1, 0.01])
    assert lr_factor(0.0, 0, "dann", 20, 0.1) == 1.0
    assert lr_factor(1.0, 29, "dann", 20, 0.1) == pytest.approx(11 ** -0.75)


def test_shapes_and_routing():
    model = DANNAlexNet(num_classes=7)
    x = torch.randn(2, 3, 224, 224)
    assert model.embed(x).shape == (2, 9216)
    assert model(x).shape == (2, 7)
    assert model(x, alpha=0.5).shape == (2, 2)
    assert DANNAlexNet(discriminator=False).discriminator is None


def test_pretrained_file_fills_both_branches(tmp_path):
    torch.manual_seed(0)
    reference = alexnet(weights=None).state_dict()  # same format as the ImageNet file
    path = tmp_path / "alexnet.pth"
    torch.save(reference, path)
    model = build_model(str(path))
    state = model.state_dict()
    for key in ("features.0.weight", "features.10.bias", "classifier.1.weight", "classifier.4.bias"):
        assert torch.equal(state[key], reference[key])
    for i in (1, 4):  # fc6, fc7 of G_d start equal to G_y's
        for p in ("weight", "bias"):
            assert torch.equal(state[f"discriminator.{i}.{p}"], reference[f"classifier.{i}.{p}"])
    assert state["classifier.6.weight"].shape == (7, 4096)
    assert state["discriminator.6.weight"].shape == (2, 4096)


def test_bad_pretrained_values(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        build_model(str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a loadable state dict"):
        build_model(str(junk))
    torch.save({"fc.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="no AlexNet"):
        build_model(str(tmp_path / "other.pth"))


def test_failed_imagenet_download_names_the_alternatives(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(AlexNet_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(UserError, match=r"--pretrained PATH.*--pretrained none"):
        build_model("imagenet")

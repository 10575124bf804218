"""The first homework's model: gradient reversal, the schedules, the DANN AlexNet's branches
and their initialisation from a weights file, and every way that file can be wrong."""
import math
from pathlib import Path

import pytest
import torch
from torchvision.models import alexnet

from dann.config import make_config
from dann.discriminators import grad_reverse
from dann.errors import UserError
from dann.methods import build
from dann.schedules import alpha_at, lr_factor


def dann_model(pretrained="none", **flags):
    """The first homework's model: an AlexNet, G_d a copy of its classifier (--recipe homework)."""
    return build(make_config(method="dann", backbone="alexnet", pretrained=pretrained, recipe="homework", **flags),
                 num_classes=7)


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
    model = dann_model()
    x = torch.randn(2, 3, 224, 224)
    assert model.embed(x).shape == (2, 9216)
    assert model(x).shape == (2, 7) and torch.equal(model.eval()(x), model.predict(x))
    discriminator = model.adversary.discriminator
    assert discriminator(model.embed(x)).shape == (2, 2)
    assert [m.out_features for m in discriminator if isinstance(m, torch.nn.Linear)] == [4096, 4096, 2]
    paper = dann_model(discriminator="paper").adversary.discriminator
    assert [m.out_features for m in paper if isinstance(m, torch.nn.Linear)] == [1024, 1024, 2]
    baseline = build(make_config(method="baseline", backbone="alexnet", pretrained="none"), num_classes=7)
    assert not hasattr(baseline, "adversary") and not baseline.needs_target


def test_pretrained_file_fills_both_branches(tmp_path):
    torch.manual_seed(0)
    reference = alexnet(weights=None).state_dict()  # same format as the ImageNet file
    path = tmp_path / "alexnet.pth"
    torch.save(reference, path)
    state = dann_model(str(path)).state_dict()
    for key in ("features.0.weight", "features.10.bias", "classifier.1.weight", "classifier.4.bias"):
        own = key.replace("features.", "features.features.") if key.startswith("features.") else key
        assert torch.equal(state[own], reference[key])
    for i in (1, 4):  # fc6, fc7 of G_d start equal to G_y's
        for p in ("weight", "bias"):
            assert torch.equal(state[f"adversary.discriminator.{i}.{p}"], reference[f"classifier.{i}.{p}"])
    assert state["classifier.6.weight"].shape == (7, 4096)
    assert state["adversary.discriminator.6.weight"].shape == (2, 4096)


def test_a_wrong_shape_tensor_is_named_and_the_rest_loads(tmp_path, capsys):
    torch.manual_seed(0)
    reference = alexnet(weights=None).state_dict()
    reference["features.3.weight"] = torch.zeros(10, 64, 5, 5)  # not conv2's (192, 64, 5, 5)
    torch.save(reference, tmp_path / "odd.pth")
    state = dann_model(str(tmp_path / "odd.pth")).state_dict()
    assert torch.equal(state["features.features.0.weight"], reference["features.0.weight"])
    warning = capsys.readouterr().err.strip()
    assert warning.count("\n") == 0 and "features.3.weight (10, 64, 5, 5) vs (192, 64, 5, 5)" in warning


class Exploit:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/dann-test-pwned"),))


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    (b"not a checkpoint", "not a loadable state dict"),
    ({"fc.weight": torch.zeros(2)}, "holds no `features.*` tensors"),
    ({"weights": Exploit()}, "refused, the file holds Python objects besides tensors"),
])
def test_bad_pretrained_files_are_one_line(tmp_path, content, message):
    path = tmp_path / "weights.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(UserError, match=message) as error:
        dann_model(str(path))
    assert "\n" not in str(error.value)
    assert not Path("/tmp/dann-test-pwned").exists()


def test_unreachable_weight_server_names_the_alternatives(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # nothing cached
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # a closed port: refused at once
    with pytest.raises(UserError, match=r"cannot download the ImageNet AlexNet weights .*--pretrained PATH.*--pretrained none"):
        dann_model("imagenet")

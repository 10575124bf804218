"""--backbone timm:<name> on timm's tiny test models (offline, CPU): shapes, the input from
timm's data config, weights from a file, from the Hub's cache, or refused offline in one line;
and which torchvision weights the ResNets ask for."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import huggingface_hub.constants  # timm's dependency
import timm
import timm.data
from safetensors.torch import save_file
from torchvision.models import ResNet18_Weights, ResNet50_Weights

import dann.backbones.resnet
import dann.downloads
from conftest import ROOT
from dann import backbones
from dann.cli import main
from dann.config import make_config
from dann.data import ImageTransform, crop_size
from dann.errors import UserError
from dann.run import check_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")
# timm's test models (a few hundred thousand weights). test_mambaout has a layer after its
# pooling: its features are head_hidden_size (256) wide, not num_features (64).
DIMS = {"test_vit": 64, "test_efficientnet": 256, "test_mambaout": 256}


@pytest.fixture(autouse=True)
def main_process(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)  # warnings print on rank 0 only


@pytest.fixture
def empty_hub_cache(monkeypatch, tmp_path):
    """Nothing in the Hugging Face cache, whatever this machine holds."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    return tmp_path / "hub"


def one_line_error(call, *args) -> str:
    with pytest.raises(UserError) as e:
        call(*args)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("name", DIMS)
def test_features_and_logits_at_the_declared_size(name):
    torch.manual_seed(0)
    b = backbones.build(f"timm:{name}", 7, "none")
    assert b.dim == DIMS[name] and b.body is b.features
    size = b.input.size
    with torch.no_grad():
        f = b.features.eval()(torch.randn(2, 3, size, size))
        assert f.shape == (2, b.dim)
        assert b.classifier(f).shape == (2, 7)
        assert b.make_discriminator(b.dim)(f).shape == (2, 2)
    with_bottleneck = backbones.build(f"timm:{name}", 7, "none", bottleneck_dim=16)
    assert with_bottleneck.classifier(with_bottleneck.features.eval()(torch.randn(2, 3, size, size))).shape == (2, 7)


@pytest.mark.parametrize("name", DIMS)
def test_input_spec_is_timms_data_config(name):
    b = backbones.build(f"timm:{name}", 7, "none")
    config = timm.data.resolve_model_data_config(timm.create_model(name, num_classes=0))
    assert (3, b.input.size, b.input.size) == config["input_size"]
    assert b.input.mean == tuple(config["mean"]) and b.input.std == tuple(config["std"])
    # A ViT's patch embedding takes only its own size; the convolutional ones take digits.
    assert b.input.min_size == (b.input.size if name == "test_vit" else 32)


def test_images_are_normalized_with_the_models_own_mean_and_std():
    spec = backbones.build("timm:test_vit", 7, "none").input
    assert spec.mean == (0.5, 0.5, 0.5) != backbones.IMAGENET_MEAN
    images = torch.randint(0, 256, (2, 3, 170, 170), dtype=torch.uint8)
    x = ImageTransform(torch.device("cpu"), spec, crop_size(spec, 170, "timm:test_vit", "pacs"))(images)
    torch.testing.assert_close(x, images[:, :, 5:165, 5:165].float() / 127.5 - 1)


def test_a_convolutional_model_trains_at_32x32():
    b = backbones.build("timm:test_efficientnet", 7, "none")
    f = b.features.train()(torch.randn(2, 3, 32, 32))
    assert b.classifier(f).shape == (2, 7)


def test_a_vit_refuses_inputs_smaller_than_its_size_in_one_line():
    spec = backbones.build("timm:test_vit", 7, "none").input
    message = one_line_error(crop_size, spec, 32, "timm:test_vit", "digits_shipped")
    assert "--backbone timm:test_vit needs images of at least 160x160" in message


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_state_dict_from_one_model_loads_into_another(suffix, tmp_path, capsys):
    trained = timm.create_model("test_vit")  # with timm's 1000-way head: not loaded, not worth a warning
    path = tmp_path / f"weights{suffix}"
    (save_file if suffix == ".safetensors" else torch.save)(trained.state_dict(), path)
    torch.manual_seed(1)
    b = backbones.build("timm:test_vit", 7, str(path))
    for k, v in b.features.state_dict().items():
        assert torch.equal(v, trained.state_dict()[k]), k
    assert "not loaded" not in capsys.readouterr().err


def test_a_state_dict_of_another_model_is_refused_in_one_line(tmp_path):
    path = tmp_path / "efficientnet.pt"
    torch.save(timm.create_model("test_efficientnet").state_dict(), path)
    assert "holds no `patch_embed.proj.*` tensors" in one_line_error(backbones.build, "timm:test_vit", 7, str(path))
    assert "no such file" in one_line_error(backbones.build, "timm:test_vit", 7, str(tmp_path / "missing.pt"))


def test_imagenet_offline_is_one_line_fast(empty_hub_cache, monkeypatch):
    calls = []

    def offline(what, url, fix, timeout=3.0):
        calls.append(url)
        raise UserError(f"cannot download {what} from host: no connection; {fix}")

    monkeypatch.setattr(dann.downloads, "require_online", offline)
    message = one_line_error(backbones.build, "timm:test_vit", 7, "imagenet")
    assert calls == ["https://huggingface.co/timm/test_vit.r160_in1k"]
    assert message.startswith("cannot download timm's pretrained test_vit weights")
    assert "--pretrained PATH" in message and "--pretrained none" in message
    assert "model.safetensors of huggingface.co/timm/test_vit.r160_in1k" in message


def test_an_unreachable_hub_names_the_alternatives(empty_hub_cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # a closed port: refused at once
    message = one_line_error(backbones.build, "timm:test_efficientnet", 7, "imagenet")
    assert message.startswith("cannot download timm's pretrained test_efficientnet weights from huggingface.co")
    assert "--pretrained PATH" in message and "--pretrained none" in message


def test_cached_hub_weights_load_without_asking_the_network(empty_hub_cache, monkeypatch):
    snapshot = empty_hub_cache / "models--timm--test_vit.r160_in1k" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    cached = timm.create_model("test_vit")
    save_file(cached.state_dict(), snapshot / "model.safetensors")

    def never(*args, **kwargs):
        raise AssertionError("asked the network for cached weights")

    monkeypatch.setattr(dann.downloads, "require_online", never)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # the Hub client: cache only
    b = backbones.build("timm:test_vit", 7, "imagenet")
    assert torch.equal(b.features.state_dict()["patch_embed.proj.weight"], cached.state_dict()["patch_embed.proj.weight"])


def test_a_model_without_pretrained_weights_says_so():
    assert "timm has no pretrained weights for beit3_giant_patch14_224; pass --pretrained none" in one_line_error(
        backbones.build, "timm:beit3_giant_patch14_224", 7, "imagenet")


def test_unknown_names_and_tags_are_one_line_with_the_close_ones():
    message = one_line_error(backbones.build, "timm:test_vitt", 7, "none")
    assert "timm has no model test_vitt; close matches: test_vit" in message
    message = one_line_error(backbones.build, "timm:test_vit.in22k", 7, "none")
    assert "timm has no weights tagged in22k for test_vit; its tags: r160_in1k" in message
    assert "weights names are torchvision's" in one_line_error(backbones.build, "timm:test_vit", 7, "IMAGENET1K_V2")


def test_without_timm_installed_one_line_says_how(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` fails as if not installed
    assert "--backbone timm:test_vit needs the timm library: pip install timm" in one_line_error(
        backbones.build, "timm:test_vit", 7, "none")


def test_training_end_to_end_writes_results(tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--cpu", "--dataset", "digits_shipped", "--backbone", "timm:test_efficientnet", "--pretrained", "none",
             "--max_steps", "3", "--batch_size", "4", "--cache_dir", str(tmp_path / "cache"), "--output_dir", str(out)]
    assert main("dann", flags) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["backbone"] == "timm:test_efficientnet" and results["steps"] == 3


def test_flags_and_help_import_no_timm():
    probe = ("import sys; from dann.config import parse_config, get_args_parser; "
             "c = parse_config('dann', ['--backbone', 'timm:test_vit', '--bottleneck_dim', '8']); "
             "get_args_parser('dann', backbone='timm:test_vit').format_help(); "
             "print(c.backbone, c.backbone_hp.bottleneck_dim, 'timm' in sys.modules, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.split() == ["timm:test_vit", "8", "False", "False"], result.stderr


def test_timm_without_a_model_name_is_refused_at_parsing(capsys):
    with pytest.raises(SystemExit) as e:
        main("dann", ["--backbone", "timm:"])
    assert e.value.code == 2
    assert "invalid choice: 'timm:'" in capsys.readouterr().err


# ---- torchvision's ResNets: the weights DA papers use ----

@pytest.mark.parametrize("backbone, pretrained, weights", [
    ("resnet50", "imagenet", ResNet50_Weights.IMAGENET1K_V1),
    ("resnet50", "IMAGENET1K_V2", ResNet50_Weights.IMAGENET1K_V2),
    ("resnet18", "imagenet", ResNet18_Weights.IMAGENET1K_V1),
])
def test_resnets_ask_torchvision_for_the_weights_named(backbone, pretrained, weights, monkeypatch):
    asked = []

    def download(w, what):
        asked.append(w)
        raise UserError("stop before building")

    monkeypatch.setattr(backbones.resnet, "download_weights", download)
    one_line_error(backbones.build, backbone, 7, pretrained)
    assert asked == [weights]


def test_an_unknown_weights_name_lists_the_ones_there_are():
    message = one_line_error(backbones.build, "resnet50", 7, "IMAGENET1K_V9")
    assert "torchvision has no such ResNet-50 weights; give one of IMAGENET1K_V1, IMAGENET1K_V2" in message


def test_a_weights_name_is_not_taken_for_a_missing_file():
    check_pretrained(make_config(backbone="resnet50", pretrained="IMAGENET1K_V2"))
    with pytest.raises(UserError, match="no such file"):
        check_pretrained(make_config(backbone="resnet50", pretrained="weights/missing.pt"))

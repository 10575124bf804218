"""Backbones: shapes, input specs and minimum sizes, and every way of loading weights (a
bvlc_alexnet.npy, a torchvision state dict, an unreachable download), all offline on a CPU."""
import io
import pickle
import struct
import time

import numpy as np
import pytest
import torch
from torchvision.models import alexnet, resnet18

import dann.downloads
from dann import backbones
from dann.backbones import InputSpec
from dann.backbones.alexnet_caffe import NPY_URL, download_npy, read_npy
from dann.errors import UserError

INPUT_SPECS = {
    "alexnet": InputSpec(size=224, min_size=63),
    "alexnet_caffe": InputSpec(size=227, min_size=39, normalization="caffe",
                               mean=(104.00698793, 116.66876762, 122.67891434), std=(1.0, 1.0, 1.0)),
    "resnet18": InputSpec(size=224, min_size=32),
    "resnet50": InputSpec(size=224, min_size=32),
    "lenet": InputSpec(size=32, min_size=32, normalization="domain"),
}
DIMS = {"alexnet": 9216, "alexnet_caffe": 9216, "resnet18": 512, "resnet50": 2048, "lenet": 1200}


@pytest.fixture(autouse=True)
def main_process(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)  # warnings print on rank 0 only


@pytest.fixture(scope="module")
def built():
    """Each backbone built once with pretrained 'none' (seconds for the big ones), shared by the
    tests of shapes and sizes, for which the weights' values do not matter."""
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = backbones.build(name, 7, "none")
        return cache[name]
    return get


def one_line_error(call, *args) -> str:
    with pytest.raises(UserError) as e:
        call(*args)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("name", DIMS)
def test_shapes_at_the_declared_size(name, built):
    b = built(name)
    assert b.input == INPUT_SPECS[name] and b.dim == DIMS[name]
    size = b.input.size
    with torch.no_grad():
        f = b.features.eval()(torch.randn(2, 3, size, size))  # the one big forward
        assert f.shape == (2, b.dim)
        assert b.classifier.eval()(f).shape == (2, 7)
        assert b.make_discriminator(b.dim).eval()(f).shape == (2, 2)
        assert b.make_discriminator(1024).eval()(torch.randn(2, 1024)).shape == (2, 2)


@pytest.mark.parametrize("name", DIMS)
def test_runs_at_its_min_size_in_training_mode(name, built):  # ResNets: 32x32 digits
    b = built(name)
    side = b.input.min_size
    f = b.features.train()(torch.randn(2, 3, side, side))
    assert b.classifier.train()(f).shape == (2, 7)


def test_alexnet_caffe_min_size_is_the_smallest_that_runs(built):
    features = built("alexnet_caffe").features
    features(torch.randn(1, 3, 39, 39))
    with pytest.raises(RuntimeError):  # pool5 would have no output
        features(torch.randn(1, 3, 38, 38))


# ---- alexnet_caffe: bvlc_alexnet.npy in the caffe-tensorflow layout ----

def to_npy_layout(name: str, w: torch.Tensor) -> np.ndarray:
    """The inverse of the loader's transform, written independently: PyTorch -> caffe-tensorflow."""
    if w.ndim == 4:  # (out, in, kh, kw) -> (kh, kw, in, out)
        return w.permute(2, 3, 1, 0).contiguous().numpy()
    w = w.T.contiguous()  # (in, out)
    if name == "fc6":  # inputs in (c, h, w) order -> (h, w, c)
        w = w.view(256, 6, 6, 4096).permute(1, 2, 0, 3).reshape(9216, 4096)
    return w.numpy()


def layer(b, name):
    return getattr(b.features if name.startswith("conv") else b.classifier, name)


# (layer, index in the file's W, index of the same weight in PyTorch's, value)
KNOWN = [
    ("conv1", (1, 2, 0, 5), (5, 0, 1, 2), 11.0),  # kh 1, kw 2, input channel 0 (blue), output 5
    ("conv2", (0, 4, 47, 200), (200, 47, 0, 4), 12.0),  # group 2's output 200 sees its own input 47
    ("fc6", ((1 * 6 + 2) * 256 + 3, 4), (4, 3 * 36 + 1 * 6 + 2), 13.0),  # pool5 at c 3, h 1, w 2 -> unit 4
    ("fc7", (10, 20), (20, 10), 14.0),
]


@pytest.fixture(scope="module")
def caffe_npy(tmp_path_factory, built):
    """A reference alexnet_caffe, and a bvlc_alexnet.npy of its weights with a few known values."""
    reference = built("alexnet_caffe")
    layers = {name: [to_npy_layout(name, layer(reference, name).weight.detach()),
                     layer(reference, name).bias.detach().numpy().copy()]
              for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")}
    layers["fc8"] = [np.ones((4096, 1000), np.float32), np.zeros(1000, np.float32)]  # ImageNet's, dropped
    with torch.no_grad():
        for name, in_file, in_torch, value in KNOWN:
            layers[name][0][in_file] = value
            layer(reference, name).weight[in_torch] = value
    path = tmp_path_factory.mktemp("npy") / "bvlc_alexnet.npy"
    np.save(path, layers, allow_pickle=True)
    return reference, layers, path


def test_npy_weights_land_where_caffe_had_them(caffe_npy):
    reference, layers, path = caffe_npy
    b = backbones.build("alexnet_caffe", 7, str(path))
    for name, _, in_torch, value in KNOWN:
        assert layer(b, name).weight[in_torch] == value
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"):
        assert torch.equal(layer(b, name).weight, layer(reference, name).weight), name
        assert torch.equal(layer(b, name).bias, layer(reference, name).bias), name
    assert b.classifier.fc8.weight.shape == (7, 4096)

    x = torch.randn(1, 3, 227, 227)
    with torch.no_grad():
        f = b.features(x)
        assert torch.equal(f, reference.features(x))
        assert torch.equal(b.classifier[:-1].eval()(f), reference.classifier[:-1].eval()(f))
        # fc6 as TensorFlow computed it: pool5 flattened in (h, w, c) order times the file's W
        pool5_hwc = f.view(1, 256, 6, 6).permute(0, 2, 3, 1).reshape(1, 9216)
        tf_fc6 = pool5_hwc @ torch.from_numpy(layers["fc6"][0]) + torch.from_numpy(layers["fc6"][1])
        assert torch.allclose(b.classifier.fc6(f), tf_fc6, atol=1e-4)
    # copy discriminator: G_y's fc6/fc7 with 2 outputs; a new fc6 for other input sizes
    d = b.make_discriminator(9216)
    assert torch.equal(d.fc6.weight, b.classifier.fc6.weight)
    assert torch.equal(d.fc7.weight, b.classifier.fc7.weight)
    assert d.fc8.out_features == 2 and d.fc7.weight is not b.classifier.fc7.weight
    assert b.make_discriminator(1024).fc6.in_features == 1024


def test_npy_in_the_later_weights_biases_layout(tmp_path):
    w, b = np.ones((11, 11, 3, 96), np.float32), np.zeros(96, np.float32)
    np.save(tmp_path / "later.npy", {"conv1": {"weights": w, "biases": b}}, allow_pickle=True)
    (w_read, b_read), = read_npy(tmp_path / "later.npy").values()
    assert np.array_equal(w_read, w) and np.array_equal(b_read, b)


class Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2's str, as the Python 2 np.save that wrote bvlc_alexnet.npy did."""

    def save_bytes(self, obj):
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    def save_str(self, obj):
        self.save_bytes(obj.encode("latin1"))

    dispatch = {**pickle._Pickler.dispatch, bytes: save_bytes, str: save_str}


def test_npy_written_by_python_2_reads(tmp_path):
    """Python 2 pickled the arrays' bytes as str (hence latin1) and named numpy.core."""
    w, b = np.arange(12, dtype=np.float32).reshape(1, 2, 2, 3), np.full(3, 0.5, np.float32)
    wrapped = np.empty((), dtype=object)
    wrapped[()] = {"conv1": [w, b]}
    pickled, header = io.BytesIO(), io.BytesIO()
    Py2Pickler(pickled, protocol=2).dump(wrapped)
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": ()})
    path = tmp_path / "py2.npy"
    path.write_bytes(header.getvalue() + pickled.getvalue().replace(b"numpy._core.", b"numpy.core."))
    (w_read, b_read), = read_npy(path).values()
    assert np.array_equal(w_read, w) and np.array_equal(b_read, b)


def test_imagenet_uses_the_cached_npy_without_the_network(tmp_path, monkeypatch):
    cached = tmp_path / "checkpoints" / "bvlc_alexnet.npy"
    cached.parent.mkdir()
    cached.write_bytes(b"")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(dann.downloads, "require_online", lambda *a, **k: pytest.fail("went online"))
    assert download_npy() == cached


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"import pathlib; pathlib.Path({str(self.marker)!r}).touch()",)


def test_npy_with_code_is_refused_before_the_code_runs(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "evil.npy"
    np.save(path, {"conv1": [RunsCode(marker), np.zeros(96, np.float32)]}, allow_pickle=True)
    message = one_line_error(backbones.build, "alexnet_caffe", 7, str(path))
    assert "refused" in message and "builtins.exec" in message
    assert not marker.exists()
    np.load(path, allow_pickle=True)  # the test's own proof that the file does run code
    assert marker.exists()


@pytest.mark.parametrize("content, expected", [
    ({"conv1": [np.zeros((11, 11, 3, 64), np.float32), np.zeros(64, np.float32)]},
     "layer conv1 holds arrays of shapes [(11, 11, 3, 64), (64,)], Caffe's AlexNet needs [W, b] of shapes "
     "[(11, 11, 3, 96), (96,)]"),
    ({"conv1": [np.zeros((11, 11, 3, 96), np.float32), np.zeros(96, np.float32)],
      "conv2": [np.zeros((5, 5, 48, 256), np.float32), np.zeros(256, np.float32)]},
     "lacks layer conv3, conv4, conv5, fc6, fc7 (it holds conv1, conv2)"),
    ({"conv1": ["weights", "biases"]}, "its entry 'conv1' is a list, not a list [W, b] of float arrays"),
    ([np.zeros(3, np.float32)], "holds a list, not a caffe-tensorflow bvlc_alexnet.npy"),  # not a dict
    (np.zeros((2, 3), np.float32), "holds a float32 array of shape (2, 3), not a caffe-tensorflow"),
])
def test_npy_of_the_wrong_content_is_one_line(tmp_path, content, expected):
    path = tmp_path / "wrong.npy"
    if isinstance(content, list):  # np.save would turn a list into an array: wrap it as one object
        content, wrapped = np.empty((), dtype=object), content
        content[()] = wrapped
    np.save(path, content, allow_pickle=True)
    assert expected in one_line_error(backbones.build, "alexnet_caffe", 7, str(path))


def test_npy_that_is_not_an_npy_or_not_there(tmp_path):
    (tmp_path / "notes.txt").write_text("not weights")
    assert "not a readable .npy file" in one_line_error(backbones.build, "alexnet_caffe", 7,
                                                        str(tmp_path / "notes.txt"))
    assert "no such file" in one_line_error(backbones.build, "alexnet_caffe", 7, str(tmp_path / "absent.npy"))


# ---- alexnet and resnet18: a torchvision state dict ----

# name -> (torchvision model, G_y's name in it, its ImageNet head, a tensor to give a wrong shape);
# G_f's tensors have their torchvision names.
STATE_DICTS = {
    "alexnet": (alexnet, "classifier.", "classifier.6.", "features.3.weight"),
    "resnet18": (resnet18, "fc.", "fc.", "layer1.0.conv1.weight"),
}


def loaded_state(b, name) -> dict:
    """The backbone's tensors under their torchvision names."""
    classifier = STATE_DICTS[name][1]
    return b.features.state_dict() | {classifier + k: v for k, v in b.classifier.state_dict().items()}


@pytest.mark.parametrize("name", STATE_DICTS)
def test_state_dict_loads_and_a_wrong_shape_is_named(name, tmp_path, capsys):
    make, _, head, bent = STATE_DICTS[name]
    torch.manual_seed(0)
    state_dict = make(weights=None).state_dict()  # with a 1000-way ImageNet head
    torch.save(state_dict, tmp_path / "good.pt")
    loaded = loaded_state(backbones.build(name, 7, str(tmp_path / "good.pt")), name)
    for k, v in state_dict.items():
        if not k.startswith(head):
            assert torch.equal(loaded[k], v), k
    assert loaded[head + "weight"].shape[0] == 7
    assert capsys.readouterr().err == ""  # the new head is expected, not worth a warning

    original = state_dict[bent]
    state_dict[bent] = torch.zeros(*original.shape[:2], 1, 1)
    torch.save(state_dict, tmp_path / "bent.pt")
    loaded = loaded_state(backbones.build(name, 7, str(tmp_path / "bent.pt")), name)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: ")
    assert f"wrong shape {bent} {tuple(state_dict[bent].shape)} vs {tuple(original.shape)}" in err
    assert loaded[bent].shape == original.shape and not torch.equal(loaded[bent], original)
    for k, v in state_dict.items():
        if k != bent and not k.startswith(head):
            assert torch.equal(loaded[k], v), k


def test_lenet_state_dict_round_trip(tmp_path):
    trained = backbones.build("lenet", 10, "none")
    state_dict = ({f"features.{k}": v for k, v in trained.features.state_dict().items()}
                  | {f"classifier.{k}": v for k, v in trained.classifier.state_dict().items()})
    torch.save(state_dict, tmp_path / "l.pt")
    b = backbones.build("lenet", 10, str(tmp_path / "l.pt"))
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(b.classifier(b.features(x)), trained.classifier(trained.features(x)))


# ---- 'imagenet' without a network ----

@pytest.mark.parametrize("name, url", [
    ("alexnet", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    ("alexnet_caffe", NPY_URL),
    ("resnet18", "https://download.pytorch.org/models/resnet18-f37072fd.pth"),
    ("resnet50", "https://download.pytorch.org/models/resnet50-0676ba61.pth"),  # IMAGENET1K_V1
])
def test_imagenet_offline_is_one_line_fast(name, url, tmp_path, monkeypatch):
    calls = []

    def offline(what, url, fix, timeout=3.0):
        calls.append(url)
        raise UserError(f"cannot download {what} from host: no connection; {fix}")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty cache
    monkeypatch.setattr(dann.downloads, "require_online", offline)
    start = time.monotonic()
    message = one_line_error(backbones.build, name, 7, "imagenet")
    assert time.monotonic() - start < 5
    assert calls == [url]
    assert message.startswith("cannot download") and "--pretrained none" in message


def test_lenet_has_no_imagenet_weights():
    assert "lenet has no ImageNet weights; pass --pretrained none" in one_line_error(
        backbones.build, "lenet", 7, "imagenet")

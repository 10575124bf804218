"""The original Caffe AlexNet (bvlc_alexnet) that the DANN paper adapted: grouped convolutions,
LRN, 227x227 BGR inputs minus the Caffe ImageNet mean. G_f = conv1..pool5 (B, 9216), G_y =
fc6-fc7-fc8 with a num_classes-way fc8, the `copy` discriminator = G_y's architecture with 2
outputs and fc6/fc7 copied. ImageNet weights: the caffe-tensorflow `bvlc_alexnet.npy`.
"""
from __future__ import annotations

import codecs
import copy
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from einops.layers.torch import Rearrange
from torch import nn

from dann.backbones import Backbone, InputSpec
from dann.errors import UserError, note

NPY_URL = "http://www.cs.toronto.edu/~guerzhoy/tf_alexnet/bvlc_alexnet.npy"
# ilsvrc_2012_mean.npy (Caffe's mean image, 256x256) averaged over its pixels, in BGR order, in [0, 255].
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
# Layers read from the .npy; its fc8 (1000 ImageNet classes) gives way to a num_classes-way one.
NPY_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
NPY_HELP = "a caffe-tensorflow bvlc_alexnet.npy ({'conv1': [W, b], ..., 'fc8': [W, b]})"


def caffe_features() -> nn.Sequential:
    """G_f: BGR images (B, 3, 227, 227) -> pool5 features (B, 9216), layers named as in Caffe.

    Pooling rounds up as Caffe's does (ceil_mode; at 227 it agrees with rounding down). The
    adaptive average pool is the identity at 227 (pool5 is 6x6 there) and lets inputs from
    39x39 on through, as torchvision's AlexNet does for its own.
    """
    def lrn():
        return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)  # alpha / 5, in PyTorch as in Caffe

    def pool():
        return nn.MaxPool2d(3, stride=2, ceil_mode=True)

    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 96, 11, stride=4), relu1=nn.ReLU(inplace=True), norm1=lrn(),  # (B, 96, 55, 55)
        pool1=pool(),  # (B, 96, 27, 27)
        conv2=nn.Conv2d(96, 256, 5, padding=2, groups=2), relu2=nn.ReLU(inplace=True), norm2=lrn(),
        pool2=pool(),  # (B, 256, 13, 13)
        conv3=nn.Conv2d(256, 384, 3, padding=1), relu3=nn.ReLU(inplace=True),
        conv4=nn.Conv2d(384, 384, 3, padding=1, groups=2), relu4=nn.ReLU(inplace=True),
        conv5=nn.Conv2d(384, 256, 3, padding=1, groups=2), relu5=nn.ReLU(inplace=True),
        pool5=pool(),  # (B, 256, 6, 6)
        avgpool=nn.AdaptiveAvgPool2d(6),
        flatten=Rearrange("b c h w -> b (c h w)"),  # (B, 9216)
    ))


def caffe_classifier(in_features: int, num_outputs: int) -> nn.Sequential:
    """G_y in Caffe's order: fc6 -> ReLU -> dropout -> fc7 -> ReLU -> dropout -> fc8. Unlike
    torchvision's classifier, no dropout on the pool5 features and one after fc7."""
    return nn.Sequential(OrderedDict(
        fc6=nn.Linear(in_features, 4096), relu6=nn.ReLU(inplace=True), drop6=nn.Dropout(0.5),
        fc7=nn.Linear(4096, 4096), relu7=nn.ReLU(inplace=True), drop7=nn.Dropout(0.5),
        fc8=nn.Linear(4096, num_outputs),
    ))


def copy_classifier(classifier: nn.Sequential, in_features: int, num_outputs: int = 2) -> nn.Sequential:
    """G_y's architecture and weights with `num_outputs` outputs; fc6 is copied only when
    `in_features` is G_y's own input size (9216), else it is a new layer of that input size."""
    head = copy.deepcopy(classifier)
    head.fc8 = nn.Linear(head.fc8.in_features, num_outputs)
    if in_features != head.fc6.in_features:
        head.fc6 = nn.Linear(in_features, head.fc6.out_features)
    return head


def build(num_classes: int, pretrained: str) -> Backbone:
    """pretrained: 'imagenet' (bvlc_alexnet.npy, downloaded once into torch's cache), 'none',
    or the PATH of a bvlc_alexnet.npy."""
    path, layers = None, None  # the file first: its mistakes show before the network is built
    if pretrained != "none":
        path = download_npy() if pretrained == "imagenet" else Path(pretrained)
        layers = read_npy(path)
    features, classifier = caffe_features(), caffe_classifier(9216, num_classes)
    if layers is not None:
        load_npy(features, classifier, layers, source=str(path))
    return Backbone(features=features, classifier=classifier, dim=9216,
                    input=InputSpec(size=227, min_size=39, normalization="caffe", mean=CAFFE_MEAN_BGR,
                                    std=(1.0, 1.0, 1.0)),
                    make_discriminator=lambda in_features: copy_classifier(classifier, in_features),
                    make_head=lambda outputs: copy_classifier(classifier, 9216, outputs))


def download_npy() -> Path:
    """bvlc_alexnet.npy (233 MB) from torch's cache folder, downloaded there on first use."""
    from dann.downloads import require_online

    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(NPY_URL).name
    if cached.is_file():
        return cached
    fix = (f"download {NPY_URL} on a machine with internet and pass --pretrained PATH/bvlc_alexnet.npy, "
           f"or use --pretrained none")
    require_online("the ImageNet weights of Caffe's AlexNet", NPY_URL, fix)
    note(f"downloading {NPY_URL} to {cached}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:  # into a temporary file renamed at the end: an interrupted download leaves no cached file
        torch.hub.download_url_to_file(NPY_URL, str(cached), progress=False)
    except Exception as e:  # HTTP errors, a dropped connection
        raise UserError(f"downloading {NPY_URL} failed ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); {fix}") from None
    return cached


class _Refused(pickle.UnpicklingError):
    pass


class _ArraysOnly(pickle.Unpickler):
    """Builds numpy arrays, dicts, lists, tuples, numbers and strings, and refuses any other
    global a pickle names (`os.system`, `builtins.exec`, ...) before it can be called."""
    _reconstruct = np.zeros(0).__reduce__()[0]  # numpy's own, whatever module this version keeps it in
    ALLOWED = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy < 2 and Python 2 files
               ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
               ("_codecs", "encode"): codecs.encode}  # bytes in a protocol-2 pickle of Python 3

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise _Refused(f"{module}.{name}")
        return self.ALLOWED[module, name]


def read_npy(path: Path) -> dict[str, list[np.ndarray]]:
    """The layers of a bvlc_alexnet.npy: {'conv1': [W, b], ...} (lists or tuples of arrays, or
    caffe-tensorflow's later {'weights': W, 'biases': b}).

    Such a file is one pickled dict, usually read with
    `np.load(path, encoding="latin1", allow_pickle=True).item()`; but unpickling can run any
    code the file holds. This reads the same pickle (latin1: the file was written by Python 2)
    with an unpickler that builds only numpy arrays and containers, and refuses anything else.
    """
    if not path.is_file():
        raise UserError(f"--pretrained {path}: no such file; give 'imagenet', 'none' or the path of "
                        f"{NPY_HELP}")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
            data = _ArraysOnly(f, encoding="latin1").load() if dtype == object else None
    except _Refused as e:
        raise UserError(f"--pretrained {path}: refused, the file's pickle calls {e} besides building numpy "
                        f"arrays (loading it could run code); use {NPY_HELP}") from None
    except Exception as e:  # not an .npy file, truncated, ...
        raise UserError(f"--pretrained {path}: not a readable .npy file ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); use {NPY_HELP}") from None
    if dtype != object or shape != ():  # np.save of a dict: one object in an array of shape ()
        raise UserError(f"--pretrained {path}: holds a {dtype} array of shape {shape}, not {NPY_HELP}")
    data = data.item()
    if not isinstance(data, dict):
        raise UserError(f"--pretrained {path}: holds a {type(data).__name__}, not {NPY_HELP}")
    layers = {}
    for name, arrays in data.items():
        if isinstance(arrays, dict) and set(arrays) == {"weights", "biases"}:  # caffe-tensorflow's later one
            arrays = [arrays["weights"], arrays["biases"]]
        if not (isinstance(arrays, (list, tuple))
                and all(isinstance(a, np.ndarray) and a.dtype.kind == "f" for a in arrays)):
            raise UserError(f"--pretrained {path}: its entry {name!r} is a {type(arrays).__name__}, not a "
                            f"list [W, b] of float arrays; use {NPY_HELP}")
        layers[name] = list(arrays)
    return layers


def npy_to_torch(layer: str, weight: torch.Tensor) -> torch.Tensor:
    """A weight in the caffe-tensorflow layout -> PyTorch's: conv (kh, kw, in/groups, out) ->
    (out, in/groups, kh, kw); fc (in, out) -> (out, in). TensorFlow flattened pool5 (6, 6, 256)
    in (h, w, c) order and PyTorch flattens (c, h, w): fc6's inputs are reordered to match."""
    if weight.ndim == 4:
        return rearrange(weight, "kh kw i o -> o i kh kw")
    if layer == "fc6":  # rows first, then the transpose: both copy whole rows or tiles, fast
        weight = rearrange(weight, "(h w c) o -> (c h w) o", h=6, w=6)
    return rearrange(weight, "i o -> o i")


def load_npy(features: nn.Sequential, classifier: nn.Sequential, layers: dict[str, list[np.ndarray]],
             source: str) -> None:
    """Copy conv1..fc7 from `layers` (see `read_npy`) into G_f and G_y; conv1 keeps its BGR
    input channels (InputSpec 'caffe' feeds BGR). Any missing or wrong-shape layer: one line."""
    modules = {name: getattr(features, name) if name.startswith("conv") else getattr(classifier, name)
               for name in NPY_LAYERS}
    for name, module in modules.items():
        if name not in layers:
            continue
        w = module.weight
        want = [(*w.shape[2:], w.shape[1], w.shape[0]), (w.shape[0],)]  # conv (kh, kw, in, out), fc (in, out)
        got = [tuple(a.shape) for a in layers[name]]
        if got != want:
            raise UserError(f"--pretrained {source}: layer {name} holds arrays of shapes {got}, Caffe's "
                            f"AlexNet needs [W, b] of shapes {want}; is it a file of another network? "
                            f"(use {NPY_HELP}, or --pretrained none)")
    missing = [name for name in NPY_LAYERS if name not in layers]
    if missing:
        raise UserError(f"--pretrained {source}: lacks layer {', '.join(missing)} (it holds "
                        f"{', '.join(map(str, layers)) or 'nothing'}); use {NPY_HELP}, or --pretrained none")
    with torch.no_grad():
        for name, module in modules.items():
            weight, bias = (torch.from_numpy(np.asarray(a, dtype=np.float32)) for a in layers[name])
            module.weight.copy_(npy_to_torch(name, weight))
            module.bias.copy_(bias)

"""The digits domains from files written here in their original formats: IDX, .mat, libsvm, parquet."""
import bz2
import gzip
import socket
import time

import numpy as np
import pytest
import scipy.io
from PIL import Image

from dann.datasets import digits
from dann.errors import UserError


def stroke_image(size: int, background=0, stroke=255) -> np.ndarray:
    """A bright vertical bar (the middle eighth of the columns) on a dark background."""
    image = np.full((size, size), background, np.uint8)
    image[size // 8: -size // 8, 7 * size // 16: 9 * size // 16 + 1] = stroke
    return image


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def write_mnist(root, labels=(7, 0, 9), gz=True) -> None:
    folder = root / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", np.stack([stroke_image(28)] * len(labels)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", np.array(labels))


def svhn_x(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (32, 32, 3, n), dtype=np.uint8)


def write_svhn(root, y=(10, 3, 1)) -> np.ndarray:
    (root / "svhn").mkdir(parents=True, exist_ok=True)
    x = svhn_x(len(y))
    for name in ("train_32x32.mat", "test_32x32.mat"):
        scipy.io.savemat(root / "svhn" / name, {"X": x, "y": np.array(y, np.uint8).reshape(-1, 1)})
    return x


def usps_line(label: int) -> str:
    values = stroke_image(16).astype(np.float64) / 127.5 - 1  # 0 -> -1 (background), 255 -> 1
    return f"{label} " + " ".join(f"{i}:{v:.6f}" for i, v in enumerate(values.reshape(-1), 1))


def write_usps(root, labels=(1, 10, 5)) -> None:
    (root / "usps").mkdir(parents=True, exist_ok=True)
    text = "".join(usps_line(label) + "\n" for label in labels).encode()
    for name in ("usps.bz2", "usps.t.bz2"):
        (root / "usps" / name).write_bytes(bz2.compress(text))


def write_mnist_m_hub(folder, labels=(4, 2)):
    """A local dataset in the Hub's format: red strokes on blue, 28x28 RGB, image and label."""
    import datasets
    rgb = np.zeros((28, 28, 3), np.uint8)
    rgb[..., 2] = 200
    rgb[stroke_image(28) > 0] = (255, 0, 0)
    folder.mkdir(parents=True)
    for split in digits.SPLITS:
        table = datasets.Dataset.from_dict({"image": [Image.fromarray(rgb)] * len(labels), "label": list(labels)})
        table.cast_column("image", datasets.Image()).to_parquet(str(folder / f"{split}.parquet"))
    return folder


def assert_digit_images(images: np.ndarray, n: int) -> None:
    assert images.shape == (n, 3, 32, 32) and images.dtype == np.uint8
    assert (images[:, :, 16, 16] > 200).all()  # the stroke, resized, is still bright
    assert (images[:, :, 1, 1] < 30).all()  # the background dark


@pytest.fixture
def offline(monkeypatch):
    """No network: every TCP connection fails at once, and no download may start."""
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "HF_HUB_OFFLINE",
                 "HF_DATASETS_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)

    def unreachable(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    def no_download(*args, **kwargs):
        raise AssertionError("a download started although the server is unreachable")
    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr("torchvision.datasets.utils.download_url", no_download)
    monkeypatch.setattr("datasets.load_dataset", no_download)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("split", digits.SPLITS)
@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx(tmp_path, split, gz):
    write_mnist(tmp_path, gz=gz)
    images, labels = digits.load("mnist", split, tmp_path, download=False)
    assert_digit_images(images, 3)
    assert labels.dtype == np.int64 and labels.tolist() == [7, 0, 9]
    assert (images[:, 0] == images[:, 1]).all() and (images[:, 0] == images[:, 2]).all()  # grey


def test_svhn_mat_label_10_is_digit_0(tmp_path):
    x = write_svhn(tmp_path)
    images, labels = digits.load("svhn", "train", tmp_path, download=False)
    assert images.shape == (3, 3, 32, 32) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == [0, 3, 1]
    assert (images[1, 2] == x[:, :, 2, 1]).all()  # image 1, blue channel: unchanged, rows x columns


def test_usps_libsvm_labels_1_to_10_are_digits_0_to_9(tmp_path):
    write_usps(tmp_path)
    images, labels = digits.load("usps", "test", tmp_path, download=False)
    assert_digit_images(images, 3)
    assert labels.dtype == np.int64 and labels.tolist() == [0, 9, 4]


def test_mnist_m_saved_once_as_parquet_then_read_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(digits, "MNIST_M_HUB", str(write_mnist_m_hub(tmp_path / "hub")))
    images, labels = digits.load("mnist_m", "train", tmp_path / "data")
    assert sorted(p.name for p in (tmp_path / "data" / "mnist_m").glob("*.parquet")) == ["test.parquet", "train.parquet"]
    assert images.shape == (2, 3, 32, 32) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == [4, 2]
    assert images[0, :, 16, 16].tolist() == [255, 0, 0] and images[0, :, 1, 1].tolist() == [0, 0, 200]

    monkeypatch.setattr(digits, "MNIST_M_HUB", str(tmp_path / "gone"))  # never asked again
    images, labels = digits.load("mnist_m", "test", tmp_path / "data", download=False)
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [4, 2]


def test_decoded_split_is_cached_until_the_raw_file_changes(tmp_path, monkeypatch):
    write_usps(tmp_path)
    digits.load("usps", "train", tmp_path)
    monkeypatch.setitem(digits.DECODERS, "usps", lambda path: pytest.fail("decoded again"))
    assert digits.load("usps", "train", tmp_path)[1].tolist() == [0, 9, 4]

    monkeypatch.undo()
    write_usps(tmp_path, labels=(2, 3))
    assert digits.load("usps", "train", tmp_path)[1].tolist() == [1, 2]
    assert len(list((tmp_path / "usps").glob("cache-train-*.npy"))) == 2  # the stale pair is gone


@pytest.mark.parametrize("domain, expected", [
    ("mnist", "mnist/train-images-idx3-ubyte.gz and mnist/train-labels-idx1-ubyte.gz"),
    ("mnist_m", "mnist_m/train.parquet"), ("svhn", "svhn/train_32x32.mat"), ("usps", "usps/usps.bz2")])
def test_missing_files_without_download(tmp_path, domain, expected):
    with pytest.raises(UserError) as e:
        digits.load(domain, "train", tmp_path, download=False)
    first = expected.split(" and ")[0]
    assert one_line(e) == (f"{digits.TITLES[domain]} train file {tmp_path / first} not found; "
                           f"pass --data_root pointing at a folder that holds {expected}")


@pytest.mark.parametrize("domain, file, host", [
    ("mnist", "train-images-idx3-ubyte.gz", "ossci-datasets.s3.amazonaws.com"),
    ("mnist_m", "train.parquet", "huggingface.co"),
    ("svhn", "train_32x32.mat", "ufldl.stanford.edu"),
    ("usps", "usps.bz2", "www.csie.ntu.edu.tw")])
def test_missing_files_without_network_fail_fast(tmp_path, offline, domain, file, host):
    start = time.monotonic()
    with pytest.raises(UserError) as e:
        digits.load(domain, "train", tmp_path)
    assert time.monotonic() - start < 5
    message = one_line(e)
    assert message.startswith(f"cannot download {digits.TITLES[domain]} ")
    assert f"from {host}: no connection (Network is unreachable); " in message
    assert f"copy it to {tmp_path / domain / file}, or pass --data_root" in message
    assert not (tmp_path / domain).exists()  # nothing written: not even the folder


def test_download_that_dies_halfway_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(digits, "require_online", lambda *args, **kwargs: None)

    def dies_halfway(url, root, filename, md5):
        (tmp_path / "svhn" / filename).write_bytes(b"MATLAB 5.0 half a file")
        raise ConnectionResetError(104, "Connection reset by peer")
    monkeypatch.setattr("torchvision.datasets.utils.download_url", dies_halfway)
    with pytest.raises(UserError, match=r"^cannot download SVHN from http://ufldl.stanford.edu/housenumbers/"
                                        r"train_32x32.mat \(\[Errno 104\] Connection reset by peer\); "):
        digits.load("svhn", "train", tmp_path)
    assert list((tmp_path / "svhn").iterdir()) == []


def damage(tmp_path, domain: str):
    """Write a whole split, then spoil one file; returns that file."""
    if domain == "mnist_m":
        (tmp_path / "mnist_m").mkdir()
        (tmp_path / "mnist_m" / "train.parquet").write_bytes(b"PAR1 not really")
        return tmp_path / "mnist_m" / "train.parquet"
    {"mnist": write_mnist, "mnist_idx": write_mnist, "svhn": write_svhn, "usps": write_usps}[domain](tmp_path)
    if domain == "mnist":  # not gzip at all
        path = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
        path.write_bytes(b"<html>503 Service Unavailable</html>")
    elif domain == "mnist_idx":  # a valid gzip of a truncated IDX file
        path = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
        path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    elif domain == "svhn":  # a .mat without X and y
        path = tmp_path / "svhn" / "train_32x32.mat"
        scipy.io.savemat(path, {"images": svhn_x(2)})
    else:  # a line that is not libsvm
        path = tmp_path / "usps" / "usps.bz2"
        path.write_bytes(bz2.compress((usps_line(3) + "\n" + "4 1:0.5 2-0.25\n").encode()))
    return path


@pytest.mark.parametrize("domain, reason", [
    ("mnist", "Not a gzipped file"), ("mnist_idx", r"bytes of data for the \(3, 28, 28\)"),
    ("svhn", r"no X and y arrays \(found: images\)"), ("usps", "line 2: cannot parse '4 1:0.5 2-0.25'"),
    ("mnist_m", "ArrowInvalid")])
def test_damaged_file_is_named_in_one_line(tmp_path, domain, reason):
    path = damage(tmp_path, domain)
    with pytest.raises(UserError) as e:
        digits.load(domain.removesuffix("_idx"), "train", tmp_path, download=False)
    assert one_line(e).startswith(f"{path} is damaged (")
    assert e.match(reason) and e.match(r"; delete it so that it is downloaded again$")


def test_unknown_domain_or_split(tmp_path):
    with pytest.raises(UserError, match=r"unknown digits domain 'mnistm'; choose from mnist, mnist_m, svhn, usps"):
        digits.load("mnistm", "train", tmp_path)
    with pytest.raises(UserError, match=r"unknown split 'val' of USPS; choose from train, test"):
        digits.load("usps", "val", tmp_path)


def test_every_file_has_torchvisions_url_and_md5():
    for (domain, split), names in digits.FILES.items():
        for name in names:
            if domain != "mnist_m":
                urls, md5 = digits.sources(domain, name)
                assert urls and all(url.endswith(name) for url in urls) and len(md5) == 32


def test_a_file_that_is_a_folder_is_named_as_such(tmp_path):
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").mkdir(parents=True)  # an archive unpacked in place
    with pytest.raises(UserError) as e:
        digits.load("mnist", "train", tmp_path, download=False)
    assert one_line(e).startswith(f"MNIST train file {tmp_path / 'mnist' / 'train-images-idx3-ubyte.gz'} is a folder, "
                                  f"not the file;")

"""The field's named datasets (Office-31, Office-Home, VisDA-2017, DomainNet) on fakes in their
exact published layouts, written here: domains, the real class lists, splits and labels; their
downloads from a local HTTP server (checksums, extraction, failures in one line, nothing left
half-written); end-to-end runs; mean per-class accuracy; the pinned PACS revision."""
from __future__ import annotations

import functools
import hashlib
import http.server
import json
import re
import socket
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_train import register

from dann import datasets, plugins
from dann.backbones import InputSpec
from dann.cli import main
from dann.config import TrainConfig
from dann.datasets import domainnet, folder, mean_class_accuracy
from dann.datasets.domainnet import CLASSES as DOMAINNET_CLASSES
from dann.datasets.office import Office31, OfficeHome
from dann.datasets.visda import VisDA2017
from dann.downloads import Remote, download_file
from dann.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (see conftest)


# ---------------------------------------------------------------------------- fakes, in the real layouts

def write_image(path: Path, seed: int, size: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def fake_office31(root: Path, domains=Office31.DOMAINS, per_class: int = 1) -> Path:
    """<domain>/images/<class>/frame_000N.jpg, as the Office-31 archives extract."""
    for d, domain in enumerate(domains):
        for c, name in enumerate(Office31.CLASSES):
            for i in range(per_class):
                write_image(root / domain / "images" / name / f"frame_{i + 1:04d}.jpg", seed=1000 * d + 10 * c + i)
    return root


def fake_office_home(root: Path, real_world: str = "Real_World") -> Path:
    """<domain>/<class>/0000N.jpg; the last domain's folder named as given."""
    for d, domain in enumerate(OfficeHome.DOMAINS):
        for c, name in enumerate(OfficeHome.CLASSES):
            folder = real_world if domain == "Real_World" else domain
            write_image(root / folder / name / "00001.jpg", seed=100 * d + c)
    return root


VISDA_FILES = {"train": "src_1_{id}_{c}__1_1_001.png", "validation": "{c}_{id}.jpg"}


def fake_visda(root: Path, per_class: int = 2) -> dict[str, list[str]]:
    """<split>/<class>/<file> and <split>/image_list.txt of `<class>/<file> <label>` lines;
    returns each split's lines."""
    lines = {}
    for split, pattern in VISDA_FILES.items():
        lines[split] = []
        for label, name in enumerate(VisDA2017.CLASSES):
            for i in range(per_class):
                file = pattern.format(id=f"{label:02d}{i:04x}", c=name)
                write_image(root / split / name / file, seed=label * 10 + i + (500 if split == "train" else 0))
                lines[split].append(f"{name}/{file} {label}")
        (root / split / "image_list.txt").write_text("\n".join(lines[split]) + "\n")
    return lines


DOMAINNET_LISTED = (0, 1, 327, 344)  # aircraft_carrier, airplane, t-shirt, zigzag


def fake_domainnet(root: Path, domains=("real", "clipart")) -> dict[tuple[str, str], list[str]]:
    """<domain>/<class>/<domain>_<class>_<n>.jpg for every one of the 345 classes, and the
    official lists <domain>_train.txt / <domain>_test.txt (`<domain>/<class>/<file> <label>`)
    naming a few of them; returns each list's lines."""
    lines = {}
    for d, domain in enumerate(domains):
        for label, name in enumerate(DOMAINNET_CLASSES):
            count = 3 if label in DOMAINNET_LISTED else 1
            for i in range(count):
                file = f"{domain}_{label + 1:03d}_{i + 1:06d}.jpg"
                write_image(root / domain / name / file, seed=d * 5000 + label * 4 + i, size=16)
        for split, picks in (("train", (1, 2)), ("test", (3,))):
            lines[domain, split] = [f"{domain}/{DOMAINNET_CLASSES[label]}/{domain}_{label + 1:03d}_{i:06d}.jpg {label}"
                                    for label in DOMAINNET_LISTED for i in picks]
            (root / f"{domain}_{split}.txt").write_text("\n".join(lines[domain, split]) + "\n")
    return lines


def config(name: str, root: Path | None, **flags) -> TrainConfig:
    return TrainConfig(dataset=name, data_root=str(root) if root else "", **flags)


def build(name: str, root: Path | None, **flags):
    return datasets.build(config(name, root, **flags))


# ---------------------------------------------------------------------------- --dataset folder on Office-31

def test_folder_dataset_reads_office31_through_its_images_folder(tmp_path):
    root = fake_office31(tmp_path / "office31", domains=("amazon",))
    files = folder.list_domain(root, "amazon")
    assert files.classes == list(Office31.CLASSES)
    assert files.paths[0] == root / "amazon" / "images" / "back_pack" / "frame_0001.jpg"
    assert files.labels == list(range(31))


def test_a_wrapper_beside_images_or_a_one_class_domain_is_not_descended_into(tmp_path):
    write_image(tmp_path / "a" / "only_class" / "1.jpg", 0)  # one class: read as it is
    assert folder.list_domain(tmp_path, "a").classes == ["only_class"]
    write_image(tmp_path / "b" / "images" / "dog" / "1.jpg", 1)
    write_image(tmp_path / "b" / "cover.jpg", 2)  # an image beside the wrapper: the wrapper is a class
    with pytest.raises(UserError, match=r"class folder .*b/images holds no images, only folders \(e.g. dog\)"):
        folder.list_domain(tmp_path, "b")


def test_nested_folders_in_class_folders_are_skipped_with_one_note(tmp_path, capsys):
    root = fake_office31(tmp_path / "office31", domains=("amazon", "webcam"))
    for name in ("bike", "mug"):
        write_image(root / "amazon" / "images" / name / "extra" / "1.jpg", 0)
    dataset = build("folder", root)
    assert dataset.domains() == ["amazon", "webcam"]
    assert dataset.classes(["amazon", "webcam"]) == list(Office31.CLASSES)
    assert len(dataset.listing("amazon").paths) == 31
    notes = [line for line in capsys.readouterr().err.splitlines() if "inside the class folders" in line]
    assert len(notes) == 1 and notes[0].startswith("note: skipped 2 folder(s) inside the class folders of ")


# ---------------------------------------------------------------------------- each plug-in on its fake

def test_office31_domains_classes_and_transductive_protocol(tmp_path):
    dataset = build("office31", fake_office31(tmp_path / "office31", per_class=2))
    assert dataset.domains() == ["amazon", "dslr", "webcam"] and dataset.default_pair == ("amazon", "webcam")
    assert dataset.transductive and dataset.headline == "acc"
    assert dataset.classes(["amazon", "webcam"]) == list(Office31.CLASSES)
    assert len(Office31.CLASSES) == 31 == len(set(Office31.CLASSES))
    webcam = dataset.listing("webcam")
    assert dataset.listing("webcam", "test") is webcam  # the whole domain is every split
    assert len(webcam.paths) == 62 and webcam.labels[:4] == [0, 0, 1, 1]


def test_office31_with_other_class_folders_is_refused_in_one_line(tmp_path):
    root = fake_office31(tmp_path / "office31", domains=("amazon", "webcam"))
    for domain in ("amazon", "webcam"):
        (root / domain / "images" / "ruler").rename(root / domain / "images" / "rulers")
    with pytest.raises(UserError) as e:
        build("office31", root).classes(["amazon", "webcam"])
    assert "\n" not in str(e.value)
    assert "31 class folders where Office-31 has 31 (missing: ruler; not Office-31's: rulers)" in str(e.value)
    assert "--dataset folder" in str(e.value)


@pytest.mark.parametrize("real_world", ["Real_World", "Real World"])
def test_office_home_domains_classes_and_the_authors_real_world_folder(tmp_path, real_world):
    dataset = build("office_home", fake_office_home(tmp_path / "office_home", real_world))
    assert dataset.domains() == ["Art", "Clipart", "Product", "Real_World"]
    assert dataset.default_pair == ("Art", "Clipart") and dataset.transductive
    assert len(OfficeHome.CLASSES) == 65 == len(set(OfficeHome.CLASSES))
    folders = sorted(p.name for p in (tmp_path / "office_home" / "Art").iterdir())
    assert dataset.classes(["Art", "Real_World"]) == folders
    files = dataset.listing("Real_World")
    assert files.name == "Real_World" and files.paths[0].parent.parent.name == real_world


def test_visda_domains_classes_lists_and_labels(tmp_path):
    lines = fake_visda(tmp_path / "visda")
    dataset = build("visda2017", tmp_path / "visda")
    assert dataset.domains() == ["train", "validation"] and dataset.default_pair == ("train", "validation")
    assert dataset.transductive and dataset.headline == "mean_class_acc"
    assert dataset.classes(["train", "validation"]) == list(VisDA2017.CLASSES) and len(VisDA2017.CLASSES) == 12
    assert sorted(p.name for p in (tmp_path / "visda" / "train").iterdir() if p.is_dir()) == sorted(VisDA2017.CLASSES)
    for split in ("train", "validation"):
        files = dataset.listing(split)
        assert [f"{p.parent.name}/{p.name} {y}" for p, y in zip(files.paths, files.labels)] == lines[split]
        assert all(p.is_file() for p in files.paths)


def test_domainnet_reads_the_official_train_and_test_lists(tmp_path):
    lines = fake_domainnet(tmp_path / "domainnet")
    dataset = build("domainnet", tmp_path / "domainnet")
    assert dataset.domains() == ["clipart", "infograph", "painting", "quickdraw", "real", "sketch"]
    assert dataset.default_pair == ("real", "clipart") and not dataset.transductive
    assert dataset.classes(["real", "clipart"]) == list(DOMAINNET_CLASSES)
    assert len(DOMAINNET_CLASSES) == 345 == len(set(DOMAINNET_CLASSES))
    assert sorted(p.name for p in (tmp_path / "domainnet" / "real").iterdir()) == sorted(DOMAINNET_CLASSES)
    for (domain, split), expected in lines.items():
        files = dataset.listing(domain, split)
        assert files.split == split
        listed = [f"{p.relative_to(tmp_path / 'domainnet').as_posix()} {y}" for p, y in zip(files.paths, files.labels)]
        assert listed == expected
    assert len(dataset.listing("clipart", "train").paths) == 8 and len(dataset.listing("clipart", "test").paths) == 4


def test_domainnet_label_order_is_the_lists_order():
    """The lists number the classes sorted ignoring case, '_' and '-'; t-shirt is 327."""
    key = lambda c: c.lower().replace("_", "").replace("-", "")  # noqa: E731
    assert list(DOMAINNET_CLASSES) == sorted(DOMAINNET_CLASSES, key=key)
    assert (DOMAINNET_CLASSES[0], DOMAINNET_CLASSES[327], DOMAINNET_CLASSES[344]) == ("aircraft_carrier", "t-shirt",
                                                                                     "zigzag")


def test_domainnet_lists_in_tllibs_image_list_folder_are_found(tmp_path):
    root = tmp_path / "domainnet"
    fake_domainnet(root, domains=("real",))
    (root / "image_list").mkdir()
    for split in ("train", "test"):
        (root / f"real_{split}.txt").rename(root / "image_list" / f"real_{split}.txt")
    assert len(build("domainnet", root).listing("real", "test").paths) == 4


@pytest.mark.parametrize("line, reason", [
    ("real/airplane/real_002_000001.jpg", r"line 2 is not '<path> <label>'"),
    ("real/airplane/real_002_000001.jpg 345", r"line 2: label 345, but there are 345 classes"),
    ("real/airplane/real_002_000001.jpg 0", r"line 2: real/airplane/real_002_000001.jpg has label 0 "
                                            r"\(aircraft_carrier\) but is not in a aircraft_carrier/ folder")])
def test_a_damaged_list_is_named_in_one_line(tmp_path, line, reason):
    root = tmp_path / "domainnet"
    fake_domainnet(root, domains=("real",))
    first = (root / "real_train.txt").read_text().splitlines()[0]
    (root / "real_train.txt").write_text(f"{first}\n{line}\n")
    with pytest.raises(UserError, match=rf"^{re.escape(str(root / 'real_train.txt'))} is damaged \({reason}") as e:
        build("domainnet", root).listing("real", "train")
    assert "\n" not in str(e.value)


def test_listed_images_that_are_missing_stop_the_run_or_are_skipped(tmp_path, capsys):
    root = tmp_path / "domainnet"
    fake_domainnet(root, domains=("real",))
    gone = root / "real" / "airplane" / "real_002_000001.jpg"
    gone.unlink()
    missing = rf"^1 images listed in .*real_train.txt are missing, e.g. {re.escape(str(gone))}; "
    with pytest.raises(UserError, match=missing):
        build("domainnet", root).listing("real", "train")
    files = build("domainnet", root, skip_bad_images=True).listing("real", "train")
    assert len(files.paths) == 7 and files.skipped == [str(gone)]
    assert "--skip_bad_images: leaving out 1 missing image(s) of real" in capsys.readouterr().err


def test_domainnet_splits_on_both_data_paths(tmp_path):
    """Not transductive: train on the source's and the target's train lists, test on the
    target's test list; the DataLoader path gives the same splits as the tensor path."""
    fake_domainnet(tmp_path / "domainnet")
    sizes = {}
    for path in ("tensor", "loader"):
        cfg = config("domainnet", tmp_path / "domainnet", source="real", target="clipart", data_path=path,
                     cache_dir=str(tmp_path / "cache"), source_val=0.25, batch_size=4)
        dataset = datasets.build(cfg)
        splits, info = datasets.load_splits(dataset, cfg, InputSpec(size=16, min_size=16), device=torch.device("cpu"),
                                            rank=0, world=1, channels_last=False, workers=1)
        split = splits["clipart"]
        assert info["data_path"] == path
        assert type(split.test).__name__ == ("LoaderDomain" if path == "loader" else "TensorDomain")
        sizes[path] = [len(d) for d in (split.train, split.source_val, split.target, split.test, split.source_test)]
        assert [y for _, batch in split.test.eval_batches() for y in batch.tolist()] == list(DOMAINNET_LISTED)
    assert sizes["tensor"] == sizes["loader"] == [6, 2, 8, 4, 4]
    # train and test lists of one domain are cached apart
    assert len([p for p in (tmp_path / "cache").glob("clipart_t*-*.npy")]) == 2


# ---------------------------------------------------------------------------- downloads, from a local server

@pytest.fixture
def no_proxy(monkeypatch):
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server(tmp_path, no_proxy):
    """An HTTP server on 127.0.0.1 serving tmp_path/served; yields (folder, base URL)."""
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def tar_of(folder: Path, top: str, path: Path, mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as t:
        t.add(folder / top, arcname=top)
    return path


def zip_of(folder: Path, top: str, path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for file in sorted((folder / top).rglob("*")):
            z.write(file, file.relative_to(folder).as_posix())
    return path


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def md5(path: Path) -> str:
    return "md5:" + hashlib.md5(path.read_bytes()).hexdigest()


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_office31_downloads_verifies_and_extracts_its_domain_archives(tmp_path, server, monkeypatch, capsys):
    served, url = server
    fake_office31(tmp_path / "made", domains=("amazon", "webcam"))
    archives = {d: tar_of(tmp_path / "made", d, served / f"{d}.tgz") for d in ("amazon", "webcam")}
    monkeypatch.setattr(Office31, "ARCHIVES", {"amazon": Remote(f"{url}/amazon.tgz", md5(archives["amazon"])),
                                               "webcam": Remote(f"{url}/webcam.tgz", None)})  # checked by its layout
    root = tmp_path / "data" / "office31"
    dataset = build("office31", root, download=True)
    assert dataset.domains() == ["amazon", "dslr", "webcam"]
    dataset.prepare(["amazon", "webcam"])
    assert entries(root) == ["amazon", "webcam"]  # no archive, no scratch folder left
    assert (root / "amazon" / "images" / "back_pack" / "frame_0001.jpg").read_bytes() == \
        (tmp_path / "made" / "amazon" / "images" / "back_pack" / "frame_0001.jpg").read_bytes()
    assert dataset.classes(["amazon", "webcam"]) == list(Office31.CLASSES)
    err = capsys.readouterr().err
    assert f"note: downloading Office-31 amazon (size unknown) from {url}/amazon.tgz\n" in err
    assert "webcam.tgz; no checksum is published for it: its contents are checked instead" in err

    (served / "amazon.tgz").unlink()  # present now: never asked for again
    build("office31", root, download=True).prepare(["amazon", "webcam"])


def one_line_error(call) -> str:
    with pytest.raises(UserError) as e:
        call()
    assert "\n" not in str(e.value)
    return str(e.value)


def test_a_wrong_checksum_is_one_line_and_leaves_nothing(tmp_path, server, monkeypatch):
    served, url = server
    fake_office31(tmp_path / "made", domains=("amazon",))
    archive = tar_of(tmp_path / "made", "amazon", served / "amazon.tgz")
    wrong = "sha256:" + "0" * 64
    monkeypatch.setattr(Office31, "ARCHIVES", {"amazon": Remote(f"{url}/amazon.tgz", wrong)})
    root = tmp_path / "data" / "office31"
    message = one_line_error(lambda: build("office31", root, download=True).prepare(["amazon"]))
    assert message.startswith(f"the download of Office-31 amazon from {url}/amazon.tgz has sha256 "
                              f"{sha256(archive)[7:]}, expected {'0' * 64} (a changed or damaged file); download ")
    assert not root.parent.exists()  # nor the data/ folder made for it

    root.mkdir(parents=True)  # a folder that was there stays, empty
    one_line_error(lambda: build("office31", root, download=True).prepare(["amazon"]))
    assert entries(root) == []


def test_a_wrong_size_is_one_line(tmp_path, server):
    served, url = server
    (served / "clipart_train.txt").write_text("clipart/airplane/clipart_002_000001.jpg 1\n")
    remote = Remote(f"{url}/clipart_train.txt", sha256(served / "clipart_train.txt"), size=10)
    message = one_line_error(lambda: download_file(remote, tmp_path / "d" / "x.txt", "DomainNet list", "fix"))
    assert message.endswith("has 42 bytes, expected 10 (a changed or damaged file); fix")
    assert not (tmp_path / "d").exists()


def test_an_archive_without_the_expected_layout_is_one_line_and_leaves_nothing(tmp_path, server, monkeypatch):
    served, url = server
    fake_office31(tmp_path / "made", domains=("amazon",))
    (tmp_path / "made" / "amazon" / "images" / "mug").rename(tmp_path / "made" / "amazon" / "images" / "cup")
    tar_of(tmp_path / "made", "amazon", served / "amazon.tgz")
    monkeypatch.setattr(Office31, "ARCHIVES", {"amazon": Remote(f"{url}/amazon.tgz", None)})
    root = tmp_path / "office31"
    message = one_line_error(lambda: build("office31", root, download=True).prepare(["amazon"]))
    assert message.startswith(f"the archive of Office-31 amazon from {url}/amazon.tgz is not as expected (31 class "
                              f"folders where Office-31 has 31 (missing: mug; not Office-31's: cup)); ")
    assert not root.exists()

    (served / "amazon.tgz").write_bytes(b"<html>503 Service Unavailable</html>")
    message = one_line_error(lambda: build("office31", root, download=True).prepare(["amazon"]))
    assert "is neither a zip nor a tar archive" in message and not root.exists()


def test_an_unreachable_server_is_one_line_fast(tmp_path, monkeypatch, no_proxy):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    monkeypatch.setattr(VisDA2017, "ARCHIVES", {"train": Remote(f"http://127.0.0.1:{port}/train.tar", None)})
    root = tmp_path / "visda"
    start = time.monotonic()
    message = one_line_error(lambda: build("visda2017", root, download=True).prepare(["train"]))
    assert time.monotonic() - start < 5
    assert message.startswith("cannot download VisDA-2017 train from 127.0.0.1: no connection (connection refused")
    assert f"download http://127.0.0.1:{port}/train.tar by hand and extract it into {root}" in message
    assert not root.exists()


def test_another_data_root_is_never_downloaded_into(tmp_path, monkeypatch):
    monkeypatch.setattr("dann.downloads.urllib.request.urlopen", lambda *a, **k: pytest.fail("downloaded"))
    message = one_line_error(lambda: build("office_home", tmp_path / "nowhere").domains())
    assert message == (f"--data_root {tmp_path / 'nowhere'}: no such folder; give the folder that holds Office-Home's "
                       f"domain folders, or add --download to download Office-Home into it")
    (tmp_path / "office_home").mkdir()
    message = one_line_error(lambda: build("office_home", tmp_path / "office_home").prepare(["Art"]))
    assert message.startswith(f"{tmp_path / 'office_home' / 'Art'} not found; extract Office-Home's Art archive "
                              f"(https://cloud.tsinghua.edu.cn/f/")
    assert message.endswith(f", size unknown) into {tmp_path / 'office_home'}, or add --download to download it there")
    message = one_line_error(lambda: build("domainnet", tmp_path / "office_home").prepare(["real"]))
    assert "real.zip, 6.1 GB) into" in message


def test_domainnet_downloads_its_zip_and_official_lists(tmp_path, server, monkeypatch):
    served, url = server
    lines = fake_domainnet(tmp_path / "made", domains=("clipart",))
    archive = zip_of(tmp_path / "made", "clipart", served / "clipart.zip")
    for split in ("train", "test"):
        (tmp_path / "made" / f"clipart_{split}.txt").rename(served / f"clipart_{split}.txt")
    monkeypatch.setitem(domainnet.ARCHIVES, "clipart", Remote(f"{url}/clipart.zip", sha256(archive),
                                                              archive.stat().st_size))
    for split in ("train", "test"):
        monkeypatch.setitem(domainnet.LISTS, ("clipart", split),
                            Remote(f"{url}/clipart_{split}.txt", sha256(served / f"clipart_{split}.txt")))
    root = tmp_path / "data" / "domainnet"
    dataset = build("domainnet", root, download=True)
    dataset.prepare(["clipart"])
    assert entries(root) == ["clipart", "clipart_test.txt", "clipart_train.txt"]
    assert sorted(p.name for p in (root / "clipart").iterdir()) == sorted(DOMAINNET_CLASSES)
    assert dataset.classes(["clipart"]) == list(DOMAINNET_CLASSES)
    test = dataset.listing("clipart", "test")
    listed = [f"{p.relative_to(root).as_posix()} {y}" for p, y in zip(test.paths, test.labels)]
    assert listed == lines["clipart", "test"]


def test_visda_downloads_its_tar_with_the_image_list(tmp_path, server, monkeypatch):
    served, url = server
    fake_visda(tmp_path / "made", per_class=1)
    archive = tar_of(tmp_path / "made", "validation", served / "validation.tar", mode="w")
    monkeypatch.setattr(VisDA2017, "ARCHIVES", {"validation": Remote(f"{url}/validation.tar", sha256(archive))})
    root = tmp_path / "visda"
    dataset = build("visda2017", root, download=True)
    dataset.prepare(["validation"])
    assert entries(root) == ["validation"] and (root / "validation" / "image_list.txt").is_file()
    assert dataset.listing("validation").labels == list(range(12))

    (root / "validation" / "image_list.txt").unlink()  # an archive without its list is refused
    (served / "validation.tar").unlink()
    tar_of(root, "validation", served / "validation.tar", mode="w")
    monkeypatch.setattr(VisDA2017, "ARCHIVES", {"validation": Remote(f"{url}/validation.tar", None)})
    message = one_line_error(lambda: build("visda2017", tmp_path / "other", download=True).prepare(["validation"]))
    assert "is not as expected (no validation/image_list.txt)" in message


# ---------------------------------------------------------------------------- end to end

def train(tmp_path: Path, name: str, root: Path, *flags: str, backbone: str = "tiny") -> dict:
    out = tmp_path / f"run-{name}-{'-'.join(flags)}".replace("/", "_")
    args = ["--dataset", name, "--data_root", str(root), "--backbone", backbone, "--pretrained", "none",
            "--max_steps", "2", "--batch_size", "4", "--cpu", "--num_workers", "1", "--no-tsne",
            "--select_rules", "cheap", "--cache_dir", str(tmp_path / "cache"), "--output_dir", str(out), *flags]
    assert main("dann", args) == 0
    return json.loads((out / "results.json").read_text())


def test_office31_trains_end_to_end(tmp_path):
    results = train(tmp_path, "office31", fake_office31(tmp_path / "office31", domains=("amazon", "webcam")),
                    backbone="resnet18")
    assert results["config"]["source"] == "amazon" and results["config"]["target"] == "webcam"
    assert results["classes"] == list(Office31.CLASSES) and len(results["confusion_matrix"]) == 31


def test_folder_dataset_trains_on_office31_as_distributed(tmp_path, monkeypatch):
    register(monkeypatch)
    root = fake_office31(tmp_path / "office31", domains=("amazon", "webcam"))
    results = train(tmp_path, "folder", root, "--source", "amazon", "--target", "webcam")
    assert results["classes"] == list(Office31.CLASSES)


def test_visda_and_domainnet_train_end_to_end(tmp_path, monkeypatch):
    register(monkeypatch)
    fake_visda(tmp_path / "visda", per_class=1)
    results = train(tmp_path, "visda2017", tmp_path / "visda")
    assert (results["config"]["source"], results["config"]["target"]) == ("train", "validation")
    assert results["classes"] == list(VisDA2017.CLASSES)
    fake_domainnet(tmp_path / "domainnet")
    # The confusion figure writes a number in each of its 345 x 345 cells: 3 minutes per run
    # here (dann/figures.py); this test is about the data, not that figure.
    monkeypatch.setattr("dann.figures.plot_confusion", lambda counts, classes, title, path: path.touch())
    runs = {path: train(tmp_path, "domainnet", tmp_path / "domainnet", "--data_path", path)
            for path in ("tensor", "loader")}
    assert runs["tensor"]["data_path"] == "tensor" and runs["loader"]["data_path"] == "loader"
    assert runs["tensor"]["num_target_eval"] == runs["loader"]["num_target_eval"] == 4  # the test list
    assert runs["tensor"]["confusion_matrix"] == runs["loader"]["confusion_matrix"]


# ---------------------------------------------------------------------------- headline figure, PACS pin

def test_mean_class_accuracy_known_answer():
    confusion = [[8, 2, 0],  # class 0: 8 of 10 right
                 [1, 1, 0],  # class 1: 1 of 2
                 [0, 0, 0]]  # class 2: no examples, left out
    assert mean_class_accuracy(confusion) == pytest.approx((0.8 + 0.5) / 2)
    assert mean_class_accuracy(np.eye(4) * 3) == 1.0
    assert mean_class_accuracy(torch.tensor([[0, 5], [5, 0]])) == 0.0
    with pytest.raises(ValueError, match="square"):
        mean_class_accuracy([[1, 2, 3]])
    with pytest.raises(ValueError, match="no examples"):
        mean_class_accuracy([[0, 0], [0, 0]])


def test_every_dataset_names_its_headline_figure():
    figures = {name: plugins.load(plugins.DATASETS, name).headline for name in plugins.DATASETS}
    assert figures.pop("visda2017") == "mean_class_acc"
    assert set(figures.values()) == {"acc"}


def test_pacs_is_downloaded_at_a_pinned_hub_revision(tmp_path, monkeypatch):
    from dann.datasets import pacs
    assert re.fullmatch(r"[0-9a-f]{40}", pacs.REVISION)
    monkeypatch.setattr("dann.downloads.require_online", lambda *a, **k: None)
    asked = {}

    def load_dataset(path, **kwargs):
        asked.update(path=path, **kwargs)
        raise ConnectionError("offline test")
    monkeypatch.setattr("datasets.load_dataset", load_dataset)
    with pytest.raises(UserError, match="ConnectionError: offline test"):
        pacs.download_pacs(tmp_path / "PACS")
    assert asked == {"path": "flwrlabs/pacs", "split": "train", "revision": pacs.REVISION}

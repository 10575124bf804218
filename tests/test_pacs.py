"""PACS on disk: the real dataset's counts and classes, class checks, the Hub download."""
import pytest
from PIL import Image

from conftest import write_tiny_pacs

from dann.datasets import folder as pacs
from dann.datasets.pacs import download_pacs
from dann.errors import UserError

REAL_COUNTS = {"photo": 1670, "art_painting": 2048, "cartoon": 2344, "sketch": 3929}
CLASSES = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]


def test_real_pacs_counts_and_one_class_list(real_pacs):
    domains = [pacs.list_domain(real_pacs, d) for d in REAL_COUNTS]
    assert {d.name: len(d.paths) for d in domains} == REAL_COUNTS
    assert pacs.check_same_classes(domains) == CLASSES
    assert all(d.classes == CLASSES for d in domains)


def test_sketch_png_decodes_to_rgb(real_pacs):
    sketch = pacs.list_domain(real_pacs, "sketch")
    array = pacs.decode_image(sketch.paths[0])
    assert array.shape == (3, pacs.BASE_SIZE, pacs.BASE_SIZE) and array.dtype.name == "uint8"


def test_domains_with_different_classes_are_refused(tmp_path):
    root = write_tiny_pacs(tmp_path / "PACS", domains=("photo",), classes=("dog", "horse"))
    write_tiny_pacs(root, domains=("sketch",), classes=("dog", "guitar"))
    domains = [pacs.list_domain(root, "photo"), pacs.list_domain(root, "sketch")]
    with pytest.raises(UserError, match=r"only in photo: \['horse'\]; only in sketch: \['guitar'\]"):
        pacs.check_same_classes(domains)


def test_non_image_files_are_ignored(tiny_pacs):
    (tiny_pacs / "photo" / "dog" / "notes.txt").write_text("not an image")
    (tiny_pacs / "photo" / "dog" / ".DS_Store").write_bytes(b"\0\0")
    files = pacs.list_domain(tiny_pacs, "photo")
    assert len(files.paths) == 6 and all(p.suffix == ".jpg" for p in files.paths)


def test_missing_domain_folder_says_where(tiny_pacs):
    with pytest.raises(UserError, match=r"cartoon not found .*--data_root"):
        pacs.list_domain(tiny_pacs, "cartoon")


def write_hub_format(folder, tiny_root):
    """A local dataset in the Hub's format: columns image, domain (str), label (ClassLabel)."""
    import datasets
    rows = {"image": [], "domain": [], "label": []}
    for domain in ("photo", "sketch"):
        for label, name in enumerate(["dog", "horse"]):
            for path in sorted((tiny_root / "photo" / name).iterdir()):
                rows["image"].append(str(path))
                rows["domain"].append(domain)
                rows["label"].append(label)
    features = datasets.Features({"image": datasets.Image(), "domain": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["dog", "horse"])})
    table = datasets.Dataset.from_dict(rows, features=features)
    (folder / "data").mkdir(parents=True)
    table.to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))


def test_download_writes_the_folder_layout(tmp_path, tiny_pacs):
    hub = tmp_path / "hub_copy"
    write_hub_format(hub, tiny_pacs)
    root = tmp_path / "downloaded" / "PACS"
    root.parent.mkdir()
    download_pacs(root, dataset=str(hub))
    photo, sketch = pacs.list_domain(root, "photo"), pacs.list_domain(root, "sketch")
    assert photo.classes == sketch.classes == ["dog", "horse"]
    assert len(photo.paths) == len(sketch.paths) == 6
    original = sorted((tiny_pacs / "photo" / "dog").iterdir())[0]
    assert photo.paths[0].read_bytes() == original.read_bytes()  # written as is, not re-encoded
    assert Image.open(photo.paths[0]).size == (40, 40)
    assert not root.with_name("PACS.partial").exists()


def test_failed_download_is_one_line_naming_path_download_and_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    root = tmp_path / "nowhere" / "PACS"
    with pytest.raises(UserError) as e:
        download_pacs(root)
    message = str(e.value)
    assert "\n" not in message
    assert str(root) in message and "flwrlabs/pacs" in message and "--data_root" in message
    assert not root.exists()

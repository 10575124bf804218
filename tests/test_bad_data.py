"""Bad data, generated here: each case has a defined behaviour and a message naming the file."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_tiny_pacs
from tiny_train import register

from dann.cli import main
from dann.datasets import folder as pacs
from dann.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (see conftest)


def jpeg_bytes(size: int = 40) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), 128, np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def bad_files(folder: Path) -> dict[str, Path]:
    """One of each kind of unreadable image file in `folder`."""
    files = {"truncated": folder / "truncated.jpg", "empty": folder / "empty.jpg",
             "not_an_image": folder / "notes.png", "broken_link": folder / "link.jpg"}
    files["truncated"].write_bytes(jpeg_bytes()[:300])
    files["empty"].write_bytes(b"")
    files["not_an_image"].write_text("not a PNG")
    files["broken_link"].symlink_to(folder / "missing.jpg")
    return files


@pytest.mark.parametrize("kind, reason", [("truncated", "truncated"), ("empty", "empty (0 bytes)"),
                                          ("not_an_image", "cannot identify"),
                                          ("broken_link", "No such file")])
def test_an_unreadable_file_is_named(tmp_path, kind, reason):
    path = bad_files(tmp_path)[kind]
    with pytest.raises(pacs.BadImage) as e:
        pacs.decode_image(path)
    assert str(path) in str(e.value) and reason in str(e.value) and "--skip_bad_images" in str(e.value)


def test_a_file_without_read_permission_is_named(tmp_path, monkeypatch):
    path = tmp_path / "locked.jpg"
    path.write_bytes(jpeg_bytes())
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make the open fail as it would for a user
        real_open = pacs.Image.open
        monkeypatch.setattr(pacs.Image, "open", lambda p, *a, **k: (_ for _ in ()).throw(
            PermissionError(13, "Permission denied", str(p))) if Path(p) == path else real_open(p, *a, **k))
    with pytest.raises(pacs.BadImage, match=f"cannot read image {path}: PermissionError"):
        pacs.decode_image(path)


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "LA", "I;16"])
def test_other_colour_modes_are_converted(tmp_path, mode):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    image = rgb.convert(mode) if mode != "I;16" else rgb.convert("L").convert("I;16")
    path = tmp_path / f"x.{'jpg' if mode in ('L', 'CMYK') else 'png'}"
    image.save(path)
    array = pacs.decode_image(path)
    assert array.shape == (3, pacs.BASE_SIZE, pacs.BASE_SIZE) and array.dtype == np.uint8


def test_transparent_pixels_become_white(tmp_path):
    pixels = np.zeros((40, 40, 4), np.uint8)  # black and fully transparent: a sketch's background
    Image.fromarray(pixels, "RGBA").save(tmp_path / "sketch.png")
    assert (pacs.decode_image(tmp_path / "sketch.png") == 255).all()


def test_stray_and_hidden_files_are_ignored(tiny_pacs):
    folder = tiny_pacs / "photo" / "dog"
    (folder / "notes.txt").write_text("stray")
    (folder / ".DS_Store").write_bytes(b"\0")
    (folder / "._0.jpg").write_bytes(b"\0\5\26\7")  # a macOS resource fork, not a JPEG
    files = pacs.list_domain(tiny_pacs, "photo")
    assert sorted(p.name for p in files.ignored) == [".DS_Store", "._0.jpg", "notes.txt"]
    assert all(p.suffix == ".jpg" and not p.name.startswith(".") for p in files.paths)
    assert len(files.paths) == 6


def test_empty_class_folder_and_missing_class_are_refused(tiny_pacs):
    (tiny_pacs / "photo" / "giraffe").mkdir()
    with pytest.raises(UserError, match=f"class folder {tiny_pacs / 'photo' / 'giraffe'} holds no images"):
        pacs.list_domain(tiny_pacs, "photo")
    (tiny_pacs / "photo" / "giraffe" / "0.jpg").write_bytes(jpeg_bytes())
    domains = [pacs.list_domain(tiny_pacs, d) for d in ("photo", "art_painting")]
    with pytest.raises(UserError, match=r"only in photo: \['giraffe'\]"):
        pacs.check_same_classes(domains)


def tiny_flags(data: Path, out: Path, data_path: str, *extra: str) -> list[str]:
    return ["--cpu", "--backbone", "tiny", "--pretrained", "none", "--data_root", str(data), "--batch_size", "2",
            "--epochs", "1", "--num_workers", "0", "--data_path", data_path,
            "--cache_dir", str(data.parent / "cache"), "--output_dir", str(out), *extra]


@pytest.fixture
def tiny_train(monkeypatch):
    register(monkeypatch)


@pytest.mark.parametrize("data_path", ["tensor", "loader"])
def test_a_bad_file_stops_before_training_or_is_skipped(tmp_path, tiny_train, capsys, data_path):
    data = write_tiny_pacs(tmp_path / "PACS")
    bad = bad_files(data / "art_painting" / "horse")
    out = tmp_path / "out"
    assert main("dann", tiny_flags(data, out, data_path)) == 1
    captured = capsys.readouterr()
    error = captured.err.strip().splitlines()[-1]
    assert error.startswith("error: cannot read 4 images of art_painting: "), error
    assert all(f"{p}: " in error for p in bad.values())  # every one named, in one line
    assert "epoch 1" not in captured.out  # found by the validation pass, not mid-epoch

    assert main("dann", tiny_flags(data, out, data_path, "--skip_bad_images")) == 0
    err = capsys.readouterr().err
    assert all(str(p) in err for p in bad.values())
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["skipped_images"]) == sorted(str(p) for p in bad.values())
    assert results["num_target_eval"] == 6  # the 6 good target images, the 4 bad left out

    # A second run reads the cached list of bad files and says the same.
    assert main("dann", tiny_flags(data, tmp_path / "again", data_path)) == 1
    assert "cannot read 4 images of art_painting: " in capsys.readouterr().err

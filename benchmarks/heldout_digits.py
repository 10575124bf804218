"""Held-out digits: MNIST-M on a folder of photos this project never tuned or measured on, as a
`--dataset folder` tree, to check that the digits table's recipes travel (docs/RESULTS.md,
"Held-out check"). The DANN paper blends onto BSDS500's photos; the shipped benchmark onto 10.

    python benchmarks/heldout_digits.py --photos ../shared/data/PACS/photo --out runs/heldout/data
    python sweep.py table --recipes sweeps/tables/digits.yaml --dataset folder \\
        --pairs mnist:mnist_m_photos,syn:mnist_m_photos --out runs/heldout --runs_per_gpu 2 \\
        --row "trained on source" --row "DANN (chosen)" --row "DANN (reference)" ... -- --data_root runs/heldout/data

Writes <out>/<domain>/<digit>/<index>.png for `mnist` and `syn` (the shipped table's domains,
train and test splits together: a folder dataset is transductive) and `mnist_m_photos` (mnist's
digits blended |patch - digit| onto patches of the photos, as dann/datasets/shipped.py builds
mnist_m), and <out>/mnist_m_photos.json: the photo each patch came from.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from einops import rearrange
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dann.datasets import shipped  # noqa: E402
from dann.datasets.folder import default_cache_dir, is_image  # noqa: E402
from dann.errors import UserError, one_line  # noqa: E402

# A patch at the largest zoom (4 photo pixels a pixel, taken from the half-size photo at 2) reaches
# 32 / 2 * sqrt(2) * 2 pixels from its centre there: the half-size photo's shorter side must exceed twice that.
MIN_SIDE = 2 * 2 * 46


def photo_files(folder: Path) -> list[Path]:
    """Every image file under `folder`, in a fixed order."""
    if not folder.is_dir():
        raise UserError(f"--photos {folder}: no such folder; give a folder of photos (e.g. ../shared/data/PACS/photo)")
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image(p))


def load_photos(files: list[Path]) -> tuple[list[list[Image.Image]], list[Path]]:
    """The photos large enough to cut patches from (full and half size), and their files."""
    photos, kept = [], []
    for path in files:
        levels = shipped.photo(path)
        if min(levels[0].size) >= MIN_SIDE:
            photos.append(levels)
            kept.append(path)
    if not kept:
        raise UserError(f"--photos: none of the {len(files)} images is at least {MIN_SIDE} pixels on its shorter "
                        f"side, which a patch at 4 photo pixels a pixel needs; give larger photos")
    return photos, kept


def domain_arrays(arrays: dict, domain: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A shipped domain's train and test splits together: images, labels, and each one's index."""
    parts = [[arrays[f"{domain}_{split}_{key}"] for split in ("train", "test")] for key in ("images", "labels", "index")]
    return tuple(np.concatenate(part) for part in parts)


def image_name(label: int, index: int) -> str:
    """An image's path inside its domain folder: <digit>/<index>.png."""
    return f"{label}/{index:05d}.png"


def write_domain(out: Path, domain: str, images: np.ndarray, labels: np.ndarray, index: np.ndarray) -> None:
    """<out>/<domain>/<digit>/<index>.png for each (3, 32, 32) uint8 image."""
    for digit in np.unique(labels):
        (out / domain / str(digit)).mkdir(parents=True, exist_ok=True)
    for image, label, i in zip(images, labels, index):
        Image.fromarray(rearrange(image, "c h w -> h w c")).save(out / domain / image_name(label, i))


def build(photos_dir: Path, out: Path, cache_dir: Path, seed: int = 0, limit: int = 0) -> dict:
    """Write the three domains (the first `limit` images of each, 0: all) and return what was written."""
    files = photo_files(photos_dir)
    photos, kept = load_photos(files)
    arrays = shipped.load(cache_dir)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(photos))  # the photos in turn, in a shuffled order (PACS's are sorted by class)
    domains = {domain: tuple(a[:limit or None] for a in domain_arrays(arrays, domain)) for domain in ("mnist", "syn")}
    for domain, (images, labels, index) in domains.items():
        write_domain(out, domain, images, labels, index)
    written = {domain: len(images) for domain, (images, _, _) in domains.items()}
    images, labels, index = domains["mnist"]
    background, which = shipped.patches([photos[k] for k in order], len(images), rng)
    blended = np.abs(background - images).clip(0, 255).round().astype(np.uint8)
    write_domain(out, "mnist_m_photos", blended, labels, index)
    written["mnist_m_photos"] = len(images)
    sources = [str(kept[order[k]].relative_to(photos_dir)) for k in which]
    manifest = {"photos_dir": str(photos_dir), "photos": len(set(sources)), "photos_skipped_small": len(files) - len(kept),
                "patches": len(sources), "patch_photo": dict(zip((image_name(label, i) for label, i in zip(labels, index)),
                                                                 sources))}
    (out / "mnist_m_photos.json").write_text(json.dumps(manifest, indent=1))
    return {"written": written, "photos": manifest["photos"], "photos_skipped_small": manifest["photos_skipped_small"]}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--photos", type=Path, default=Path("../shared/data/PACS/photo"),
                        help="a folder of photos (searched recursively), e.g. PACS's photo domain or BSDS500's images")
    parser.add_argument("--out", type=Path, default=Path("runs/heldout/data"), help="the folder dataset to write")
    parser.add_argument("--cache_dir", type=Path, default=None, help="digits_shipped's cache (default: the training scripts')")
    parser.add_argument("--seed", type=int, default=0, help="of the patches' order, places, scales and angles")
    parser.add_argument("--limit", type=int, default=0, help="write only the first N images of each domain (0: all)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    report = build(args.photos, args.out, args.cache_dir or default_cache_dir(), args.seed, args.limit)
    print(f"wrote {report['written']} images to {args.out} (mnist_m_photos on {report['photos']} distinct photos, "
          f"{report['photos_skipped_small']} too small left out)")
    return report


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        sys.exit(1)

"""PACS (Li, Yang, Song, Hospedales, "Deeper, Broader and Artier Domain Generalization",
ICCV 2017): four domains of seven classes, the first homework's data. A folder dataset
(`Folder`) that knows its domains and downloads itself from the Hugging Face Hub
(`flwrlabs/pacs` at a pinned commit) into the default folder, or into --data_root with --download.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

from dann.datasets.folder import Folder
from dann.errors import UserError, note

DOMAINS = ("photo", "art_painting", "cartoon", "sketch")
HUB_DATASET = "flwrlabs/pacs"
# The Hub commit downloaded, so that a later change to the Hub copy cannot change the data
# under a result: "Update README.md" of flwrlabs/pacs, whose data/ holds the parquet file (as
# the Hub's file browser shows at /datasets/flwrlabs/pacs/tree/<this sha>).
REVISION = "394113073258ead631f617d2e13bb377c0715c4b"


class Pacs(Folder):
    default_pair = ("photo", "art_painting")
    default_root = "data/PACS"

    def domains(self) -> list[str]:
        if not self.root.exists() and not self.may_download:
            raise UserError(f"--data_root {self.root}: no such folder; give the folder that holds "
                            f"PACS's <domain>/<class>/<image>, or add --download to download PACS into it")
        return list(DOMAINS)

    def prepare(self, domains: list[str]) -> None:
        if not self.root.exists():
            note(f"{self.root} not found: downloading {HUB_DATASET} from the Hugging Face Hub")
            download_pacs(self.root)


def download_pacs(root: str | Path, dataset: str = HUB_DATASET, revision: str | None = REVISION) -> None:
    """Write the Hub copy of PACS (`image`, `domain`, `label` columns) as <root>/<domain>/<class>/.

    `dataset` is anything `datasets.load_dataset` accepts: the Hub id (read at `revision`), or
    a local folder of the same format (the tests use one). Files go to a temporary folder
    first, so an interrupted download never leaves a half-filled `root`.
    """
    root = Path(root)
    fix = "download PACS on a machine with internet and pass --data_root PATH to its folder"
    on_hub = not Path(dataset).exists()
    if on_hub:  # fail in seconds when the Hub is unreachable
        from dann.downloads import require_online
        require_online(f"PACS ({dataset})", "https://huggingface.co", f"wanted to write {root}; {fix}")
    try:
        import datasets  # imported here: only a first run without data needs it
        table = datasets.load_dataset(dataset, split="train", revision=revision if on_hub else None)
    except Exception as e:  # network, auth and format errors all end the same way
        raise UserError(
            f"downloading {dataset} into {root} from the Hugging Face Hub failed "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); {fix}") from None
    label_feature = table.features["label"]
    # Write the original encoded bytes (no re-encoding): JPEG stays JPEG, sketch PNG stays PNG.
    table = table.cast_column("image", datasets.Image(decode=False))
    tmp = root.with_name(root.name + ".partial")
    counters: dict[tuple[str, str], int] = {}
    for row in table:
        label = row["label"]
        class_name = label_feature.int2str(label) if hasattr(label_feature, "int2str") else str(label)
        key = (row["domain"], class_name)
        counters[key] = counters.get(key, 0) + 1
        data = row["image"]["bytes"] or Path(row["image"]["path"]).read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            suffix = {"JPEG": ".jpg", "PNG": ".png"}.get(image.format, f".{image.format.lower()}")
        folder = tmp / row["domain"] / class_name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{counters[key]:05d}{suffix}").write_bytes(data)
    (tmp / "SOURCE.json").write_text(json.dumps({"dataset": dataset, "revision": revision if on_hub else None,
                                                 "images": len(table)}))
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(root)

"""VisDA-2017, the classification track (Peng et al., "VisDA: The Visual Domain Adaptation
Challenge", 2017): 12 classes, from synthetic renders of 3D models (`train`, 152,397 images) to
real photos cropped from COCO (`validation`, 55,388), the domains named after their folders.

As distributed (github.com/VisionLearningGroup/taskcv-2017-public, classification/):
train.tar and validation.tar, each extracting to <split>/<class>/<image> with an
<split>/image_list.txt of `<class>/<file> <label>` lines, read here. Transductive, as the
challenge ran it: the whole validation domain is the unlabeled training set and the test
set. Papers report the mean over classes of the per-class accuracy (`headline`). No checksum
of the archives is published: an archive is checked by what it holds once extracted.
"""
from __future__ import annotations

from pathlib import Path

from dann.datasets.named import ImageListDataset
from dann.downloads import Remote

LIST = "image_list.txt"


class VisDA2017(ImageListDataset):
    title = "VisDA-2017"
    default_pair = ("train", "validation")
    default_root = "data/visda2017"
    headline = "mean_class_acc"
    DOMAINS = ("train", "validation")
    CLASSES = ("aeroplane", "bicycle", "bus", "car", "horse", "knife", "motorcycle", "person", "plant",
               "skateboard", "train", "truck")  # in label order (the challenge's category ids)
    ARCHIVES = {  # the challenge's own server; checksums: none published
        "train": Remote("http://csr.bu.edu/ftp/visda17/clf/train.tar", None),
        "validation": Remote("http://csr.bu.edu/ftp/visda17/clf/validation.tar", None),
    }

    def list_file(self, domain: str, split: str) -> Path:
        return self.root / domain / LIST

    def image_roots(self, domain: str) -> list[Path]:
        return [self.root / domain, self.root]  # the challenge's lists; lists with the folder in the path

    def check_extracted(self, tree: Path, domain: str) -> str | None:
        return super().check_extracted(tree, domain) or (
            None if (tree / domain / LIST).is_file() else f"no {domain}/{LIST}")

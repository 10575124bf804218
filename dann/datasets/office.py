"""Office-31 (Saenko et al., ECCV 2010) and Office-Home (Venkateswara et al., CVPR 2017):
folder datasets with their own domains and classes, transductive like PACS (the whole
target domain is the unlabeled training set and the test set).

- `office31`: amazon, dslr, webcam; 31 classes; as distributed, <domain>/images/<class>/*.jpg.
- `office_home`: Art, Clipart, Product, Real_World (the papers' Ar, Cl, Pr, Rw); 65 classes;
  <domain>/<class>/*.jpg. The authors' own zip (OfficeHomeDataset_10072016) names the last
  folder "Real World": it is read as the domain Real_World.

Both download one archive per domain: TLlib's (tllib/vision/datasets/office31.py,
officehome.py), which re-packs the authors' Google Drive archives by domain. No source
publishes a checksum of them, so an archive is checked by what it holds once extracted
(the domain folder and exactly the dataset's class folders) before it is moved into place.
"""
from __future__ import annotations

from dann.datasets.named import NamedFolder
from dann.downloads import Remote

TSINGHUA = "https://cloud.tsinghua.edu.cn/f/{}/?dl=1"  # TLlib's mirror


class Office31(NamedFolder):
    title = "Office-31"
    default_pair = ("amazon", "webcam")
    default_root = "data/office31"
    DOMAINS = ("amazon", "dslr", "webcam")
    CLASSES = (
        "back_pack", "bike", "bike_helmet", "bookcase", "bottle", "calculator", "desk_chair", "desk_lamp",
        "desktop_computer", "file_cabinet", "headphones", "keyboard", "laptop_computer", "letter_tray",
        "mobile_phone", "monitor", "mouse", "mug", "paper_notebook", "pen", "phone", "printer", "projector",
        "punchers", "ring_binder", "ruler", "scissors", "speaker", "stapler", "tape_dispenser", "trash_can")
    ARCHIVES = {  # checksums: none published (see the module's docstring)
        "amazon": Remote(TSINGHUA.format("ec12dfcddade43ab8101"), None),
        "dslr": Remote(TSINGHUA.format("a41d818ae2f34da7bb32"), None),
        "webcam": Remote(TSINGHUA.format("8a41009a166e4131adcd"), None),
    }


class OfficeHome(NamedFolder):
    title = "Office-Home"
    default_pair = ("Art", "Clipart")
    default_root = "data/office_home"
    DOMAINS = ("Art", "Clipart", "Product", "Real_World")
    CLASSES = tuple(sorted((  # sorted as the class folders are listed, which gives the labels
        "Alarm_Clock", "Backpack", "Batteries", "Bed", "Bike", "Bottle", "Bucket", "Calculator", "Calendar",
        "Candles", "Chair", "Clipboards", "Computer", "Couch", "Curtains", "Desk_Lamp", "Drill", "Eraser",
        "Exit_Sign", "Fan", "File_Cabinet", "Flipflops", "Flowers", "Folder", "Fork", "Glasses", "Hammer",
        "Helmet", "Kettle", "Keyboard", "Knives", "Lamp_Shade", "Laptop", "Marker", "Monitor", "Mop", "Mouse",
        "Mug", "Notebook", "Oven", "Pan", "Paper_Clip", "Pen", "Pencil", "Postit_Notes", "Printer", "Push_Pin",
        "Radio", "Refrigerator", "Ruler", "Scissors", "Screwdriver", "Shelf", "Sink", "Sneakers", "Soda",
        "Speaker", "Spoon", "TV", "Table", "Telephone", "ToothBrush", "Toys", "Trash_Can", "Webcam")))
    ARCHIVES = {  # checksums: none published (see the module's docstring)
        "Art": Remote(TSINGHUA.format("6a006656b9a14567ade2"), None),
        "Clipart": Remote(TSINGHUA.format("ae88aa31d2d7411dad79"), None),
        "Product": Remote(TSINGHUA.format("f219b0ff35e142b3ab48"), None),
        "Real_World": Remote(TSINGHUA.format("6c19f3f15bb24ed3951a"), None),
    }

    def folder_of(self, domain: str) -> str:
        if domain == "Real_World" and not (self.root / domain).is_dir() and (self.root / "Real World").is_dir():
            return "Real World"  # the authors' zip
        return domain

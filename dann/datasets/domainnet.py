"""DomainNet (Peng et al., "Moment Matching for Multi-Source Domain Adaptation", ICCV 2019),
the cleaned version: six domains (clipart, infograph, painting, quickdraw, real, sketch) of 345
classes, about 0.6 million images.

As distributed (ai.bu.edu/M3SDA): one zip per domain extracting to <domain>/<class>/<image>,
and per domain the official split lists <domain>_train.txt and <domain>_test.txt, lines
`<domain>/<class>/<file> <label>`, kept in the dataset's folder (or in its image_list/, as TLlib
keeps them). Not transductive: the source and the target train on their train lists (the
target's unlabeled), and the target is tested on its test list, as papers report it.
The domains are too large to keep decoded in memory on most machines: --data_path auto decodes
them in DataLoader workers every epoch when they do not fit (dann.datasets.choose_data_path).
"""
from __future__ import annotations

from pathlib import Path

from dann.datasets.named import ImageListDataset, fetch_list
from dann.downloads import Remote

BASE = "http://csr.bu.edu/ftp/visda/2019/multi-source"
# Sizes and sha256: TensorFlow Datasets (image_classification/domainnet/checksums.tsv). A second
# source, the Mila datasets mirror (datasets-mila/datasets--domainnet, md5sums and git-annex
# keys), gives md5s of files of the same sizes, so two sources agree on what was published.
ARCHIVES = {domain: Remote(f"{BASE}/{path}", f"sha256:{sha256}", size) for domain, path, size, sha256 in (
    ("clipart", "groundtruth/clipart.zip", 1270909081, "f8f248a3e8bbc9868c523ae24e6601b4c2ad102afc60c0efeb4f3255df22354d"),
    ("infograph", "infograph.zip", 4338659804, "891e14f476317e97b6f06d6498c11d0a5b8d0c8b57210765ed9beb072da611fa"),
    ("painting", "groundtruth/painting.zip", 3679366174, "fa47e6d405503ea0286cabd767f176bd30e988b63ddd7b9db16cf030c9770015"),
    ("quickdraw", "quickdraw.zip", 459920701, "9f37df2a8c3733703dbb35ad9964202a65f675ca30137756457537536b485d84"),
    ("real", "real.zip", 6062039589, "d7fe010b430c5b510f85d657d38c4a1924822695fabea4fef57bd00dba251d63"),
    ("sketch", "sketch.zip", 2633992926, "23a7dbae7016b343e934399beaa8a68728fb5e570ebe2c71df9b75cf91c499fc"),
)}
LISTS = {(domain, split): Remote(f"{BASE}/domainnet/txt/{domain}_{split}.txt", f"sha256:{sha256}", size)
         for domain, split, size, sha256 in (
    ("clipart", "train", 1443819, "affdadf5f95a7583e6b98030a3d35007e2613ee4dd942393c5a705ec2b429312"),
    ("clipart", "test", 628917, "62c8e36aaba1c41ad9e249099739707220a44c08f167b37ef420f34a31628a6b"),
    ("infograph", "train", 1683098, "36b44cbd41a2915e0dc73b4f4be8862a6f3c220f93c8d63fb2439beeae3aefda"),
    ("infograph", "test", 728028, "413cfa54ac92e7e6b242f4f09fbd9c8ace85c4deaf3cb6c81ff6b68264460136"),
    ("painting", "train", 2241901, "f1da38d50a702fddf1329f85bc607d7a2abcae7e6aec75e1fd49cc1bd340d47b"),
    ("painting", "test", 971888, "11472b13b5188e09f06918b12eebb660588c97a20e43e268d9b02e3e37eb8f97"),
    ("quickdraw", "train", 5164600, "3a5edd3bc215772010eebc87f158707703dd7e48091d13b816af81326a9d1c0f"),
    ("quickdraw", "test", 2213400, "2a00a60650a453c65c356da748fec54084a197272137c440e7d52d08947357bf"),
    ("real", "train", 4440944, "19d483256d24aef19e581b65eda8333fd918aef3eb733fe499ff384120e3a289"),
    ("real", "test", 1911327, "2b3f75bcde309aeb5931292084b2162e936b5f189e3bb1ad716f0f74c460864c"),
    ("sketch", "train", 1960222, "72f4bc6afa5702a1ccba800d0053c1427de87439dfaf246dbc9a2e71abfec54f"),
    ("sketch", "test", 850581, "3fb48fca18c507c4321f007c3f62b308ec232ff6928cbfe2af64e76ec366e840"),
)}
# In label order, as the lists number them: sorted ignoring case, "_" and "-" (t-shirt is 327).
CLASSES = tuple("""
    aircraft_carrier airplane alarm_clock ambulance angel animal_migration ant anvil apple arm
    asparagus axe backpack banana bandage barn baseball baseball_bat basket basketball bat bathtub
    beach bear beard bed bee belt bench bicycle binoculars bird birthday_cake blackberry blueberry
    book boomerang bottlecap bowtie bracelet brain bread bridge broccoli broom bucket bulldozer bus
    bush butterfly cactus cake calculator calendar camel camera camouflage campfire candle cannon
    canoe car carrot castle cat ceiling_fan cello cell_phone chair chandelier church circle clarinet
    clock cloud coffee_cup compass computer cookie cooler couch cow crab crayon crocodile crown
    cruise_ship cup diamond dishwasher diving_board dog dolphin donut door dragon dresser drill
    drums duck dumbbell ear elbow elephant envelope eraser eye eyeglasses face fan feather fence
    finger fire_hydrant fireplace firetruck fish flamingo flashlight flip_flops floor_lamp flower
    flying_saucer foot fork frog frying_pan garden garden_hose giraffe goatee golf_club grapes grass
    guitar hamburger hammer hand harp hat headphones hedgehog helicopter helmet hexagon hockey_puck
    hockey_stick horse hospital hot_air_balloon hot_dog hot_tub hourglass house house_plant
    hurricane ice_cream jacket jail kangaroo key keyboard knee knife ladder lantern laptop leaf leg
    light_bulb lighter lighthouse lightning line lion lipstick lobster lollipop mailbox map marker
    matches megaphone mermaid microphone microwave monkey moon mosquito motorbike mountain mouse
    moustache mouth mug mushroom nail necklace nose ocean octagon octopus onion oven owl paintbrush
    paint_can palm_tree panda pants paper_clip parachute parrot passport peanut pear peas pencil
    penguin piano pickup_truck picture_frame pig pillow pineapple pizza pliers police_car pond pool
    popsicle postcard potato power_outlet purse rabbit raccoon radio rain rainbow rake
    remote_control rhinoceros rifle river roller_coaster rollerskates sailboat sandwich saw
    saxophone school_bus scissors scorpion screwdriver sea_turtle see_saw shark sheep shoe shorts
    shovel sink skateboard skull skyscraper sleeping_bag smiley_face snail snake snorkel snowflake
    snowman soccer_ball sock speedboat spider spoon spreadsheet square squiggle squirrel stairs star
    steak stereo stethoscope stitches stop_sign stove strawberry streetlight string_bean submarine
    suitcase sun swan sweater swing_set sword syringe table teapot teddy-bear telephone television
    tennis_racquet tent The_Eiffel_Tower The_Great_Wall_of_China The_Mona_Lisa tiger toaster toe
    toilet tooth toothbrush toothpaste tornado tractor traffic_light train tree triangle trombone
    truck trumpet t-shirt umbrella underwear van vase violin washing_machine watermelon waterslide
    whale wheel windmill wine_bottle wine_glass wristwatch yoga zebra zigzag
""".split())


class DomainNet(ImageListDataset):
    title = "DomainNet"
    transductive = False
    default_pair = ("real", "clipart")
    default_root = "data/domainnet"
    DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
    CLASSES = CLASSES
    ARCHIVES = ARCHIVES

    def list_file(self, domain: str, split: str) -> Path:
        name = f"{domain}_{split}.txt"
        tllib = self.root / "image_list" / name
        return tllib if tllib.is_file() and not (self.root / name).is_file() else self.root / name

    def prepare(self, domains: list[str]) -> None:
        super().prepare(domains)  # the images
        for domain in domains:
            for split in ("train", "test"):
                if not self.list_file(domain, split).is_file():
                    fetch_list(self, LISTS[domain, split], self.list_file(domain, split), f"{domain}_{split}.txt")

"""FixMatch's weak and strong views (dann/augment.py): each RandAugment op against torchvision's
functional op image by image, per-image randomness from the generator alone, what weak's
flip and shift may do, and Cutout's area."""
from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from dann.augment import OPS, apply_op, rand_augment, random_cutout, strong, weak

pytestmark = pytest.mark.usefixtures("one_thread")


def images(b=8, size=32, seed=0) -> torch.Tensor:
    """Smooth random uint8 images (B, 3, S, S): photo-like neighbourhoods for Sharpness."""
    noise = torch.rand(b, 3, size // 4, size // 4, generator=torch.Generator().manual_seed(seed))
    x = torch.nn.functional.interpolate(noise, size=size, mode="bilinear") * 255
    return x.round().to(torch.uint8)


def gen(seed=0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def affine(**kwargs):
    """torchvision's affine with the defaults our ops keep (fill as ours)."""
    args = dict(angle=0.0, translate=[0.0, 0.0], scale=1.0, shear=[0.0, 0.0], fill=127) | kwargs
    return lambda im: TF.affine(im, **args)


S = 32
REFERENCES = [  # (op, magnitude, torchvision on one image)
    *[(name, m, lambda im, f=f, m=m: f(im, m)) for m in (0.05, 0.5, 0.95) for name, f in (
        ("Brightness", TF.adjust_brightness), ("Color", TF.adjust_saturation),
        ("Contrast", TF.adjust_contrast), ("Sharpness", TF.adjust_sharpness))],
    *[("Posterize", bits, lambda im, bits=bits: TF.posterize(im, bits)) for bits in (4, 6, 8)],
    *[("Solarize", t, lambda im, t=t: TF.solarize(im, t)) for t in (0, 128, 255)],
    ("Equalize", None, TF.equalize),
    ("AutoContrast", None, TF.autocontrast),
    ("Identity", None, lambda im: im),
    *[("Rotate", a, affine(angle=a)) for a in (-30.0, 12.5, 30.0)],
    *[("ShearX", s, affine(shear=[math.degrees(math.atan(s)), 0.0])) for s in (-0.3, 0.2)],
    *[("ShearY", s, affine(shear=[0.0, math.degrees(math.atan(s))])) for s in (-0.3, 0.2)],
    *[("TranslateX", t, affine(translate=[t * S, 0.0])) for t in (-0.3, 0.125)],
    *[("TranslateY", t, affine(translate=[0.0, t * S])) for t in (-0.3, 0.125)],
]


@pytest.mark.parametrize("name, magnitude, reference", REFERENCES,
                         ids=[f"{n}-{m}" for n, m, _ in REFERENCES])
def test_each_op_equals_torchvision_image_by_image(name, magnitude, reference):
    x = images(size=S)
    ours = apply_op(name, x, magnitude)
    theirs = torch.stack([reference(im) for im in x])
    assert ours.dtype == torch.uint8 and ours.shape == x.shape
    difference = (ours.int() - theirs.int()).abs()
    same = (difference == 0).float().mean()
    if name in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"):
        # nearest sampling: where a pixel falls exactly halfway, float rounding picks either side
        assert same > 0.99
    else:  # float rounding may put a blend on the other side of an integer: off by one, rarely
        assert difference.max() <= 1 and same > 0.98


def test_one_magnitude_per_image():
    x = images(b=3)
    factors = torch.tensor([0.05, 0.5, 0.95])
    ours = apply_op("Brightness", x, factors)
    for im, out, f in zip(x, ours, factors.tolist()):
        assert torch.equal(out, TF.adjust_brightness(im, f))


def test_equalize_on_few_values_and_flat_channels():
    x = torch.tensor([0, 50, 200], dtype=torch.uint8)[torch.randint(0, 3, (4, 3, 16, 16), generator=gen())]
    x[1, 2] = 77  # a flat channel: PIL leaves it as it is
    x[2, :, :2] = 255
    assert torch.equal(apply_op("Equalize", x), torch.stack([TF.equalize(im) for im in x]))
    assert torch.equal(apply_op("Equalize", x)[1, 2], x[1, 2])


@pytest.mark.parametrize("name, magnitude", [("Identity", None), ("AutoContrast", None), ("Equalize", None),
                                             ("Sharpness", 0.05), ("Posterize", 8), ("Rotate", 0.0)])
def test_ops_that_keep_a_constant_image(name, magnitude):
    x = torch.full((2, 3, 16, 16), 93, dtype=torch.uint8)
    x[1, 1] = 200
    assert torch.equal(apply_op(name, x, magnitude), x)


@pytest.mark.parametrize("size", [32, 40])
@pytest.mark.parametrize("hflip", [True, False])
def test_shapes_and_dtype_kept(size, hflip):
    x = images(b=5, size=size)
    for y in (weak(x, gen(), hflip=hflip), strong(x, gen(), hflip=hflip)):
        assert y.shape == x.shape and y.dtype == torch.uint8
    assert torch.equal(x, images(b=5, size=size))  # the input is not written to


@pytest.mark.parametrize("view", [weak, strong])
def test_same_seed_same_bytes_other_seed_other_bytes(view):
    x = images(b=16)
    assert torch.equal(view(x, gen(1), hflip=True), view(x, gen(1), hflip=True))
    assert not torch.equal(view(x, gen(1), hflip=True), view(x, gen(2), hflip=True))


def test_each_image_of_a_batch_draws_its_own_ops():
    x = (images(b=1) // 3).expand(64, -1, -1, -1)  # values below 127: a gray corner is fill
    y = rand_augment(x, gen(), num_ops=1)
    unchanged = (y == x).flatten(1).all(1).sum()  # Identity (1 in 14), Posterize 8 bits, ...
    moved = (y[:, :, [0, 0, -1, -1], [0, -1, 0, -1]] == 127).flatten(1).any(1).sum()  # 5 geometric ops in 14
    distinct = len({bytes(im.flatten().tolist()) for im in y})
    # one op for the whole batch would leave all or none unchanged, all or none moved
    assert 1 <= unchanged <= 25 and 5 <= moved <= 50 and distinct > 30


def asymmetric(b=64, size=16) -> torch.Tensor:
    """Every pixel of channel 0 a different value: any flip or shift shows."""
    x = torch.arange(size * size, dtype=torch.uint8).view(1, 1, size, size).expand(b, 3, -1, -1)
    return x.contiguous()


def test_hflip_false_never_flips_and_true_flips_some():
    x = asymmetric()
    assert torch.equal(weak(x, gen(), hflip=False, translate=0), x)
    y = weak(x, gen(), hflip=True, translate=0)
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    kept = (y == x).flatten(1).all(1)
    assert (flipped | kept).all() and 10 < flipped.sum() < 54


@pytest.mark.parametrize("size, translate", [(32, 0.125), (40, 0.25)])
def test_weak_moves_content_by_at_most_translate_times_the_side(size, translate):
    x = torch.zeros(256, 3, size, size, dtype=torch.uint8)
    x[:, :, size // 2, size // 2] = 255
    y = weak(x, gen(), hflip=False, translate=translate)
    where = (y[:, 0] == 255).flatten(1).nonzero()  # (image, position): one dot per image
    assert torch.equal(where[:, 0], torch.arange(256))
    shift = torch.stack([where[:, 1] // size, where[:, 1] % size], 1) - size // 2
    pad = round(translate * size)
    assert shift.abs().max() == pad  # never more, and the whole range is used


def test_weak_is_a_crop_of_the_reflect_padded_image():
    x = asymmetric(b=128)
    y = weak(x, gen(), hflip=False)
    pad = 2  # 0.125 x 16
    padded = torch.nn.functional.pad(x[:1].float(), (pad,) * 4, mode="reflect").to(torch.uint8)  # dcb|abcd
    crops = {(dy, dx): padded[0, :, pad - dy: pad - dy + 16, pad - dx: pad - dx + 16]
             for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1)}
    shifts = [next((s for s, crop in crops.items() if torch.equal(im, crop)), None) for im in y]
    assert None not in shifts and len(set(shifts)) > 15


def test_cutout_covers_the_expected_area():
    x = torch.zeros(1024, 3, 32, 32, dtype=torch.uint8)
    size = 0.5
    y = random_cutout(x, gen(), size)
    assert set(y.unique().tolist()) <= {0, 127} and torch.equal(y[:, 0], y[:, 2])
    # side l = u x size (of S), centre uniform, clipped: E[(l - l^2/4)^2]
    expected = size ** 2 / 3 - size ** 3 / 8 + size ** 4 / 80
    assert (y[:, 0] == 127).float().mean().item() == pytest.approx(expected, rel=0.1)
    assert torch.equal(random_cutout(x, gen(), 0.0), x)


def test_the_pool_and_ranges_are_fixmatchs():
    """The paper's Table 12 (Posterize's [4, 9) floors to 4..8 bits)."""
    ranges = {name: (low, high) for name, (_, low, high) in OPS.items()}
    enhance = (0.05, 0.95)
    assert ranges == {
        "Identity": (None, None), "AutoContrast": (None, None), "Equalize": (None, None),
        "Brightness": enhance, "Color": enhance, "Contrast": enhance, "Sharpness": enhance,
        "Posterize": (4, 9), "Rotate": (-30, 30), "ShearX": (-0.3, 0.3), "ShearY": (-0.3, 0.3),
        "Solarize": (0, 256), "TranslateX": (-0.3, 0.3), "TranslateY": (-0.3, 0.3)}

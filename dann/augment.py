"""FixMatch's weak and strong views of a uint8 batch (B, 3, S, S), per image, on its device.

FixMatch (Sohn et al., NeurIPS 2020): weak = random flip and a shift of up to 12.5% of the
side (reflect padding); strong = weak, then RandAugment "RA" (`num_ops` ops per image from 14,
each with a magnitude drawn uniformly in the ranges of the paper's Table 12), then Cutout.
Ranges: Brightness/Color/Contrast/Sharpness factor [0.05, 0.95], Posterize 4..8 bits, Rotate
[-30, 30] deg, ShearX/Y [-0.3, 0.3], Solarize threshold [0, 256), TranslateX/Y [-0.3, 0.3] x S,
Cutout side [0, 0.5] x S. All randomness comes from the `generator` passed in.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

FILL = 127  # gray, FixMatch's Cutout colour; also what geometric ops move into view


def weak(x: torch.Tensor, generator: torch.Generator, *, hflip: bool,
         translate: float = 0.125) -> torch.Tensor:
    """A random horizontal flip (where `hflip`) and a shift of up to round(translate x S) pixels
    in each direction, per image: FixMatch's flip-and-shift (reflect padding, then a crop)."""
    b, _, h, w = x.shape
    pad = round(translate * min(h, w))
    if not 0 <= pad < min(h, w):
        raise ValueError(f"translate={translate} must be in [0, 1) of the image side")
    dy, dx = torch.randint(-pad, pad + 1, (2, b, 1), device=x.device, generator=generator)
    rows = _reflect(torch.arange(h, device=x.device) - dy, h)  # (B, H)
    cols = _reflect(torch.arange(w, device=x.device) - dx, w)  # (B, W)
    if hflip:
        flip = torch.rand(b, 1, device=x.device, generator=generator) < 0.5
        cols = torch.where(flip, w - 1 - cols, cols)
    x = x[torch.arange(b, device=x.device)[:, None], :, rows].transpose(1, 2)  # whole rows: (B, 3, H, W)
    return x.gather(3, cols[:, None, None, :].expand(-1, x.shape[1], h, -1))


def _reflect(index: torch.Tensor, n: int) -> torch.Tensor:
    """Indices outside [0, n) mirrored without repeating the edge (dcb|abcd), as tf.pad REFLECT."""
    index = index.abs()
    return torch.where(index >= n, 2 * (n - 1) - index, index)


def strong(x: torch.Tensor, generator: torch.Generator, *, hflip: bool, translate: float = 0.125,
           num_ops: int = 2, cutout: float = 0.5) -> torch.Tensor:
    """The weak view, then `num_ops` RandAugment ops per image (op and magnitude drawn per
    image), then Cutout with a side of up to `cutout` x S."""
    x = rand_augment(weak(x, generator, hflip=hflip, translate=translate), generator, num_ops)
    return random_cutout(x, generator, cutout)


def rand_augment(x: torch.Tensor, generator: torch.Generator, num_ops: int = 2) -> torch.Tensor:
    """`num_ops` ops of `OPS` in turn, each image drawing its own op and magnitude (FixMatch's
    RA: the magnitude uniform in the op's range); each op runs once on the images that drew it."""
    x = x.clone()
    b = x.shape[0]
    for _ in range(num_ops):
        choice = torch.randint(len(OPS), (b,), device=x.device, generator=generator)
        level = torch.rand(b, device=x.device, generator=generator)  # in [0, 1): the op's range
        for k, (name, (op, low, high)) in enumerate(OPS.items()):
            index = (choice == k).nonzero().squeeze(1)
            if name == "Identity" or not len(index):
                continue
            magnitude = None if low is None else low + (high - low) * level[index]
            x[index] = op(x[index], magnitude)
    return x


def random_cutout(x: torch.Tensor, generator: torch.Generator, size: float = 0.5) -> torch.Tensor:
    """Per image, a gray square of side uniform in [0, size x S) at a uniformly random centre,
    clipped by the border (FixMatch's Cutout)."""
    b, _, h, w = x.shape
    side, cy, cx = torch.rand(3, b, 1, device=x.device, generator=generator)
    side = side * size * min(h, w)
    centres = torch.arange(max(h, w), device=x.device) + 0.5
    rows = (centres[:h] - cy * h).abs() < side / 2  # (B, H): pixel centres inside the square
    cols = (centres[:w] - cx * w).abs() < side / 2  # (B, W)
    return x.masked_fill(rows[:, None, :, None] & cols[:, None, None, :], FILL)


def apply_op(name: str, x: torch.Tensor, magnitude: float | torch.Tensor | None = None) -> torch.Tensor:
    """One op of `OPS` on every image of x, at a given magnitude (a number or one per image)."""
    op, low, _ = OPS[name]
    if low is not None:
        magnitude = torch.as_tensor(magnitude, dtype=torch.float32, device=x.device).expand(x.shape[0])
    return op(x, magnitude)


# Colour ops: uint8 (n, 3, H, W) and one magnitude per image (n,) -> uint8, computed on float
# and truncated back to uint8 as PIL and torchvision do.

def _per_image(m: torch.Tensor) -> torch.Tensor:
    """(n,) -> (n, 1, 1, 1), to broadcast over each image."""
    return m.view(-1, 1, 1, 1)


def _blend(x: torch.Tensor, y: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor x x + (1 - factor) x y (PIL's ImageEnhance), clamped to uint8."""
    f = _per_image(factor)
    return (x * f + y * (1 - f)).clamp_(0, 255).to(torch.uint8)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(n, 1, H, W) luma (ITU-R 601-2), floored, as torchvision's colour ops take it."""
    r, g, b = x.float().unbind(1)
    return (r * 0.2989 + g * 0.587 + b * 0.114).floor_().unsqueeze(1)


def identity(x, _=None):
    """The image as it is."""
    return x


def brightness(x, factor):
    """Blend with black: 0 is black, 1 the image."""
    return _blend(x.float(), 0.0, factor)


def color(x, factor):
    """Blend with the image's gray version (saturation): 0 is gray, 1 the image."""
    return _blend(x.float(), _gray(x), factor)


def contrast(x, factor):
    """Blend with the mean gray level of the image: 0 is flat gray, 1 the image."""
    return _blend(x.float(), _gray(x).mean(dim=(1, 2, 3), keepdim=True), factor)


def sharpness(x, factor):
    """Blend with a 3x3 smoothed image (border pixels kept): 0 is smooth, 1 the image."""
    y = x.float()
    # PIL's SMOOTH kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 as sums of shifted views
    # (exact: integer sums), several times faster than a depthwise conv2d on a CPU
    rows = y[:, :, :, :-2] + y[:, :, :, 1:-1] + y[:, :, :, 2:]
    inner = y[:, :, 1:-1, 1:-1]
    smooth = ((rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:] + 4 * inner) / 13).round_()
    inner += (1 - _per_image(factor)) * (smooth - inner)  # torchvision's order of the blend's terms
    return y.clamp_(0, 255).to(torch.uint8)


def posterize(x, bits):
    """Keep the `bits` (4..8) highest bits of each value."""
    keep = 8 - bits.floor().to(torch.int64)
    mask = (255 >> keep << keep).to(torch.uint8)
    return x & _per_image(mask)


def solarize(x, threshold):
    """Invert the values at or above `threshold`."""
    return torch.where(x >= _per_image(threshold), 255 - x, x)


def autocontrast(x, _=None):
    """Stretch each channel to [0, 255] (a flat channel is kept)."""
    y = x.float()
    low, high = y.amin(dim=(2, 3), keepdim=True), y.amax(dim=(2, 3), keepdim=True)
    flat = high == low
    scale = torch.where(flat, 1.0, (high - low) * (1 / 255))
    return ((y - torch.where(flat, 0.0, low)) / scale).clamp_(0, 255).to(torch.uint8)


def equalize(x, _=None):
    """Histogram equalization of each channel of each image, with PIL's lookup table."""
    n, c, h, w = x.shape
    flat = x.reshape(n * c, h * w).long()
    offsets = torch.arange(n * c, device=x.device)[:, None] * 256  # one histogram per channel
    hist = torch.bincount((flat + offsets).flatten(), minlength=n * c * 256).view(n * c, 256)
    # PIL: step = (pixels not of the highest value present) // 255; lut[i] = (step//2 + cdf[i-1]) // step
    highest = 255 - hist.flip(1).ne(0).int().argmax(dim=1, keepdim=True)
    step = (h * w - hist.gather(1, highest)) // 255
    cdf = hist.cumsum(1) - hist  # pixels below each value
    lut = ((cdf + step // 2) // step.clamp(min=1)).clamp_(0, 255)
    lut = torch.where(step > 0, lut, torch.arange(256, device=x.device))  # PIL: no step, no change
    return lut.to(torch.uint8).gather(1, flat).view(n, c, h, w)


# Geometric ops: one affine matrix per image, applied with nearest sampling (PIL's and
# torchvision's default), rotating and shearing about the image's centre.

def _affine(x, angle=None, shear_x=None, shear_y=None, tx=None, ty=None):
    """x resampled through rotation (degrees), shear (factors) and translation (pixels) per
    image, as torchvision's affine; what comes into view is FILL."""
    n, _, h, w = x.shape
    zero = torch.zeros(n, device=x.device)
    rot = torch.deg2rad(zero if angle is None else angle)
    tan_x = zero if shear_x is None else shear_x
    sy = torch.atan(zero if shear_y is None else shear_y)
    tx, ty = (zero if t is None else t for t in (tx, ty))
    # forward [[a, b], [c, d]] = R(rot) SHy SHx (torchvision's RSS); its inverse has det 1
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * tan_x + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * tan_x
    inverse = torch.stack([d, -b, b * ty - d * tx, -c, a, c * tx - a * ty], 1).view(n, 2, 3)
    # pixels about the centre -> grid_sample's [-1, 1] coordinates
    theta = inverse * torch.tensor([[1, h / w, 2 / w], [w / h, 1, 2 / h]], device=x.device)
    grid = F.affine_grid(theta, [n, 3, h, w], align_corners=False)
    # sampling x - FILL with zero padding fills with FILL
    y = F.grid_sample(x.float() - FILL, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return (y + FILL).round_().clamp_(0, 255).to(torch.uint8)


def rotate(x, degrees):
    """Rotate by `degrees` clockwise (the sign of torchvision's affine)."""
    return _affine(x, angle=degrees)


def shear_x(x, factor):
    """Shear along x by `factor` (the tangent of the shear angle; torchvision's sign)."""
    return _affine(x, shear_x=factor)


def shear_y(x, factor):
    """Shear along y by `factor`."""
    return _affine(x, shear_y=factor)


def translate_x(x, fraction):
    """Move right by `fraction` of the width."""
    return _affine(x, tx=fraction * x.shape[-1])


def translate_y(x, fraction):
    """Move down by `fraction` of the height."""
    return _affine(x, ty=fraction * x.shape[-2])


# name -> (op, magnitude range low, high): FixMatch's RandAugment pool (paper, Table 12).
# Posterize's [4, 9) is floored to 4..8 bits; Solarize's threshold is in [0, 256).
OPS = {
    "Identity": (identity, None, None),
    "AutoContrast": (autocontrast, None, None),
    "Brightness": (brightness, 0.05, 0.95),
    "Color": (color, 0.05, 0.95),
    "Contrast": (contrast, 0.05, 0.95),
    "Equalize": (equalize, None, None),
    "Posterize": (posterize, 4, 9),
    "Rotate": (rotate, -30, 30),
    "Sharpness": (sharpness, 0.05, 0.95),
    "ShearX": (shear_x, -0.3, 0.3),
    "ShearY": (shear_y, -0.3, 0.3),
    "Solarize": (solarize, 0, 256),
    "TranslateX": (translate_x, -0.3, 0.3),
    "TranslateY": (translate_y, -0.3, 0.3),
}

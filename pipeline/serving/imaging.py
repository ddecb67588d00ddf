"""Any image -> a 28x28 Fashion-MNIST-style image (pure: array in, array out).

Fashion-MNIST images are light items on a black background, the item centred with its longer side spanning
the frame. Zalando made them from product photos (dark-ish items on a white background) by: trimming the
edges close to the corner colour (5% of the intensity range), resizing the longer edge to 28, centring on a
28x28 canvas, negating the intensities and converting to 8-bit grey (github.com/zalandoresearch/fashion-mnist,
"Get the data"). `to_fashion_mnist` does the same to any picture, deciding from the border pixels whether the
background is light (then it inverts, and says so), so a photo of a dark shoe on a white table and an
official test image both end up the way the models were trained to see them.

Not about: reading files (pipeline.serving.predict does, with Pillow) or predicting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.schema import IMAGE_SIDE

TRIM_FRACTION = 0.05      # a pixel belongs to the item when it differs from the background by > 5% of 255
LIGHT_BACKGROUND = 127.5  # border median above this: a light background, so the image is inverted


@dataclass(frozen=True)
class Conversion:
    image: np.ndarray          # uint8 (28, 28): light item on a black background
    inverted: bool             # the border was light: intensities were negated
    background: float          # the border's median grey level (0..255) in the input
    box: tuple[int, int, int, int]  # the item's bounding box in the input: top, left, bottom, right (exclusive)


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H,W) grey, (H,W,1), (H,W,3) RGB or (H,W,4) RGBA, uint8 or float in 0..255 -> float32 (H,W) grey.

    Colour uses the ITU-R 601-2 luma weights (Pillow's "L" mode). Transparent pixels are composited onto
    white, as a product photo's cut-out background would be."""
    a = np.asarray(image)
    if a.dtype == np.uint16:
        a = a / 257.0
    a = a.astype(np.float32)
    if a.ndim == 3 and a.shape[2] in (2, 4):         # grey+alpha / RGBA: composite onto white
        alpha = a[..., -1:] / 255.0
        a = a[..., :-1] * alpha + 255.0 * (1.0 - alpha)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[2] == 3:
        a = a @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if a.ndim != 2 or min(a.shape) < 1:
        raise ValueError(f"expected an image of shape (H, W), (H, W, 3) or (H, W, 4), got {np.shape(image)}")
    return np.clip(a, 0.0, 255.0)


def border(gray: np.ndarray) -> np.ndarray:
    """The outermost ring of pixels."""
    if min(gray.shape) <= 2:
        return gray.ravel()
    return np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])


def _resize(gray: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    if gray.shape == (height, width):
        return gray
    # Box filter when shrinking (every input pixel counts, like an average), bicubic when enlarging.
    shrinking = height <= gray.shape[0] and width <= gray.shape[1]
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(gray, mode="F").resize((width, height), resample), dtype=np.float32)


def to_fashion_mnist(image: np.ndarray, side: int = IMAGE_SIDE) -> Conversion:
    """Convert one picture (any size, grey or colour) to a `side` x `side` uint8 Fashion-MNIST-style image.

    Raises ValueError for an image with nothing in it (every pixel within 5% of the background)."""
    gray = to_gray(image)
    background = float(np.median(border(gray)))
    inverted = background > LIGHT_BACKGROUND
    if inverted:
        gray, bg = 255.0 - gray, 255.0 - background
    else:
        bg = background
    item = gray - bg > TRIM_FRACTION * 255.0
    if not item.any():
        raise ValueError("the image is blank: no pixel differs from the background by more than 5%")
    rows, cols = np.flatnonzero(item.any(axis=1)), np.flatnonzero(item.any(axis=0))
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    crop = gray[top:bottom, left:right]
    # The background level becomes black and the full range is kept (a grey backdrop is not part of the item).
    crop = np.clip((crop - bg) * (255.0 / max(255.0 - bg, 1.0)), 0.0, 255.0)
    h, w = crop.shape
    scale = side / max(h, w)
    new_h, new_w = max(1, min(side, round(h * scale))), max(1, min(side, round(w * scale)))
    canvas = np.zeros((side, side), dtype=np.float32)
    y0, x0 = (side - new_h) // 2, (side - new_w) // 2
    canvas[y0:y0 + new_h, x0:x0 + new_w] = _resize(np.ascontiguousarray(crop), new_h, new_w)
    out = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return Conversion(out, inverted, background, (top, left, bottom, right))

"""Image paths and decoding: containment in the image folder, Pillow with its bomb guard on, RGB.

    path = resolve_image_path("cats/1.jpg", "images/")      # realpath inside images/, or RecordProblem
    img = load_image(path)                                  # RGB, EXIF orientation applied, fully decoded
    img = prepare_image(img, "pad", image_processor)        # LLaVA's expand2square with the mean colour
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings

from PIL import Image, ImageOps

from vlmtune.data.readers import is_url
from vlmtune.data.sample import RecordProblem


def resolve_image_path(path: str, image_folder: str | None, allow_urls: bool = False) -> str:
    """The real path of an image, refusing anything that leaves `image_folder` after `realpath`.

    Reasons: `url-not-allowed`, `path-outside-image-folder` (a `..` path, an absolute path, or a
    symlink that leaves the folder), `missing-image`. With no image folder, paths are taken as given.
    """
    if is_url(path):
        if not allow_urls:
            raise RecordProblem("url-not-allowed", f"{path} is a URL; URLs are refused unless allowed (--allow-urls / data.allow_urls).")
        return path
    if image_folder is None:
        full = os.path.realpath(path)
    else:
        if os.path.isabs(path):
            raise RecordProblem("path-outside-image-folder", f"{path} is an absolute path; image paths must be relative to the image folder {image_folder}.")
        folder = os.path.realpath(image_folder)
        full = os.path.realpath(os.path.join(folder, path))
        if os.path.commonpath([folder, full]) != folder:
            raise RecordProblem("path-outside-image-folder", f"{path} resolves to {full}, outside the image folder {folder}.")
    if not os.path.exists(full):
        raise RecordProblem("missing-image", f"{path} not found" + (f" in {image_folder}." if image_folder else "."))
    if not os.path.isfile(full):
        raise RecordProblem("unreadable-image", f"{path} is not a file.")
    return full


def _open(path_or_bytes):
    if isinstance(path_or_bytes, (bytes, bytearray)):
        return Image.open(io.BytesIO(path_or_bytes))
    if isinstance(path_or_bytes, str) and is_url(path_or_bytes):
        import urllib.request

        with urllib.request.urlopen(path_or_bytes, timeout=30) as r:  # only reached when URLs are allowed
            return Image.open(io.BytesIO(r.read()))
    return Image.open(path_or_bytes)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode (P, LA, RGBA, CMYK, I;16, I, F, 1...) as 8-bit RGB; transparency over white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    return img.convert("RGB")


@contextlib.contextmanager
def _quiet_bomb_warnings():
    """Silence Pillow's bomb warning (load_image checks the size itself). `catch_warnings` edits global
    state, so only the main thread does it; check_dataset silences it once around its thread pool."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def load_image(path_or_bytes) -> Image.Image:
    """Decode fully (`load()`) to RGB with EXIF orientation applied; any failure is `unreadable-image`."""
    name = "image bytes" if isinstance(path_or_bytes, (bytes, bytearray)) else os.path.basename(str(path_or_bytes))
    try:
        with _quiet_bomb_warnings():
            img = _open(path_or_bytes)
        limit = Image.MAX_IMAGE_PIXELS  # Pillow only warns between the limit and twice it; we refuse
        if limit and img.size[0] * img.size[1] > limit:
            raise Image.DecompressionBombError(f"{img.size[0]}x{img.size[1]} = {img.size[0] * img.size[1]} pixels")
        img.load()
        img = ImageOps.exif_transpose(img)
        return to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        limit = Image.MAX_IMAGE_PIXELS
        raise RecordProblem("unreadable-image", f"{name}: over Pillow's decompression-bomb limit of {limit} pixels ({e}).") from None
    except Image.UnidentifiedImageError:
        size = os.path.getsize(path_or_bytes) if isinstance(path_or_bytes, str) and os.path.exists(path_or_bytes) else None
        what = "an empty (0-byte) file" if size == 0 else "not an image Pillow can identify"
        raise RecordProblem("unreadable-image", f"{name}: {what}.") from None
    except RecordProblem:
        raise
    except Exception as e:  # truncated data, bad headers, decoder errors, I/O errors
        raise RecordProblem("unreadable-image", f"{name}: {type(e).__name__}: {e}") from None


def processor_size(image_processor) -> tuple[int, int]:
    """(width, height) the processor produces: crop_size if it crops, else size."""
    for attr in ("crop_size", "size"):
        size = getattr(image_processor, attr, None)
        if not size:
            continue
        size = dict(size) if not isinstance(size, int) else {"shortest_edge": size}
        if size.get("height") and size.get("width"):
            return int(size["width"]), int(size["height"])
        if size.get("shortest_edge"):
            return int(size["shortest_edge"]), int(size["shortest_edge"])
    raise ValueError("can't tell the image processor's output size (no size/crop_size).")


def expand2square(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """LLaVA's: paste the image centred on a square of `background`."""
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new(img.mode, (side, side), background)
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


def prepare_image(img: Image.Image, aspect_ratio: str, image_processor) -> Image.Image:
    """`pad`: square with the processor's mean colour; `resize`: to the processor's size; `processor`: unchanged."""
    if aspect_ratio == "pad":
        mean = getattr(image_processor, "image_mean", None) or (0.0, 0.0, 0.0)
        return expand2square(img, tuple(int(x * 255) for x in mean))
    if aspect_ratio == "resize":
        return img.resize(processor_size(image_processor), Image.Resampling.BICUBIC)
    if aspect_ratio == "processor":
        return img
    raise ValueError(f"image_aspect_ratio must be pad, resize or processor, got {aspect_ratio!r}.")

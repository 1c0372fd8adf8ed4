"""Pixel data in and out: decode into frames, an 8-bit view for the detector, fill regions.

Only this module decodes pixel data, and only for instances the burned-in text policy scans.
Compressed pixel data is decoded (pydicom with pylibjpeg / Pillow) and, once masked, written back
uncompressed (Explicit VR Little Endian): lossless, and every archive takes it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from bridge.domain.errors import DeidError

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the frame


def pixel_bytes(ds: Dataset) -> int:
    """Declared size of the decoded pixel data, to refuse scanning what would not fit."""
    rows = int(ds.get("Rows", 0) or 0)
    cols = int(ds.get("Columns", 0) or 0)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 8) or 8)
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 1
    return rows * cols * spp * max(1, bits // 8) * max(1, frames)


def decode(ds: Dataset) -> np.ndarray:
    """All frames as one array: (frames, rows, cols) or (frames, rows, cols, samples).

    The dataset is not changed (an instance with nothing to mask keeps its encoded pixel data
    byte for byte); colour in YCbCr comes back as RGB (see :func:`write_back`).
    """
    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - every decoder raises its own types
        raise DeidError("pixel data could not be decoded", error=type(exc).__name__) from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames == 1:
        arr = arr[None, ...]
    if spp == 1 and arr.ndim != 3 or spp > 1 and arr.ndim != 4:
        raise DeidError("pixel data has an unexpected shape", ndim=arr.ndim)
    return np.array(arr, copy=True)


def view8(frame: np.ndarray, photometric: str) -> np.ndarray:
    """An 8-bit grey picture of one frame for the text detector: luminance for colour,
    full stored range stretched to 0..255, MONOCHROME1 inverted so it looks as displayed."""
    f = frame.astype(np.float32)
    if f.ndim == 3:
        f = f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114
    lo, hi = float(f.min()), float(f.max())
    out = (f - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(f)
    if photometric == "MONOCHROME1":
        out = 255.0 - out
    return out.astype(np.uint8)


def fill_value(frame: np.ndarray, photometric: str) -> float | int:
    """The value that displays black: the frame's minimum (maximum for MONOCHROME1)."""
    if frame.ndim == 3:
        return 0
    value = frame.max() if photometric == "MONOCHROME1" else frame.min()
    return value.item() if hasattr(value, "item") else value  # type: ignore[no-any-return]


def fill(frame: np.ndarray, boxes: Iterable[Box], value: float | int) -> float:
    """Fill the boxes in place; return the share of the frame that was filled."""
    rows, cols = frame.shape[:2]
    covered = np.zeros((rows, cols), bool)
    for x0, y0, x1, y1 in boxes:
        r0, r1 = max(0, int(np.floor(y0))), min(rows, int(np.ceil(y1)))
        c0, c1 = max(0, int(np.floor(x0))), min(cols, int(np.ceil(x1)))
        if r1 > r0 and c1 > c0:
            covered[r0:r1, c0:c1] = True
    frame[covered] = value
    return float(covered.mean())


def write_back(ds: Dataset, frames: np.ndarray) -> None:
    """Store the (masked) frames uncompressed, keeping the stored pixel description."""
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    arr = frames if nframes > 1 else frames[0]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric.startswith("YBR") and arr.ndim - (nframes > 1) == 3:
        photometric = "RGB"  # pydicom hands YCbCr back converted to RGB
    bits_stored = int(ds.get("BitsStored", 8) or 8)
    if "PixelData" in ds:
        del ds.PixelData  # set_pixel_data refuses to replace encapsulated data in place
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    try:
        ds.set_pixel_data(arr, photometric, bits_stored, generate_instance_uid=False)
    except Exception as exc:  # noqa: BLE001
        raise DeidError("masked pixel data could not be stored", error=type(exc).__name__) from exc

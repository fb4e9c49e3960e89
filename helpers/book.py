"""Animated turntables and glue: ``book/index.md`` pastes Chapter 4's animation by key, never an older fit."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from . import checks
from .plotting import _numpy_images

#: Glue keys ``book/index.md`` pastes: the targets turning (Chapter 1), the fit next to them and its PSNR (Chapter 4).
TARGETS_KEY = "landing-targets"
RESULT_KEY = "landing-result"
PSNR_KEY = "landing-psnr"


def side_by_side(*views, gap: int = 4):
    """Join equally long frame sequences ``(N, H, W, 3)`` left to right, ``gap`` white pixels apart. Defined in §4.8."""
    checks.require(views, "side_by_side needs at least one sequence of frames.")
    gap = checks.integer("gap", gap, minimum=0)
    arrays = [_numpy_images(v, "frames") for v in views]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(f"All sequences must have the same shape, got {[a.shape for a in arrays]}.")
    spacer = np.ones((*arrays[0].shape[:2], gap, arrays[0].shape[3]), dtype=arrays[0].dtype)
    return np.concatenate([part for a in arrays for part in (spacer, a)][1:], axis=2)


def animated_gif(frames, scale: float = 1.5, frame_ms: int = 100) -> bytes:
    """Encode ``frames`` ``(N, H, W, 3)`` as a looping GIF, each frame shown ``frame_ms`` ms. Defined in §1.4."""
    scale, frame_ms = checks.number("scale", scale, 0.0, low_open=True), checks.integer("frame_ms", frame_ms)
    frames = _numpy_images(frames, "frames")  # refuses NaN/inf
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"Expected RGB frames of shape (N, H, W, 3), got {frames.shape}.")
    checks.require(frames.shape[0] >= 2, f"An animation needs at least 2 frames, got {frames.shape[0]}.")
    pil = [Image.fromarray(f) for f in (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)]
    if scale != 1:
        size = (round(pil[0].width * scale), round(pil[0].height * scale))
        pil = [p.resize(size, Image.LANCZOS) for p in pil]
    buffer = io.BytesIO()
    pil[0].save(buffer, format="GIF", save_all=True, append_images=pil[1:], duration=frame_ms, loop=0)
    return buffer.getvalue()


def gif_html(gif: bytes, alt: str):
    """An HTML ``<img>`` with the GIF embedded, so the page needs no separate file. Defined in §1.4."""
    from IPython.display import HTML

    if not isinstance(gif, (bytes, bytearray)):
        raise TypeError(f"gif must be the bytes animated_gif returns, got {type(gif).__name__}.")
    checks.require(alt, f"Give the animation an alt text that says what it shows, got alt={alt!r}.")
    alt = alt.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    src = "data:image/gif;base64," + base64.b64encode(gif).decode()
    return HTML(f'<img src="{src}" alt="{alt}" style="max-width: 100%; image-rendering: auto;">')


class _Plain:
    """A string whose plain-text form has no quotes, so ``{glue:text}`` pastes the words alone."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def glue(key: str, value, display: bool = True) -> None:
    """Store ``value`` under ``key`` for the book's pages (myst-nb) and show it if ``display``. Defined in §1.3.

    A string is pasted as its words, without the quotes of its ``repr``.
    """
    from IPython.display import display as show

    if isinstance(value, str):
        value = _Plain(value)

    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # Colab: no book to paste into, only show
        return show(value) if display else None
    myst_glue(key, value, display=display)


def claim(holds: bool, text: str, device) -> bool:
    """Check a sentence of the chapter (``text``, what it says) against this run. Defined in §4.7.

    The published book is built on the CPU: there a sentence its own run contradicts stops the build,
    so the text is changed rather than published wrong. Elsewhere (a GPU, in Colab) the run may
    differ; the reader is told so, and the chapter goes on.
    """
    checks.require(isinstance(text, str) and text, f"Say what the text claims, got text={text!r}.")
    if holds:
        return True
    if str(device).startswith("cpu"):
        raise AssertionError(f"The text says {text}, but this CPU run does not show it: change the text.")
    print(f"Note: the text says {text}, as the book's CPU run showed; this run on {device} does not.")
    return False

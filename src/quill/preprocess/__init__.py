"""The one image-normalisation path shared by training and inference.

A model sees a float32 *ink map*: 1.0 where there is ink, 0.0 where there is paper, whatever
the photo looked like. The ink map is the colour distance of each pixel from a local
estimate of the paper (a median over a window much larger than a pen stroke), so it is the
same for dark ink on light paper, light ink on dark paper, blue or red ink, and a page with a
shadow across it. The reference system failed in production because training and serving
disagreed on polarity; here there is no polarity to disagree on.

Training (``quill.data``) and inference (``quill.inference``) both call :func:`preprocess`;
nothing else normalises images. The path in three steps, a module each:

- :mod:`quill.preprocess.images`: any input read upright as L or RGB, absurd shapes refused
  from the header (:class:`ImageError`);
- :mod:`quill.preprocess.ink`: the ink map and ink masks, from the local paper colour;
- :mod:`quill.preprocess.inputs`: the model's input, a line cropped to its ink and scaled to
  the model's height (or a page fitted to the paragraph canvas), and batches of them.
"""

from quill.preprocess.images import (
    MAX_ASPECT,
    MAX_PIXELS,
    MAX_SIDE,
    MIN_SIDE,
    ImageError,
    ImageSource,
    check_size,
    load_image,
    read_image,
)
from quill.preprocess.ink import (
    BLANK_CONTRAST,
    ink_contrast,
    ink_map,
    ink_mask,
    is_grey,
    paper_colour,
    sparse_ink_mask,
)
from quill.preprocess.inputs import (
    PreprocessConfig,
    batch_images,
    is_blank,
    line_ink,
    pad_width,
    preprocess,
    working_height,
)

__all__ = [
    "BLANK_CONTRAST",
    "MAX_ASPECT",
    "MAX_PIXELS",
    "MAX_SIDE",
    "MIN_SIDE",
    "ImageError",
    "ImageSource",
    "PreprocessConfig",
    "batch_images",
    "check_size",
    "ink_contrast",
    "ink_map",
    "ink_mask",
    "is_blank",
    "is_grey",
    "line_ink",
    "load_image",
    "pad_width",
    "paper_colour",
    "preprocess",
    "read_image",
    "sparse_ink_mask",
    "working_height",
]

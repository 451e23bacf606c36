"""Augmentation of cached line ink maps, a whole batch at a time, on the CPU or a GPU.

:class:`quill.data.augment.Augmenter` distorts one PIL image before preprocessing, which
costs a decode, per-pixel warps at scan resolution and an ink map per sample: about 100
samples per CPU-second, too slow to feed a GPU. Here the same distortions act on the small
ink maps of :mod:`quill.data.ink_cache` (ink = 1, paper = 0), batched as tensors:

- one ``grid_sample`` does all the geometry: slant (shear), rotation, perspective (a
  keystone), a horizontal stretch, elastic wobble and a wandering baseline. Each line is
  refitted to the model height, as :func:`quill.preprocess.line_ink` fits a line, so a
  rotated line is scaled to fit rather than cut, and then, if asked (``shift``), moved a
  few pixels up or down;
- stroke width (a blend towards a 3x3 max or min), lower resolution, blur, faint ink,
  paper that is not quite flat (stains, ruled lines, shadows as an ink map shows them)
  and noise act on the result.

Polarity and ink colour need no augmenting here: the ink map has neither. The probabilities
and ranges are the fields of :class:`~quill.data.augment.AugmentConfig`, so a run's
``data.augment`` means the same on both paths. The batch runs in the loader workers, or on
the GPU after the batch is moved there (``data.augment_on``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from quill.data.augment import AugmentConfig

Tensor = torch.Tensor


def _chosen(probability: float, size: int, generator: torch.Generator) -> Tensor:
    """(B,) bool: which samples get a distortion applied with ``probability``."""
    return torch.rand(size, generator=generator) < probability


def _amount(
    bounds: tuple[float, float], chosen: Tensor, generator: torch.Generator, neutral: float = 0.0
) -> Tensor:
    """(B,) amounts uniform in ``bounds`` for the chosen samples, ``neutral`` for the rest."""
    low, high = bounds
    values = low + (high - low) * torch.rand(chosen.shape[0], generator=generator)
    return torch.where(chosen, values, torch.full_like(values, neutral))


class InkAugmenter:
    """``(images (B, 1, H, W) in [0, 1], widths (B,)) -> (augmented images, new widths)``.

    Output widths are capped at ``max_width`` (a longer line is squeezed, as preprocessing
    squeezes it) and then padded to ``width_multiple``, as preprocessing pads them. Random
    draws come from ``generator`` for the per-sample parameters and from the device's default
    generator for noise fields.
    """

    def __init__(
        self, config: AugmentConfig | None = None, width_multiple: int = 8, max_width: int = 1536
    ):
        self.config = config or AugmentConfig()
        self.width_multiple = width_multiple
        self.max_width = max_width

    def __call__(
        self, images: Tensor, widths: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        generator = generator or torch.default_generator
        if self.config.neighbours:  # drawn only when asked for, as ``shift``
            images, widths = self._with_neighbours(images, widths, generator)
        images, widths = self._geometry(images, widths, generator)
        images = self._appearance(images, generator).clamp_(0.0, 1.0)
        columns = torch.arange(images.shape[-1], device=images.device)
        beyond = columns[None, :] >= widths.to(images.device)[:, None]  # (B, W): paper
        images = images.masked_fill(beyond[:, None, None, :], 0.0)
        multiple = self.width_multiple
        padded = torch.div(widths + multiple - 1, multiple, rounding_mode="floor") * multiple
        return images, padded

    # -- framing: a loose crop, with the lines around it ----------------------------------------

    def _with_neighbours(
        self, images: Tensor, widths: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """The chosen lines cut as from a page: each stacked between two other lines of the
        batch (``neighbour_gap`` heights apart, cut to its width) and the window around it,
        ``neighbour_margin`` heights above and below, scaled back to the model height; the
        line's width shrinks by the same factor. (B, 1, H, W) -> (B, 1, H, W)."""
        c = self.config
        batch, _, height, width = images.shape
        chosen = torch.nonzero(_chosen(c.neighbours, batch, generator)).flatten().tolist()
        if batch < 2 or not chosen:
            return images, widths
        margins = _amount(c.neighbour_margin, torch.ones(batch, dtype=torch.bool), generator)
        gaps = _amount(c.neighbour_gap, torch.ones(batch, dtype=torch.bool), generator)
        others = torch.randint(1, batch, (batch, 2), generator=generator)
        images, widths = images.clone(), widths.clone()
        for row in chosen:
            gap, margin = round(float(gaps[row]) * height), round(float(margins[row]) * height)
            line_width = int(widths[row])
            above, below = (images[(row + int(k)) % batch, 0, :, :line_width] for k in others[row])
            line = images[row, 0, :, :line_width]
            space = line.new_zeros(gap, line_width)
            stack = torch.cat([above, space, line, space, below])  # (3H + 2 gap, w)
            top = height + gap - margin
            window = stack[top : top + height + 2 * margin]  # (H + 2 margin, w)
            scaled = max(1, round(line_width * height / window.shape[0]))
            fitted = F.interpolate(window[None, None], size=(height, scaled), mode="area")
            images[row] = 0.0
            images[row, 0, :, :scaled] = fitted[0, 0]
            widths[row] = scaled
        return images, widths

    # -- geometry: one sampling grid per batch ------------------------------------------------

    def _geometry(
        self, images: Tensor, widths: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        c = self.config
        batch, _, height, in_width = images.shape
        device = images.device
        pick = lambda p: _chosen(p, batch, generator)  # noqa: E731
        slant = _amount(c.slant_range, pick(c.slant), generator)
        angle = _amount(c.rotate_degrees, pick(c.rotate), generator) * (math.pi / 180)
        stretch = _amount((0.85, 1.15), pick(c.perspective + c.slant * 0.2), generator, 1.0)
        keystone = _amount((-0.15, 0.15), pick(c.perspective), generator)
        elastic = _amount(c.elastic_alpha, pick(c.elastic), generator)
        wave = _amount((0.0, 0.04 * height), pick(c.baseline_wave), generator)
        period = _amount((3.0 * height, 12.0 * height), wave > 0, generator, 1.0)
        phase = _amount((0.0, 2 * math.pi), wave > 0, generator)
        # drawn last, and only when asked for: runs without it keep their random streams
        lift = _amount(c.shift_pixels, pick(c.shift), generator) if c.shift else None

        # forward map about each line's centre: rotate . shear . stretch, (B, 2, 2)
        cos, sin = torch.cos(angle), torch.sin(angle)
        rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        shear = torch.zeros(batch, 2, 2)
        shear[:, 0, 0], shear[:, 0, 1], shear[:, 1, 1] = stretch, -slant, 1.0
        forward = rotation @ shear
        centre_x = widths.float().cpu() / 2  # (B,) each line's centre, in source pixels
        half = torch.stack([centre_x, torch.full((batch,), height / 2)], -1)
        corners = torch.stack(
            [half * torch.tensor(sign) for sign in ((1, 1), (1, -1), (-1, 1), (-1, -1))], 1
        )  # (B, 4, 2)
        extent = (corners @ forward.transpose(1, 2)).abs().amax(1)  # (B, 2) half-sizes
        fit = height / (2 * extent[:, 1])  # refit the transformed line to the model height
        out_widths = torch.ceil(2 * extent[:, 0] * fit).clamp(1, self.max_width).long()
        squeeze = (2 * extent[:, 0] * fit) / out_widths  # > 1 only for over-long lines
        out_width = int(-(-int(out_widths.max()) // self.width_multiple) * self.width_multiple)

        # The affine part as grid_sample's theta, in its [-1, 1] coordinates
        # (align_corners=False): output (x_n, y_n) -> u, v about the line's centre (refitted and
        # squeezed) -> the inverse map -> source pixels -> source [-1, 1].
        inverse = torch.linalg.inv(forward)  # (B, 2, 2)
        scale_u = out_width * squeeze / (2 * fit)  # u = scale_u * x_n + shift_u
        shift_u = (out_width - out_widths.float()) * squeeze / (2 * fit)
        scale_v = height / (2 * fit)  # v = scale_v * y_n
        theta = torch.zeros(batch, 2, 3)
        for row, (size, centre) in enumerate(((in_width, centre_x), (height, height / 2))):
            theta[:, row, 0] = 2 / size * inverse[:, row, 0] * scale_u
            theta[:, row, 1] = 2 / size * inverse[:, row, 1] * scale_v
            theta[:, row, 2] = 2 / size * (inverse[:, row, 0] * shift_u + centre) - 1
        if lift is not None:  # output row y reads source row y - lift: the line moves down
            theta[:, 1, 2] -= 2 / height * lift / fit
        shape = [batch, 1, height, out_width]
        grid = F.affine_grid(theta.to(device), shape, align_corners=False)  # (B, H, W', 2)
        self._displace(grid, in_width, keystone, elastic, wave, period, phase)
        warped = F.grid_sample(images, grid, mode="bilinear", align_corners=False)
        return warped, out_widths.to(widths.device)

    @staticmethod
    def _displace(
        grid: Tensor,
        in_width: int,
        keystone: Tensor,
        alpha: Tensor,
        wave: Tensor,
        period: Tensor,
        phase: Tensor,
    ) -> None:
        """Add, on the chosen samples only, a keystone (the vertical scale changes across the
        line, as a page seen at an angle), a smooth random displacement of ``alpha`` pixels
        and a sine baseline of ``wave`` pixels over a ``period``; (B,) amounts, in place."""
        _, height, width, _ = grid.shape
        device = grid.device
        to_x, to_y = 2.0 / in_width, 2.0 / height  # pixels -> grid units
        chosen = torch.nonzero(keystone != 0).flatten()  # amounts are on the CPU
        if len(chosen):
            rows = chosen.to(device)
            x_n = torch.linspace(-1, 1, width, device=device)[None, None, :]
            centre = grid[rows, height // 2 : height // 2 + 1, :, 1]  # (n, 1, W')
            amount = keystone[chosen].to(device)[:, None, None]
            grid[rows, :, :, 1] += amount * x_n * (grid[rows, :, :, 1] - centre)
        chosen = torch.nonzero(alpha > 0).flatten()
        if len(chosen):
            rows = chosen.to(device)
            coarse = torch.randn(len(rows), 2, 3, max(2, width // 12), device=device)
            field = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=True)
            amount = alpha[chosen].to(device)[:, None, None]
            grid[rows, :, :, 0] += amount * to_x * field[:, 0]
            grid[rows, :, :, 1] += amount * to_y * field[:, 1]
        chosen = torch.nonzero(wave > 0).flatten()
        if len(chosen):
            rows = chosen.to(device)
            pixels_x = (grid[rows, :, :, 0] + 1) / to_x  # source x in pixels, (n, H, W')
            angle = 2 * math.pi * pixels_x / period[chosen].to(device)[:, None, None]
            offset = wave[chosen].to(device)[:, None, None] * torch.sin(
                angle + phase[chosen].to(device)[:, None, None]
            )
            grid[rows, :, :, 1] += to_y * offset

    # -- appearance: per-pixel changes, each on the samples chosen for it ---------------------

    def _appearance(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Each change on the samples chosen for it only (indexing is cheaper than masking)."""
        c = self.config
        batch = images.shape[0]
        images = images.clone()

        def apply(probability: float, change) -> None:  # noqa: ANN001 - (subset, n) -> subset
            rows = torch.nonzero(_chosen(probability, batch, generator)).flatten()
            if len(rows):
                rows = rows.to(images.device)
                images[rows] = change(images[rows], len(rows))

        def amount(bounds: tuple[float, float], n: int) -> Tensor:
            low, high = bounds
            values = low + (high - low) * torch.rand(n, generator=generator)
            return values.to(images.device)[:, None, None, None]

        def stroke(x: Tensor, n: int) -> Tensor:
            """Towards a 3x3 max (thicker) or min (thinner), by a random share."""
            share = amount((-0.8, 0.8), n)
            thicker = F.max_pool2d(x, 3, stride=1, padding=1)
            thinner = -F.max_pool2d(-x, 3, stride=1, padding=1)
            return x + share.abs() * (torch.where(share > 0, thicker, thinner) - x)

        def lower_resolution(x: Tensor, n: int) -> Tensor:
            factor = float(amount(c.downscale_range, 1))
            small = F.interpolate(x, scale_factor=factor, mode="area")
            return F.interpolate(small, size=x.shape[-2:], mode="bilinear")

        def faint(x: Tensor, n: int) -> Tensor:
            """Pale or thin ink: scale the ink down and bend its response."""
            return amount((0.55, 1.0), n) * x.clamp(min=0).pow(amount((0.7, 1.4), n))

        def noise(x: Tensor, n: int) -> Tensor:
            std = amount(c.noise_std, n) * 3  # an ink map amplifies a photo's noise
            return x + std * torch.randn_like(x)

        apply(c.stroke_width, stroke)
        apply(c.downscale, lower_resolution)
        apply(c.blur, lambda x, n: _gaussian_blur(x, amount(c.blur_sigma, n)))
        apply(c.contrast, faint)
        apply(c.recolour, lambda x, n: x + _paper_residue(x, generator))
        apply(c.noise, noise)
        return images


def _gaussian_blur(images: Tensor, sigma: Tensor) -> Tensor:
    """Blur each image with its own ``sigma`` (B, 1, 1, 1), a separable 7-tap kernel."""
    offsets = torch.arange(-3, 4, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-(offsets**2)[None, :] / (2 * sigma.flatten()[:, None].clamp(min=0.2) ** 2))
    kernel = kernel / kernel.sum(1, keepdim=True)  # (B, 7)
    batch = images.shape[0]
    grouped = images.transpose(0, 1)  # (1, B, H, W): one group per sample
    rows = F.conv2d(F.pad(grouped, (3, 3, 0, 0)), kernel[:, None, None, :], groups=batch)
    both = F.conv2d(F.pad(rows, (0, 0, 3, 3)), kernel[:, None, :, None], groups=batch)
    return both.transpose(0, 1)


def _paper_residue(images: Tensor, generator: torch.Generator) -> Tensor:
    """(B, 1, H, W) faint non-ink: low-frequency blotches and, for some, a ruled line."""
    batch, _, height, width = images.shape
    device = images.device
    coarse = torch.rand(batch, 1, 2, max(2, width // 48), device=device)
    blotch = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=True)
    strength = (0.05 + 0.2 * torch.rand(batch, generator=generator)).to(device)
    residue = strength[:, None, None, None] * blotch
    ruled = (torch.rand(batch, generator=generator) < 0.3).to(device)
    row = torch.randint(0, height, (batch,), generator=generator).to(device)
    rows = torch.arange(height, device=device)[None, :] == row[:, None]  # (B, H)
    line = (rows & ruled[:, None]).float()[:, None, :, None] * 0.35
    return residue + line

"""The font registry: which fonts synthetic data is drawn with, where they come from, and
which split each one belongs to.

The split is fixed per font, here in the source, not drawn at random: a validation or test
font is never used for training, so validation measures how well the model reads a hand it
has never seen. Fonts come from Debian packages (absolute paths under ``/usr/share/fonts``)
and from npm ``@fontsource`` packages installed by ``scripts/install_fonts.sh`` into
:func:`npm_font_dir`. Each loaded font records the vocabulary characters it cannot draw, so
the generator never labels an image with a character that was rendered as an empty box.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from quill.data.manifest import Split
from quill.errors import QuillError

Style = Literal["handwriting", "printed"]
FONT_DIR_ENV = "QUILL_FONT_DIR"


@dataclass(frozen=True)
class FontSpec:
    """One registered font. ``name`` is the stable id written into manifests as the group."""

    name: str
    family: str
    file: str
    package: str
    licence: str
    style: Style = "handwriting"
    split: Split = "train"

    @property
    def source(self) -> Literal["debian", "npm"]:
        return "npm" if self.package.startswith("@fontsource/") else "debian"

    def path(self, font_dir: Path | None = None) -> Path:
        """Where the font file is on this machine (it may not exist)."""
        if self.source == "debian":
            return Path(self.file)
        base = font_dir if font_dir is not None else npm_font_dir()
        return base / "node_modules" / self.package / "files" / self.file


def _npm(slug: str, family: str, licence: str = "OFL-1.1", split: Split = "train") -> FontSpec:
    """A ``@fontsource`` package's regular latin face (latin covers all of U+0020-00FF)."""
    return FontSpec(
        name=slug,
        family=family,
        file=f"{slug}-latin-400-normal.woff2",
        package=f"@fontsource/{slug}",
        licence=licence,
        split=split,
    )


def _deb(
    name: str,
    family: str,
    file: str,
    package: str,
    licence: str,
    style: Style = "handwriting",
    split: Split = "train",
) -> FontSpec:
    return FontSpec(name, family, file, package, licence, style, split)


_TT = "/usr/share/fonts/truetype"
_OT = "/usr/share/fonts/opentype"

#: Every font the generator may use. Excluded after looking at them: Rock Salt (draws
#: lowercase as small capitals), Femke Klaver (hollow capitals and digits), Ecolier Court
#: (hollow capitals), the italic faces of DKG Handwriting (an empty "u" glyph), and the
#: second Breip file (the same design twice).
FONTS: tuple[FontSpec, ...] = (
    # npm @fontsource handwriting families
    _npm("annie-use-your-telescope", "Annie Use Your Telescope"),
    _npm("architects-daughter", "Architects Daughter"),
    _npm("bad-script", "Bad Script"),
    _npm("caveat", "Caveat"),
    _npm("caveat-brush", "Caveat Brush"),
    _npm("cedarville-cursive", "Cedarville Cursive", split="test"),
    _npm("covered-by-your-grace", "Covered By Your Grace"),
    _npm("gaegu", "Gaegu"),
    _npm("gloria-hallelujah", "Gloria Hallelujah"),
    _npm("gochi-hand", "Gochi Hand"),
    _npm("handlee", "Handlee", split="val"),
    _npm("homemade-apple", "Homemade Apple", licence="Apache-2.0"),
    _npm("indie-flower", "Indie Flower", split="val"),
    _npm("kalam", "Kalam"),
    _npm("la-belle-aurore", "La Belle Aurore", split="val"),
    _npm("mansalva", "Mansalva"),
    _npm("marck-script", "Marck Script"),
    _npm("nanum-pen-script", "Nanum Pen Script"),
    _npm("neucha", "Neucha", split="test"),
    _npm("nothing-you-could-do", "Nothing You Could Do"),
    _npm("oooh-baby", "Oooh Baby"),
    _npm("patrick-hand", "Patrick Hand"),
    _npm("reenie-beanie", "Reenie Beanie"),
    _npm("satisfy", "Satisfy", licence="Apache-2.0"),
    _npm("schoolbell", "Schoolbell", licence="Apache-2.0"),
    _npm("shadows-into-light", "Shadows Into Light", split="test"),
    _npm("sue-ellen-francisco", "Sue Ellen Francisco"),
    _npm("the-girl-next-door", "The Girl Next Door"),
    _npm("whisper", "Whisper"),
    _npm("yellowtail", "Yellowtail", licence="Apache-2.0"),
    # Debian handwriting fonts
    _deb(
        "dkg", "DKG Handwriting", f"{_TT}/fifthhorseman/dkg.ttf", "fonts-dkg-handwriting", "OFL-1.1"
    ),
    _deb(
        "dkg-bold",
        "DKG Handwriting Bold",
        f"{_TT}/fifthhorseman/dkgBd.ttf",
        "fonts-dkg-handwriting",
        "OFL-1.1",
    ),
    _deb("breip", "Breip", f"{_TT}/breip/Breip.ttf", "fonts-breip", "OFL-1.1"),
    _deb("delphine", "Delphine", f"{_TT}/sjfonts/Delphine.ttf", "fonts-sjfonts", "GPL-2+"),
    _deb(
        "steve-hand",
        "Steve Hand",
        f"{_TT}/sjfonts/SteveHand.ttf",
        "fonts-sjfonts",
        "GPL-2+",
        split="test",
    ),
    _deb(
        "rufscript", "Rufscript", f"{_TT}/rufscript/Rufscript010.ttf", "fonts-rufscript", "OFL-1.1"
    ),
    _deb(
        "dancing-script",
        "Dancing Script",
        f"{_OT}/dancingscript/DancingScript-Regular.otf",
        "fonts-dancingscript",
        "OFL-1.1",
    ),
    _deb(
        "dancing-script-bold",
        "Dancing Script Bold",
        f"{_OT}/dancingscript/DancingScript-Bold.otf",
        "fonts-dancingscript",
        "OFL-1.1",
    ),
    _deb("kristi", "Kristi", f"{_TT}/kristi/Kristi.ttf", "fonts-kristi", "OFL-1.1", split="val"),
    _deb(
        "kaushan-script",
        "Kaushan Script",
        f"{_OT}/kaushanscript/KaushanScript-Regular.otf",
        "fonts-kaushanscript",
        "OFL-1.1",
    ),
    _deb(
        "comic-neue",
        "Comic Neue",
        f"{_OT}/comic-neue/ComicNeue-Regular.otf",
        "fonts-comic-neue",
        "OFL-1.1",
    ),
    _deb(
        "comic-neue-italic",
        "Comic Neue Italic",
        f"{_OT}/comic-neue/ComicNeue-Italic.otf",
        "fonts-comic-neue",
        "OFL-1.1",
    ),
    # Printed fonts: users photograph printed text too.
    _deb(
        "dejavu-sans",
        "DejaVu Sans",
        f"{_TT}/dejavu/DejaVuSans.ttf",
        "fonts-dejavu-core",
        "Bitstream-Vera",
        "printed",
    ),
    _deb(
        "dejavu-serif",
        "DejaVu Serif",
        f"{_TT}/dejavu/DejaVuSerif.ttf",
        "fonts-dejavu-core",
        "Bitstream-Vera",
        "printed",
        split="val",
    ),
    _deb(
        "dejavu-sans-mono",
        "DejaVu Sans Mono",
        f"{_TT}/dejavu/DejaVuSansMono.ttf",
        "fonts-dejavu-core",
        "Bitstream-Vera",
        "printed",
    ),
    _deb(
        "liberation-sans",
        "Liberation Sans",
        f"{_TT}/liberation2/LiberationSans-Regular.ttf",
        "fonts-liberation2",
        "OFL-1.1",
        "printed",
    ),
    _deb(
        "liberation-serif",
        "Liberation Serif",
        f"{_TT}/liberation2/LiberationSerif-Regular.ttf",
        "fonts-liberation2",
        "OFL-1.1",
        "printed",
    ),
    _deb(
        "liberation-serif-italic",
        "Liberation Serif Italic",
        f"{_TT}/liberation2/LiberationSerif-Italic.ttf",
        "fonts-liberation2",
        "OFL-1.1",
        "printed",
    ),
    _deb(
        "liberation-mono",
        "Liberation Mono",
        f"{_TT}/liberation2/LiberationMono-Regular.ttf",
        "fonts-liberation2",
        "OFL-1.1",
        "printed",
    ),
    _deb(
        "free-sans",
        "FreeSans",
        f"{_TT}/freefont/FreeSans.ttf",
        "fonts-freefont-ttf",
        "GPL-3+ with font exception",
        "printed",
        split="test",
    ),
    _deb(
        "free-serif",
        "FreeSerif",
        f"{_TT}/freefont/FreeSerif.ttf",
        "fonts-freefont-ttf",
        "GPL-3+ with font exception",
        "printed",
    ),
    _deb(
        "free-serif-italic",
        "FreeSerif Italic",
        f"{_TT}/freefont/FreeSerifItalic.ttf",
        "fonts-freefont-ttf",
        "GPL-3+ with font exception",
        "printed",
    ),
)


class FontDirError(QuillError, NotADirectoryError):
    """``$QUILL_FONT_DIR`` names no folder (a typo would silently drop every npm font)."""

    code = "font_dir_missing"


def npm_font_dir() -> Path:
    """Where ``scripts/install_fonts.sh`` put the npm fonts.

    ``$QUILL_FONT_DIR`` wins, and must be a folder; otherwise ``.cache/fonts`` in the source
    checkout, or ``~/.cache/quill/fonts`` when quill is installed without one.
    """
    if os.environ.get(FONT_DIR_ENV):
        chosen = Path(os.environ[FONT_DIR_ENV])
        if not chosen.is_dir():
            raise FontDirError(
                f"${FONT_DIR_ENV}={chosen} is not a folder: unset it or point it at the "
                "folder scripts/install_fonts.sh installed the fonts into"
            )
        return chosen
    checkout = Path(__file__).resolve().parents[4]
    if (checkout / "pyproject.toml").is_file():
        return checkout / ".cache" / "fonts"
    return Path.home() / ".cache" / "quill" / "fonts"


@dataclass(frozen=True)
class LoadedFont:
    """A registered font found on this machine, with the characters it cannot draw."""

    spec: FontSpec
    path: Path
    missing: frozenset[str]
    #: Height of a lowercase "x" per pixel of font size, used to give every font the same
    #: apparent writing size whatever its em-box conventions.
    x_height: float

    @property
    def name(self) -> str:
        return self.spec.name

    def covers(self, text: str) -> bool:
        """Whether every character of ``text`` (other than space and newline) has a glyph."""
        return not self.missing.intersection(text)


def glyph_coverage(path: Path, characters: Iterable[str]) -> frozenset[str]:
    """Characters among ``characters`` that ``path`` has no visible glyph for.

    A character counts as missing if the font's character map lacks it (Pillow would draw
    the "missing glyph" box), or if its glyph draws nothing (some fonts map a letter to an
    empty outline). Space and newline are never reported. The map comes from fontTools,
    the ink from Pillow's rasteriser, which is much faster than decoding outlines in Python.
    """
    from fontTools.ttLib import TTFont
    from PIL import ImageFont

    with TTFont(str(path), lazy=True) as font:
        cmap = font.getBestCmap() or {}
    raster = ImageFont.truetype(str(path), 24)
    missing = set()
    for char in characters:
        if char in " \n":
            continue
        left, top, right, bottom = raster.getbbox(char)
        if ord(char) not in cmap or right <= left or bottom <= top:
            missing.add(char)
    return frozenset(missing)


def _x_height(path: Path) -> float:
    from PIL import ImageFont

    size = 100
    top, bottom = ImageFont.truetype(str(path), size).getbbox("x", anchor="ls")[1::2]
    return max(bottom - top, 1) / size


@cache
def _load(spec: FontSpec, path: Path, characters: str) -> LoadedFont:
    return LoadedFont(spec, path, glyph_coverage(path, characters), _x_height(path))


def load_fonts(
    characters: str,
    font_dir: Path | None = None,
    specs: Iterable[FontSpec] = FONTS,
) -> tuple[list[LoadedFont], list[FontSpec]]:
    """The registered fonts present on this machine, and those that are not installed.

    Coverage is checked against ``characters`` (the vocabulary); the result is cached per
    process, so worker processes pay for it once.
    """
    found, absent = [], []
    for spec in specs:
        path = spec.path(font_dir)
        if path.is_file():
            found.append(_load(spec, path, characters))
        else:
            absent.append(spec)
    return found, absent

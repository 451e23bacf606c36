"""Training lines framed as the page path frames them (an experiment, 2026-12-07).

Reads a page set of PAGE XML files and their images (``quill data pages --split train``
composes one from the training writers), cuts each page into lines with the segmenter as
``Recognizer.predict`` cuts a page (``segment_lines``, crops at the recognizer's working
height), matches each line found to a ground-truth line by box IoU >= 0.5 (the page bench's
matching) and writes the segmenter's crop with that line's text: a folder dataset
(``labels.tsv``, every row in the train split) for ``quill data import folder``. A crop keeps
whatever of the lines above and below, insertions and notes the segmenter leaves in it,
which tight ground-truth crops never show the network.

    quill data pages --out data/pages/synth-train -n 600 --split train --seed 1000
    .venv/bin/python scripts/framed_lines.py data/pages/synth-train data/framed-src
    quill data import folder data/framed-src --out data/framed --vocabulary latin --split-by page

docs/models.md ("Trained on the segmenter's own crops") measures a fine-tune on them
(configs/default_multiwriter_framed.yaml). A script until it earns a command: ``quill data``
cannot call the segmenter (the data layer sits below the models one, quill/layers.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from quill.bench.detection import match_lines
from quill.data.readers.geometry import bounding_box
from quill.data.readers.pagexml import parse_pagexml
from quill.models.segment import SegmentConfig, segment_lines
from quill.preprocess import PreprocessConfig, working_height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pages", type=Path, help="folder of PAGE XML files and their images")
    parser.add_argument("out", type=Path, help="folder to write (images/ and labels.tsv)")
    parser.add_argument("--height", type=int, default=48, help="the line model's line height")
    args = parser.parse_args()
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    height = working_height(PreprocessConfig(kind="line", height=args.height))
    config = SegmentConfig(crop_height=height)
    rows, found, truth_lines = [], 0, 0
    for xml in sorted(args.pages.glob("*.xml")):
        layout = parse_pagexml(xml)
        truth = [
            (bounding_box(line.polygon), " ".join(line.text.split()))
            for region in layout.regions
            for line in region.lines
            if line.text.strip() and line.polygon
        ]
        if layout.image is None:
            print(f"{xml}: its image is not there, skipped")
            continue
        segments = segment_lines(Image.open(layout.image), config)
        found += len(segments)
        truth_lines += len(truth)
        for predicted, true, _ in match_lines([s.box for s in segments], [b for b, _ in truth]):
            name = f"images/{xml.stem}_{true:02d}.png"
            segments[predicted].image.save(args.out / name)
            rows.append(f"{name}\t{truth[true][1]}\t{xml.stem}\ttrain")
    header = "file\ttext\tpage\tsplit\n"
    (args.out / "labels.tsv").write_text(header + "".join(f"{r}\n" for r in rows), "utf-8")
    print(f"{len(rows)} lines written of {truth_lines} true lines ({found} found)")


if __name__ == "__main__":
    main()

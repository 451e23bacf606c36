"""The labeling config and instructions: well formed, and named as the importer reads them."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import typer
from typer.testing import CliRunner

from quill.annotation import config
from quill.annotation.cli import register
from quill.annotation.config import LabelingConfigError, labeling_config, validate_config


def test_config_names_match_what_tasks_and_importer_use(ls):
    root = ET.fromstring(labeling_config())
    image = root.find("Image")
    assert image.get("value") == "$ocr" and image.get("name") == "image"
    assert image.get("zoom") == "true" and image.get("rotateControl") == "true"
    labels = root.find("RectangleLabels")
    assert labels.get("toName") == "image" and labels.get("canRotate") == "true"
    assert [label.get("value") for label in labels] == ["Line"]
    text = root.find("TextArea")
    assert text.get("perRegion") == "true" and text.get("required") == "true"
    assert text.get("editable") == "true" and text.get("toName") == "image"
    # The fixtures write exports with these names; a renamed tag would break the import.
    results = ls.region("r", None, "x", (10, 10)) + ls.region("s", _box(), None, (10, 10))
    assert {r["from_name"] for r in results} == {labels.get("name"), text.get("name")}
    assert {r["to_name"] for r in results} == {image.get("name")}


def _box():
    from quill.annotation.geometry import Box

    return Box(1, 1, 5, 2)


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("<View><Image", "not well-formed"),
        ("<Task/>", "must start with <View>"),
        (labeling_config().replace('perRegion="true"', 'perRegion="false"'), "perRegion"),
        (labeling_config().replace('value="Line"', 'value="Word"'), '<Label value="Line">'),
        (labeling_config().replace('canRotate="true"', 'canRotate="false"'), "rotation"),
        (labeling_config().replace('rotateControl="true"', ""), "rotateControl"),
        (labeling_config().replace('name="transcription"', 'name="text"'), "TextArea"),
        (
            labeling_config().replace("</View>", '<PolygonLabels name="p" toName="image"/></View>'),
            "polygons",
        ),
    ],
)
def test_validation_names_what_is_wrong(broken, message):
    with pytest.raises(LabelingConfigError, match=message):
        validate_config(broken)


def test_instructions_resolve_the_ambiguities():
    page = config.instructions_html()
    ET.fromstring(page.replace("<!DOCTYPE html>", ""))  # well-formed, so it renders anywhere
    for rule in (
        "Type what is written",
        "not</b> correct spelling",
        "Do not copy printed prompts",
        "ascenders",
        "descenders",
        "best effort on every character",
        "one <code>#</code> for each character you cannot",
        "<code>\\#</code>",
        "rotate the box",
    ):
        assert rule in page, rule


def test_cli_prints_or_writes_the_config(tmp_path):
    app = typer.Typer()
    register(app)
    printed = CliRunner().invoke(app, ["annotate", "config"])
    assert printed.exit_code == 0 and printed.output == labeling_config()
    written = CliRunner().invoke(app, ["annotate", "config", "--out", str(tmp_path)])
    assert written.exit_code == 0
    assert (tmp_path / "labeling-config.xml").read_text() == labeling_config()
    assert (tmp_path / "instructions.html").read_text() == config.instructions_html()

"""The worklist and study pages in headless Chromium, after real studies went through `dermnode serve`.

The screenshots are written to $DERMNODE_SCREENSHOTS (default: the test's temporary folder).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser import Chromium
from web_support import OPERATOR, OPERATOR_PASSWORD, READER, READER_PASSWORD, TOKEN, Served, served_studies  # noqa: F401

pytestmark = pytest.mark.peers
OUTLINE = (0, 255, 128)


def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("DERMNODE_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def outline_pixels(png: bytes) -> int:
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return int(np.all(pixels == OUTLINE, axis=-1).sum())


def test_worklist_shows_the_vetoed_study_first_with_an_outlined_thumbnail(served_studies: Served, tmp_path: Path) -> None:
    served = served_studies
    with Chromium() as browser:
        browser.open(served.base + "/")
        assert browser.evaluate("location.pathname") == "/login"
        browser.log_in(served.base, READER, READER_PASSWORD)
        browser.open(served.base + "/")
        shot = browser.screenshot(screenshots(tmp_path) / "worklist.png")
        rows = browser.evaluate("""Array.from(document.querySelectorAll('table.worklist tbody tr')).map(row => ({
            study: row.dataset.study, vetoed: row.classList.contains('vetoed'), text: row.innerText,
            thumbnail: (row.querySelector('img') || {}).naturalWidth || 0}))""")
        assert browser.evaluate("document.querySelector('#worklist').dataset.refreshUrl") == "/worklist/rows"
    assert Image.open(shot).size[0] >= 1000
    assert len(rows) == 5
    api = served.get("/api/studies", token=TOKEN).json()["studies"]
    assert [row["study"] for row in rows] == [study["study_uid"] for study in api]
    assert rows[0]["vetoed"] and "VETO" in rows[0]["text"] and "retrying" in rows[0]["text"]
    assert [row["vetoed"] for row in rows] == sorted((row["vetoed"] for row in rows), reverse=True)
    assert all(row["thumbnail"] > 0 for row in rows)
    assert "not analysable" in next(row["text"] for row in rows if "PATTINY" in row["text"])
    first = api[0]
    thumbnail = served.get(f"/studies/{first['study_uid']}/images/{first['key_image']}/thumbnail.png", token=TOKEN)
    assert thumbnail.status == 200 and outline_pixels(thumbnail.body) > 50, "the lesion outline is drawn"


def test_study_page_shows_overlay_probabilities_deliveries_and_timeline(served_studies: Served, tmp_path: Path) -> None:
    served = served_studies
    study = served.get("/api/studies?veto=true", token=TOKEN).json()["studies"][0]
    with Chromium(height=1200) as browser:
        browser.log_in(served.base, OPERATOR, OPERATOR_PASSWORD)
        browser.open(f"{served.base}/studies/{study['study_uid']}")
        browser.screenshot(screenshots(tmp_path) / "study.png")
        page = browser.evaluate("""({
            pictures: Array.from(document.images).map(image => [image.alt, image.naturalWidth]),
            bars: document.querySelectorAll('table.bars .bar').length,
            deliveries: document.querySelector('table.deliveries').innerText,
            timeline: document.querySelector('table.timeline').innerText,
            buttons: Array.from(document.querySelectorAll('button[data-action]')).map(b => b.innerText)})""")
    assert any(alt == "lesion mask overlay" and width > 0 for alt, width in page["pictures"]), page["pictures"]
    assert all(width > 0 for _, width in page["pictures"]), page["pictures"]
    assert page["bars"] == 8
    assert "retrying" in page["deliveries"] and "sent" in page["deliveries"] and "DEAD" in page["deliveries"]
    for kind in ("received", "queued", "analysed", "sent", "failed", "viewed"):
        assert kind in page["timeline"]
    assert {"Requeue", "Cancel", "Retry now"} <= set(page["buttons"])
    overlay = served.get(f"/studies/{study['study_uid']}/images/{study['key_image']}/overlay.png", token=TOKEN)
    assert outline_pixels(overlay.body) > 50

"""`dermnode demo` on generated images: the node, the embedded queue and a local destination start,
two studies go through with the real starter models, the table is printed, and everything stops."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dermnode.cli import app
from dermnode.models.model_card import STARTER_DIR
from dermnode.workers.demo import synthetic_images

pytestmark = pytest.mark.peers


def test_synthetic_images_are_labelled_and_lesion_like(tmp_path: Path) -> None:
    from dermnode.models.images import load_rgb

    paths = synthetic_images(tmp_path, 2)
    assert [p.name for p in paths] == ["SYNTHETIC_001.png", "SYNTHETIC_002.png"]
    rgb = load_rgb(paths[0])
    centre, corner = rgb[150:230, 150:230].mean(), rgb[:40, :40].mean()
    assert centre < corner - 40  # a darker lesion on lighter skin


def test_demo_sends_studies_and_shows_the_results(tmp_path: Path) -> None:
    missing = [n for n in ("segmentation", "classifier", "bcc_sk") if not (STARTER_DIR / n / "model_card.json").is_file()]
    if missing:
        pytest.skip(f"no starter weights yet for {', '.join(missing)}")
    home = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--count", "2", "--keep", str(home)])
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC" in result.output and "SYNTHETIC_001" in result.stdout
    sr_lines = [line for line in result.stdout.splitlines() if line.strip().startswith("SR ")]
    assert len(sr_lines) == 2 and all(Path(line.split()[-1]).is_file() for line in sr_lines), result.stdout
    assert "stopped the node" in result.output
    assert (home / "node" / "queue" / "redis.db").is_file()  # the embedded Redis was saved and stopped

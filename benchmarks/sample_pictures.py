"""Write the real pictures that ship with our Python packages (photographs and scans that are not
dermoscopy) to a folder, as the `--others` set of `dermnode evaluate gate`.

    python benchmarks/sample_pictures.py OUT
    dermnode evaluate gate --data ../shared/data --others OUT --out REPORT

23 pictures. From scikit-image, 10 in colour (a person, a cat, coffee, a rocket, a motorcycle, a
fundus photograph, a galaxy field, a histology slide, a logo, a colour wheel) and 10 greyscale ones
(camera, coins, moon, brick, gravel, page, text, grass, clock, a cell micrograph); from
scikit-learn, a temple and a flower; from matplotlib, a portrait (Grace Hopper). Nothing is
downloaded: every picture lies in the installed packages (scikit-image is in the test extra).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from matplotlib import cbook
from PIL import Image
from skimage import data
from sklearn.datasets import load_sample_images

SKIMAGE_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "retina", "hubble_deep_field",
                 "immunohistochemistry", "logo", "colorwheel", "camera", "coins", "moon", "brick", "gravel", "page",
                 "text", "grass", "clock", "cell")
MATPLOTLIB_NAMES = ("grace_hopper.jpg",)


def pictures() -> dict[str, np.ndarray]:
    """Every sample picture by name, as uint8 greyscale or RGB."""
    found: dict[str, np.ndarray] = {}
    for name in SKIMAGE_NAMES:
        picture = getattr(data, name)()
        found[name] = np.asarray(picture[0] if isinstance(picture, tuple) else picture)  # a stereo pair: the left
    samples = load_sample_images()
    for path, picture in zip(samples.filenames, samples.images):
        found[Path(path).stem] = picture
    for name in MATPLOTLIB_NAMES:
        with cbook.get_sample_data(name) as handle:
            found[Path(name).stem] = np.asarray(Image.open(handle))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    found = pictures()
    for name, picture in found.items():
        if picture.dtype != np.uint8:
            picture = (255 * (picture.astype(float) / max(float(picture.max()), 1e-9))).astype(np.uint8)
        Image.fromarray(picture[..., :3] if picture.ndim == 3 else picture).save(out / f"{name}.png")
    print(f"{len(found)} pictures in {out}")


if __name__ == "__main__":
    main()

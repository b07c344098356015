"""Write scikit-image's sample pictures (real photographs and scans that are not dermoscopy) to a folder,
as the `--others` set of `dermnode evaluate gate`.

    python benchmarks/sample_pictures.py OUT
    dermnode evaluate gate --data ../shared/data --others OUT --out REPORT

17 pictures: 9 in colour (a person, a cat, coffee, a rocket, a fundus photograph, a galaxy field, a
histology slide, a logo, a colour wheel) and 8 greyscale ones (camera, coins, moon, brick, gravel,
page, text, grass). Needs the test extra (scikit-image).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

NAMES = ("astronaut", "chelsea", "coffee", "rocket", "retina", "hubble_deep_field", "immunohistochemistry", "logo",
         "colorwheel", "camera", "coins", "moon", "brick", "gravel", "page", "text", "grass")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        picture = np.asarray(getattr(data, name)())
        if picture.dtype != np.uint8:
            picture = (255 * (picture.astype(float) / max(float(picture.max()), 1e-9))).astype(np.uint8)
        Image.fromarray(picture[..., :3] if picture.ndim == 3 else picture).save(out / f"{name}.png")
    print(f"{len(NAMES)} pictures in {out}")


if __name__ == "__main__":
    main()

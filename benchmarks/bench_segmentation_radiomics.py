"""Seconds per 512x512 image for lesion segmentation and radiomics on this machine's CPU.

    .venv/bin/python benchmarks/bench_segmentation_radiomics.py [--data ../shared/data] [--n 30]

Images come one at a time (as the node sees them); radiomics runs on the predicted mask (the expert
mask where the segmenter finds no lesion). Prints mean, median and 90th percentile per stage.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from dermnode.models.images import load_mask, load_rgb, resize_mask, resize_rgb
from dermnode.models.radiomics import RadiomicsExtractor
from dermnode.models.segmentation.predict import LesionSegmenter

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--n", type=int, default=30, help="number of images")
    parser.add_argument("--weights", type=Path, default=None, help="segmentation model folder (default: starter)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    image_paths = sorted((args.data / "isic2018-task1" / "images").glob("*.jpg"))[: args.n]
    if not image_paths:
        raise SystemExit(f"no images under {args.data / 'isic2018-task1' / 'images'}")
    images = [resize_rgb(load_rgb(p), (512, 512)) for p in image_paths]
    experts = [resize_mask(load_mask(p.parent.parent / "masks" / f"{p.stem}_segmentation.png"), (512, 512))
               for p in image_paths]
    segmenter = LesionSegmenter.load(args.weights, device="cpu")
    extractor = RadiomicsExtractor()
    segmenter.predict(images[:1])  # warm-up
    extractor.extract(images[0], experts[0])

    seg_times, rad_times, failures = [], [], 0
    for image, expert in zip(images, experts):
        start = time.perf_counter()
        result = segmenter.predict([image])[0]
        seg_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        features = extractor.extract(image, result.mask if result.mask is not None else expert)
        rad_times.append(time.perf_counter() - start)
        failures += features.error is not None
    print(f"{len(images)} images 512x512, torch threads {torch.get_num_threads()}, model {segmenter.card.architecture}"
          f" ({segmenter.card.profile}), radiomics failures {failures}")
    for name, times, target in (("segmentation", seg_times, 1.0), ("radiomics", rad_times, 0.3)):
        t = np.array(times)
        print(f"{name:13s} mean {t.mean():.3f} s  median {np.median(t):.3f} s  p90 {np.percentile(t, 90):.3f} s"
              f"  (target <= {target} s per image)")


if __name__ == "__main__":
    main()

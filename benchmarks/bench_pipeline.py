"""Seconds per image and per stage of the analysis pipeline (starter models unless --models-dir).

    python benchmarks/bench_pipeline.py [--data ../shared/data] [--images 16] [--batch-sizes 1,8]

Prints the model loading time, then for each collection (ISIC 2018 at 512x512, 8-class at 180x180)
and batch size: mean seconds per image for each stage, and images per second overall.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from dermnode.contract import PatientMetadata
from dermnode.models.images import load_rgb
from dermnode.node.settings import load_settings
from dermnode.workers.pipeline import STAGES, Analyzer, SourceImage

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--models-dir", type=Path, default=None)
    args = parser.parse_args()

    settings = load_settings(models_dir=args.models_dir)
    start = time.perf_counter()
    analyzer = Analyzer.load(settings)
    print(f"models loaded in {time.perf_counter() - start:.2f} s: "
          + ", ".join(f"{m.name} {m.version}" for m in analyzer.identities))

    for collection in ("isic2018-task1", "isic-8class"):
        paths = sorted((args.data / collection / "images").glob("ISIC_*.jpg"))[: args.images]
        if not paths:
            print(f"{collection}: no images under {args.data}")
            continue
        images = [SourceImage(load_rgb(p), PatientMetadata(), None, p.stem) for p in paths]
        analyzer.analyze(images[:1])  # warm-up
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            analyzer.batch_size = batch_size
            start = time.perf_counter()
            results = analyzer.analyze(images)
            wall = time.perf_counter() - start
            stages = {s: statistics.mean(r.seconds.get(s, 0.0) for r in results) for s in STAGES}
            found = sum(r.mask is not None for r in results)
            print(f"{collection} {images[0].rgb.shape[1]}x{images[0].rgb.shape[0]}, {len(images)} images, "
                  f"batch {batch_size}: " + ", ".join(f"{s} {v:.3f}" for s, v in stages.items())
                  + f" s/image; {len(images) / wall:.2f} images/s; lesions found {found}/{len(images)}")


if __name__ == "__main__":
    main()

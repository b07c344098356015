"""Per-image inference time of the starter fusion classifier and BCC/SK model on this machine.

Usage: .venv/bin/python benchmarks/bench_classifier_bcc_sk.py [--data ../shared/data] [--n 30]

Images are read from the data folder (both collections, their own sizes), one image per call as
the node does; the classifier gets the expert mask and radiomics computed beforehand (they are
the segmentation and radiomics stages, benchmarked by their owners). Targets: <= 0.3 s each.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from dermnode.models.bcc_sk.predict import BccSkModel
    from dermnode.models.classifier.predict import FusionClassifier
    from dermnode.models.dataset_index import load_records
    from dermnode.models.images import load_mask, load_rgb
    from dermnode.models.radiomics import RadiomicsExtractor

    records = [r for r in load_records(args.data) if r.mask_path is not None][: args.n // 2]
    records += [r for r in load_records(args.data) if r.mask_path is None][: args.n - len(records)]
    images = [load_rgb(r.image_path) for r in records]
    masks = [load_mask(r.mask_path) if r.mask_path else None for r in records]
    extractor = RadiomicsExtractor()
    radiomics = [extractor.extract(i, m).features if m is not None else None for i, m in zip(images, masks)]
    classifier, bcc_sk = FusionClassifier.load(device="cpu"), BccSkModel.load(device="cpu")
    classifier.predict(images[:1], masks[:1], [records[0].metadata], radiomics[:1])  # warm-up
    bcc_sk.predict(images[:1])

    def timed(function) -> list[float]:
        seconds = []
        for i in range(len(images)):
            start = time.perf_counter()
            function(i)
            seconds.append(time.perf_counter() - start)
        return seconds

    results = {
        "classifier": timed(lambda i: classifier.predict([images[i]], [masks[i]], [records[i].metadata], [radiomics[i]])),
        "bcc_sk": timed(lambda i: bcc_sk.predict([images[i]])),
        "bcc_sk attention map": timed(lambda i: bcc_sk.attention_map(images[i])),
    }
    print(f"{len(images)} images ({', '.join(sorted({f'{i.shape[1]}x{i.shape[0]}' for i in images}))}), "
          f"torch threads {torch.get_num_threads()}")
    for name, seconds in results.items():
        print(f"{name:22s} median {statistics.median(seconds):.4f} s/image, mean {statistics.mean(seconds):.4f}, "
              f"max {max(seconds):.4f}  (target <= 0.3 s)" if name != "bcc_sk attention map" else
              f"{name:22s} median {statistics.median(seconds):.4f} s/image, mean {statistics.mean(seconds):.4f}, max {max(seconds):.4f}")


if __name__ == "__main__":
    main()

"""`dermnode analyze`: the node's analysis on files, without the network.

Inputs are image files (JPEG, PNG, ...; patient metadata from an optional CSV laid out as the ISIC
``metadata.csv``: ``image_id, age_approx, sex, anatom_site_general``, matched on the file name
without extension, read by ``dicom_templates.dicomize.read_metadata_csv``) or DICOM files, or folders holding them. For each image the mask goes to
``<out>/<name>_mask.png`` (when a lesion was found); for DICOM input the SEG, SR and KOS go beside it
as ``<name>_seg.dcm``, ``<name>_sr.dcm``, ``<name>_kos.dcm``. One result record per image comes back
(printed as a JSON line by the command).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from dermnode.contract import LesionAnalysis, PatientMetadata
from dermnode.workers.pipeline import Analyzer, SourceImage

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
DICOM_SUFFIXES = {".dcm", ".dicom"}


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return False
    with path.open("rb") as handle:
        return handle.read(132)[128:132] == b"DICM"


def collect_inputs(paths: list[Path]) -> list[Path]:
    """The files to analyse: files as given, folders searched (recursively) for images and DICOM."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                       and (p.suffix.lower() in IMAGE_SUFFIXES | DICOM_SUFFIXES or _is_dicom(p)))
            )
        else:
            found.append(path)
    return found


@dataclass
class Loaded:
    """An input file, read: a SourceImage, or why it could not be read (with the DICOM dataset, if any)."""

    path: Path
    name: str
    image: SourceImage | None
    error: str | None = None
    seconds: float = 0.0
    dataset: object | None = None


def load_input(path: Path, name: str, metadata: dict[str, PatientMetadata]) -> Loaded:
    """Read an image or DICOM file into a SourceImage; a clear error instead when it cannot be."""
    start = time.perf_counter()
    ds = None
    try:
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist or is not a file")
        if _is_dicom(path):
            from pydicom import dcmread

            from dermnode.dicom_templates.image_conversion import decode_rgb, patient_metadata, pixel_spacing_mm

            ds = dcmread(path)
            image = SourceImage(decode_rgb(ds), patient_metadata(ds), pixel_spacing_mm(ds), name, ds)
        else:
            from dermnode.models.images import load_rgb

            image = SourceImage(load_rgb(path), metadata.get(path.stem, PatientMetadata()), None, name)
    except Exception as error:  # noqa: BLE001 - reported for this file, the others go on
        return Loaded(path, name, None, f"{type(error).__name__}: {error}", time.perf_counter() - start, ds)
    return Loaded(path, name, image, None, time.perf_counter() - start, ds)


def unique_names(paths: list[Path]) -> list[str]:
    """Output names from file stems, numbered where two inputs share a stem."""
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        count = seen.get(path.stem, 0) + 1
        seen[path.stem] = count
        names.append(path.stem if count == 1 else f"{path.stem}_{count}")
    return names


def write_outputs(loaded: Loaded, analysis: LesionAnalysis, out: Path, settings) -> dict[str, str | None]:
    """The mask PNG and, for DICOM input, the SEG / SR / KOS files; returns their paths."""
    from PIL import Image

    written: dict[str, str | None] = {"mask": None}
    if analysis.mask is not None:
        mask_path = out / f"{loaded.name}_mask.png"
        Image.fromarray(np.where(analysis.mask, 255, 0).astype(np.uint8), mode="L").save(mask_path)
        written["mask"] = str(mask_path)
    if loaded.dataset is not None:  # DICOM input, even when its pixels could not be decoded
        from pydicom import dcmwrite

        from dermnode.dicom_templates.results import build_results

        results = build_results(loaded.dataset, analysis, kos_enabled=settings.kos_enabled,
                                for_diagnostic_use=settings.for_diagnostic_use)
        for kind, ds in (("seg", results.seg), ("sr", results.sr), ("kos", results.kos)):
            if ds is not None:
                path = out / f"{loaded.name}_{kind}.dcm"
                dcmwrite(path, ds, enforce_file_format=True)
                written[kind] = str(path)
    return written


def record(loaded: Loaded, analysis: LesionAnalysis, written: dict[str, str | None]) -> dict:
    """The JSON record of one image."""
    return {
        "image": str(loaded.path),
        "status": analysis.status.value,
        "probabilities": {code: round(p, 6) for code, p in analysis.probabilities.items()},
        "top_class": analysis.top_class,
        "malignancy_probability": (None if analysis.malignancy_probability is None
                                   else round(analysis.malignancy_probability, 6)),
        "veto": analysis.veto,
        "veto_threshold": analysis.veto_threshold,
        "bcc_probability": None if analysis.bcc_probability is None else round(analysis.bcc_probability, 6),
        "bcc_sk_call": analysis.bcc_sk_call,
        "segmentation_confidence": analysis.segmentation_confidence,
        "lesion_area": analysis.lesion_area,
        "lesion_area_unit": analysis.lesion_area_unit if analysis.mask is not None else None,
        "radiomics": analysis.radiomics,
        **written,
        "models": {m.name: {"version": m.version, "sha256": m.sha256} for m in analysis.models},
        "seconds": round(loaded.seconds + sum(analysis.seconds.values()), 4),
        "stage_seconds": {"load": round(loaded.seconds, 4), **analysis.seconds},
        "failure_reason": analysis.failure_reason,
    }


def analyze_files(
    files: list[Path], out: Path, analyzer: Analyzer, settings, metadata: dict[str, PatientMetadata] | None = None,
    progress: bool = False,
) -> Iterator[dict]:
    """Analyse ``files`` ``analyzer.batch_size`` at a time, writing outputs under ``out``; yields records."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    names = unique_names(files)
    size = analyzer.batch_size
    with tqdm(total=len(files), unit="image", disable=not progress, desc="analysing") as bar:
        for start in range(0, len(files), size):
            batch = [load_input(path, name, metadata or {})
                     for path, name in zip(files[start:start + size], names[start:start + size])]
            readable = [item for item in batch if item.image is not None]
            analyses = iter(analyzer.analyze([item.image for item in readable]))
            for item in batch:
                if item.image is None:
                    analysis = analyzer.failed(f"could not read {item.path}: {item.error}")
                else:
                    analysis = next(analyses)
                try:
                    written = write_outputs(item, analysis, out, settings)
                except Exception as error:  # noqa: BLE001 - reported for this image
                    written = {"mask": None, "output_error": f"{type(error).__name__}: {error}"}
                yield record(item, analysis, written)
                bar.update(1)

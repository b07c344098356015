"""DICOM SEG of the lesion: highdicom Segmentation, BINARY, one segment, referencing the source image.

Photographic sources have no plane position; highdicom's single-frame path handles them. Two fixes
on top of highdicom 0.28 keep the SEG clean and readable: an empty Patient Orientation (General
Image, Type 2C) and no Pixel Measures functional group when it would lack Slice Thickness.
"""

from __future__ import annotations

import importlib.metadata

import highdicom as hd
import numpy as np
from pydicom import Dataset

from dermnode.contract import ModelIdentity
from dermnode.dicom_templates import codes

SEGMENTATION_ALGORITHM = "dermnode-lesion-segmentation"
LESION_SEGMENT_NUMBER = 1
MANUFACTURER = "dermnode"


def software_version() -> str:
    return importlib.metadata.version("dermnode")


def algorithm_identification(model: ModelIdentity | None) -> hd.AlgorithmIdentificationSequence:
    """Segmentation algorithm: name, version (of the model weights), family Artificial Intelligence."""
    return hd.AlgorithmIdentificationSequence(
        name=SEGMENTATION_ALGORITHM,
        version=model.version if model else software_version(),
        family=codes.ARTIFICIAL_INTELLIGENCE,
        source=model.name if model else None,
        parameters={"sha256": model.sha256} if model else None,
    )


def build_seg(
    source: Dataset,
    mask: np.ndarray,
    *,
    model: ModelIdentity | None,
    series_number: int,
    for_diagnostic_use: bool = False,
) -> hd.seg.Segmentation:
    """A binary SEG with one 'Lesion' segment for ``mask`` (rows x columns of the source)."""
    if mask.shape != (source.Rows, source.Columns):
        raise ValueError(f"mask is {mask.shape}, the source image is {(source.Rows, source.Columns)}")
    description = hd.seg.SegmentDescription(
        segment_number=LESION_SEGMENT_NUMBER,
        segment_label="Lesion",
        segmented_property_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        segmented_property_type=codes.LESION,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm_identification(model),
    )
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=mask.astype(np.uint8)[np.newaxis],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="dermnode",
        software_versions=software_version(),
        device_serial_number="0",
        series_description="dermnode lesion segmentation (AI)",
        content_label="LESION",
        content_description="Lesion segmented by dermnode",
        omit_empty_frames=False,
    )
    shared = seg.SharedFunctionalGroupsSequence[0]
    if "PixelMeasuresSequence" in shared and "SliceThickness" not in shared.PixelMeasuresSequence[0]:
        # highdicom copies a photograph's Pixel Spacing without Slice Thickness (Type 1C, not
        # applicable to a photograph) and then cannot read the SEG back; the spacing stays the
        # source's (Spatial Locations Preserved) and is in the SR.
        del shared.PixelMeasuresSequence
    if "PatientOrientation" not in seg:
        seg.PatientOrientation = ""  # Type 2C, required for images without plane position
    if not for_diagnostic_use:
        seg.ContentQualification = "RESEARCH"
        seg.SeriesDescription = "dermnode lesion segmentation (AI, not for diagnostic use)"
    return seg


def read_mask(seg: Dataset) -> np.ndarray:
    """The lesion mask (bool, rows x columns) of a SEG written by :func:`build_seg`."""
    segmentation = seg if isinstance(seg, hd.seg.Segmentation) else hd.seg.Segmentation.from_dataset(seg)
    source_uid = segmentation.get_source_image_uids()[0][2]
    pixels = segmentation.get_pixels_by_source_instance(
        source_sop_instance_uids=[source_uid], segment_numbers=[LESION_SEGMENT_NUMBER]
    )
    return pixels[0, :, :, 0].astype(bool)

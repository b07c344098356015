"""DICOM SEG of the lesion: highdicom Segmentation, BINARY, one segment, referencing the source image.

Photographic sources have no plane position; highdicom's single-frame path handles them. On top
of highdicom 0.28 the SEG gets:

- the plane geometry that OHIF's SEG loaders (@cornerstonejs/adapters, dcmjs' Cornerstone adapter)
  need to place the segment on its source: Plane Orientation (1,0,0 / 0,1,0) and Plane Position
  (0,0,0) in the source's Frame of Reference, or, for a source without one, in a new frame of this
  photograph alone (see :func:`add_photograph_plane`);
- an empty Patient Orientation (General Image, Type 2C);
- no Pixel Measures functional group: highdicom copies a photograph's Pixel Spacing without the
  Slice Thickness a photograph does not have (Type 1C, and highdicom cannot read such a SEG back).
"""

from __future__ import annotations

import importlib.metadata

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.uid import generate_uid

from dermnode.contract import ModelIdentity
from dermnode.dicom_templates import codes

SEGMENTATION_ALGORITHM = "dermnode-lesion-segmentation"
LESION_SEGMENT_NUMBER = 1
MANUFACTURER = "dermnode"
#: Plane geometry of a photograph's SEG frame (see add_photograph_plane).
PHOTOGRAPH_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
PHOTOGRAPH_ORIGIN = (0.0, 0.0, 0.0)


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
        del shared.PixelMeasuresSequence  # the spacing stays the source's and is in the SR
    add_photograph_plane(seg, source)
    if "PatientOrientation" not in seg:
        seg.PatientOrientation = ""  # Type 2C, required for images without plane position
    if not for_diagnostic_use:
        seg.ContentQualification = "RESEARCH"
        seg.SeriesDescription = "dermnode lesion segmentation (AI, not for diagnostic use)"
    return seg


def add_photograph_plane(seg: Dataset, source: Dataset) -> None:
    """Place the SEG's single frame on its source photograph, for loaders that need plane geometry.

    A photograph has no patient coordinates. The frame of reference used here is the photograph's
    own (the source's Frame of Reference UID with an empty Position Reference Indicator, or a UID
    derived from the source's SOP Instance UID when it has none), shared by no other image. In it,
    the orientation (1,0,0 / 0,1,0) and the position (0,0,0) only say that the segment's pixel grid
    is the photograph's: what viewers assume for a photograph without plane geometry anyway. Nothing
    anatomical is claimed, and the source image is not changed."""
    if "PlanePositionSequence" in seg.PerFrameFunctionalGroupsSequence[0]:
        return  # highdicom found plane geometry in the source: keep it
    if "FrameOfReferenceUID" not in seg:
        seg.FrameOfReferenceUID = generate_uid(entropy_srcs=[str(source.SOPInstanceUID), "photograph-plane"])
        seg.PositionReferenceIndicator = ""
    seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence = hd.PlaneOrientationSequence(
        coordinate_system="PATIENT", image_orientation=PHOTOGRAPH_ORIENTATION
    )
    for frame in seg.PerFrameFunctionalGroupsSequence:
        frame.PlanePositionSequence = hd.PlanePositionSequence(
            coordinate_system="PATIENT", image_position=PHOTOGRAPH_ORIGIN
        )


def read_mask(seg: Dataset) -> np.ndarray:
    """The lesion mask (bool, rows x columns) of a SEG written by :func:`build_seg`."""
    segmentation = seg if isinstance(seg, hd.seg.Segmentation) else hd.seg.Segmentation.from_dataset(seg)
    source_uid = segmentation.get_source_image_uids()[0][2]
    pixels = segmentation.get_pixels_by_source_instance(
        source_sop_instance_uids=[source_uid], segment_numbers=[LESION_SEGMENT_NUMBER]
    )
    return pixels[0, :, :, 0].astype(bool)

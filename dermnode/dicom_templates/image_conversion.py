"""Photographic DICOM in and out: header checks at C-STORE time, decoding, and image-to-DICOM.

- :func:`check_incoming` is cheap (header only, no decoding) so the SCP can refuse bad instances
  before it answers; :func:`check_identity` refuses instances without the UIDs a result needs or
  with a character set pydicom cannot decode; :func:`check_decodable` refuses pixel data that
  does not decode under its transfer syntax; :func:`decode_rgb` decodes and refuses what cannot
  be decoded. Refusal messages never quote free-text element values (they could hold PHI).
- :func:`patient_metadata` and :func:`pixel_spacing_mm` read what the models need from a header.
- :func:`dicomize_image` turns a JPEG/PNG dermoscopy image into a Dermoscopic Photography Image
  Storage instance (JPEG Baseline); baseline JPEG files are carried byte for byte.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import re
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import Dataset
from pydicom.charset import python_encoding
from pydicom.dataset import FileMetaDataset
from pydicom.pixels import pixel_array
from pydicom.pixels.decoders.base import DecodeRunner
from pydicom.encaps import encapsulate, generate_fragmented_frames, generate_frames
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    DermoscopicPhotographyImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    PYDICOM_IMPLEMENTATION_UID,
    RLELossless,
    SecondaryCaptureImageStorage,
    UID,
    VLPhotographicImageStorage,
    generate_uid,
)

from dermnode.contract import PatientMetadata
from dermnode.dicom_templates.codes import ISIC_SITE_CODES, SITE_BY_CODE, UNPAIRED_REGION_CODES

#: The photographic SOP classes the node accepts (single-frame colour images).
SUPPORTED_SOP_CLASSES: dict[str, str] = {
    DermoscopicPhotographyImageStorage: "Dermoscopic Photography Image Storage",
    VLPhotographicImageStorage: "VL Photographic Image Storage",
    SecondaryCaptureImageStorage: "Secondary Capture Image Storage",
}
#: Transfer syntaxes whose pixel data the installed decoders (pydicom, pylibjpeg-libjpeg, pyjpegls) read.
SUPPORTED_TRANSFER_SYNTAXES: list[str] = [
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
]
COLOUR_INTERPRETATIONS = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
#: Photometric Interpretations a refusal may name; any other value is not quoted (it could be anything).
_NAMED_INTERPRETATIONS = {*COLOUR_INTERPRETATIONS, "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "YBR_PARTIAL_420"}
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
#: The UIDs without which no result can reference an instance: refused at C-STORE when absent.
REQUIRED_UIDS = {"StudyInstanceUID": "Study Instance UID", "SeriesInstanceUID": "Series Instance UID",
                 "SOPInstanceUID": "SOP Instance UID"}
#: Largest accepted Rows or Columns: a header claiming more is refused before anything is decoded.
MAX_DIMENSION = 16384
_JPEG_FAMILY = {JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLosslessSV1, JPEGLossless}
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
CONVERTER_MANUFACTURER = "dermnode"
CONVERTER_MODEL = "dermnode dicomize"


class InvalidInstance(ValueError):
    """An instance the node cannot analyse; the message says why, in words."""


# ------------------------------------------------------------------------------ incoming instances


def check_incoming(ds: Dataset) -> None:
    """Refuse an instance the node cannot analyse, from its header alone (no decoding)."""
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class not in SUPPORTED_SOP_CLASSES:
        raise InvalidInstance(f"SOP class {_quoted_uid(sop_class)} is not a supported photographic image class")
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if syntax and syntax not in SUPPORTED_TRANSFER_SYNTAXES:
        raise InvalidInstance(f"transfer syntax {syntax} ({UID(syntax).name}) is not supported")
    _check_pixel_header(ds, syntax)


def _check_pixel_header(ds: Dataset, syntax: str = "") -> None:
    if "PixelData" not in ds or ds.PixelData is None or len(ds.PixelData) == 0:
        raise InvalidInstance("the instance has no pixel data")
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows <= 0 or columns <= 0:
        raise InvalidInstance(f"the image is {rows}x{columns} pixels")
    if rows > MAX_DIMENSION or columns > MAX_DIMENSION:
        raise InvalidInstance(f"the header claims {rows}x{columns} pixels, above the limit of {MAX_DIMENSION}")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if int(ds.get("SamplesPerPixel") or 0) != 3 or photometric not in COLOUR_INTERPRETATIONS:
        named = photometric if photometric in _NAMED_INTERPRETATIONS else "an unsupported"
        raise InvalidInstance(f"{named} image: only colour (3-sample) images are analysed")
    bits = int(ds.get("BitsAllocated") or 0)
    if bits != 8:
        raise InvalidInstance(f"{bits} bits allocated: only 8-bit colour images are analysed")
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames != 1:
        raise InvalidInstance(f"{frames} frames: only single-frame images are analysed")
    if syntax in _JPEG_FAMILY:
        _check_jpeg_header(_first_fragment(ds.PixelData), rows, columns)
    elif syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        if len(ds.PixelData) < rows * columns * 3:
            raise InvalidInstance(f"{len(ds.PixelData)} bytes of pixel data for a {rows}x{columns} colour image")


def _quoted_uid(value: str) -> str:
    """A UID as it may appear in a refusal: itself when it is one, else a placeholder."""
    return valid_uid(value) or ("(not a UID)" if value.strip() else "(none)")


def valid_uid(value: object) -> str | None:
    """The text of a UID (digits and dots, at most 64 characters), or None when it is not one."""
    text = str(value or "").strip()
    return text if len(text) <= 64 and _UID.match(text) else None


def check_identity(ds: Dataset) -> None:
    """Refuse an instance whose results could not reference it or whose text cannot be decoded.

    Study, Series and SOP Instance UIDs must be present and valid; every Specific Character Set
    term must be one pydicom decodes (pydicom would otherwise fall back to Latin-1 silently).
    Patient and study attributes (Patient ID, name, birth date, sex, Study Date, Accession
    Number) may be absent or empty: they are carried through (see docs/CONFORMANCE.md).
    """
    for keyword, name in REQUIRED_UIDS.items():
        if keyword not in ds or not str(ds.get(keyword) or "").strip():
            raise InvalidInstance(f"the instance has no {name}")
        if valid_uid(ds.get(keyword)) is None:
            raise InvalidInstance(f"the {name} is not a valid DICOM UID (digits and dots, at most 64)")
    terms = ds.get("SpecificCharacterSet") or []
    for term in [terms] if isinstance(terms, str) else terms:
        if str(term).strip() not in python_encoding:
            raise InvalidInstance("the Specific Character Set is not one the node can decode")


def check_decodable(ds: Dataset) -> None:
    """Refuse pixel data that does not decode, with the worker's decoder, under its transfer syntax.

    A JPEG stream must also end with an end-of-image marker: lossless JPEG decoders fill in a
    truncated stream silently. JPEG Baseline and Extended, which the worker decodes with Pillow,
    get pydicom's checks of the Image Pixel module and are decoded by Pillow at 1/8 scale: every
    entropy-coded byte is still read (damage is found), at a fraction of the cost of the full
    decode; other syntaxes are decoded in full.
    """
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if syntax not in _JPEG_FAMILY:
        _check_decode_rgb(ds, syntax)
        return
    try:
        stream = next(generate_frames(ds.PixelData, number_of_frames=1))
    except Exception:  # noqa: BLE001 - any parse error means the encapsulation is broken
        raise InvalidInstance("the encapsulated pixel data is malformed") from None
    if not stream.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise InvalidInstance("corrupt JPEG: the stream is truncated (no end-of-image marker)")
    if syntax not in (JPEGBaseline8Bit, JPEGExtended12Bit):
        _check_decode_rgb(ds, syntax)
        return
    try:
        runner = DecodeRunner(UID(syntax))  # pydicom's checks of the Image Pixel module, as decode_rgb's
        runner.set_source(ds)
        runner.validate()
        image = Image.open(io.BytesIO(stream), formats=["JPEG"])
        image.draft(image.mode, (max(1, ds.Columns // 8), max(1, ds.Rows // 8)))
        image.load()
    except Exception:  # noqa: BLE001 - whatever pydicom or Pillow raises, it does not decode
        raise InvalidInstance(f"the pixel data does not decode as {UID(syntax).name}") from None
    if len(image.getbands()) != 3:
        raise InvalidInstance(f"the JPEG stream has {len(image.getbands())} components, not 3")


def _check_decode_rgb(ds: Dataset, syntax: str) -> None:
    try:
        decode_rgb(ds)
    except InvalidInstance:
        raise InvalidInstance(f"the pixel data does not decode as {UID(syntax).name or 'declared'}") from None


def _first_fragment(pixel_data: bytes) -> bytes:
    try:
        return next(generate_fragmented_frames(pixel_data, number_of_frames=1))[0]
    except (StopIteration, ValueError, IndexError) as error:
        raise InvalidInstance(f"the encapsulated pixel data is malformed ({type(error).__name__})") from None


def _check_jpeg_header(stream: bytes, rows: int, columns: int) -> None:
    """The JPEG stream starts with SOI and its frame header agrees with Rows and Columns."""
    if stream[:2] != b"\xff\xd8":
        raise InvalidInstance("corrupt JPEG: the pixel data does not start with a JPEG SOI marker")
    size = _jpeg_frame_size(stream)
    if size is None:
        raise InvalidInstance("corrupt JPEG: no frame header (SOF) in the first fragment")
    if size != (rows, columns):
        raise InvalidInstance(f"corrupt JPEG: the stream is {size[0]}x{size[1]} but the header says {rows}x{columns}")


def _jpeg_frame_size(stream: bytes) -> tuple[int, int] | None:
    """(rows, columns) from the first SOF marker, walking marker segments; None if not found."""
    position = 2
    while position + 4 <= len(stream):
        if stream[position] != 0xFF:
            return None
        marker = stream[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        length = int.from_bytes(stream[position + 2 : position + 4], "big")
        if marker in _SOF_MARKERS:
            segment = stream[position + 4 : position + 2 + length]
            if len(segment) < 5:
                return None
            return int.from_bytes(segment[1:3], "big"), int.from_bytes(segment[3:5], "big")
        if marker == 0xDA:  # start of scan before any frame header
            return None
        position += 2 + length
    return None


def _jpeg_info(stream: bytes) -> tuple[int | None, int, tuple[int, ...]]:
    """(SOF marker, number of components, sampling factors) of a JPEG stream."""
    position = 2
    while position + 4 <= len(stream) and stream[position] == 0xFF:
        marker = stream[position + 1]
        length = int.from_bytes(stream[position + 2 : position + 4], "big")
        if marker in _SOF_MARKERS:
            segment = stream[position + 4 : position + 2 + length]
            components = segment[5]
            factors = tuple(segment[6 + 3 * i + 1] for i in range(components))
            return marker, components, factors
        position += 2 + length
    return None, 0, ()


def decode_rgb(ds: Dataset) -> np.ndarray:
    """The image as an (H, W, 3) uint8 RGB array; InvalidInstance when it cannot be decoded."""
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    _check_pixel_header(ds, syntax)
    # Pillow refuses truncated JPEG streams; libjpeg would silently fill in the missing part.
    options = {"decoding_plugin": "pillow"} if syntax in (JPEGBaseline8Bit, JPEGExtended12Bit) else {}
    try:
        pixels = pixel_array(ds, **options)  # YBR is converted to RGB (as_rgb defaults to True)
    except Exception as error:  # any decoder failure means unusable pixel data
        raise InvalidInstance(f"the pixel data could not be decoded: {error}") from None
    if pixels.shape != (ds.Rows, ds.Columns, 3):
        raise InvalidInstance(f"decoded pixel data has shape {pixels.shape}, expected {(ds.Rows, ds.Columns, 3)}")
    return np.ascontiguousarray(pixels, dtype=np.uint8)


# ----------------------------------------------------------------------------------- header reading


def patient_metadata(ds: Dataset) -> PatientMetadata:
    """Age, sex and anatomic site (ISIC vocabulary) from the header; None where absent or unknown."""
    return PatientMetadata(age=_age_years(ds.get("PatientAge")), sex=_sex(ds.get("PatientSex")), anatomic_site=_site(ds))


def _age_years(value: object) -> float | None:
    match = re.fullmatch(r"(\d{3})([DWMY])", str(value or "").strip())
    if match is None:
        return None
    per_year = {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}[match.group(2)]
    return round(int(match.group(1)) / per_year, 2)


def _sex(value: object) -> str | None:
    return {"M": "male", "F": "female"}.get(str(value or "").strip().upper())


def _site(ds: Dataset) -> str | None:
    for item in ds.get("AnatomicRegionSequence", []):
        site = SITE_BY_CODE.get((str(item.get("CodingSchemeDesignator", "")), str(item.get("CodeValue", ""))))
        if site is not None:
            return site
    return None


def pixel_spacing_mm(ds: Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm from Pixel Spacing or Imager Pixel Spacing, if the header has it."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2 and all(float(v) > 0 for v in value):
            return float(value[0]), float(value[1])
    return None


# ----------------------------------------------------------------------------------- image to DICOM


def dicomize_image(image_path: Path, image_id: str, metadata: PatientMetadata) -> Dataset:
    """A Dermoscopic Photography Image Storage instance (JPEG Baseline) of one JPEG/PNG image.

    One study per ``image_id``, kept as Patient ID and Accession Number. UIDs derive from the
    image id and the file's content, so converting the same file twice gives the same instance.
    """
    raw = Path(image_path).read_bytes()
    try:
        image = Image.open(io.BytesIO(raw))
        image.load()
    except Exception as error:
        raise InvalidInstance(f"{image_path} is not a readable image: {error}") from None
    stream, photometric = _baseline_jpeg(raw, image)
    columns, rows = image.size
    digest = hashlib.sha256(raw).hexdigest()
    now = datetime.now()

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = DermoscopicPhotographyImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[image_id, digest, "instance"])
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = DermoscopicPhotographyImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    # Patient, study, series
    ds.PatientName = ""  # ISIC images are anonymous; the image id is the Patient ID
    ds.PatientID = image_id
    ds.PatientBirthDate = ""
    ds.PatientSex = {"male": "M", "female": "F"}.get(metadata.sex or "", "")
    ds.PatientAge = f"{int(metadata.age):03d}Y" if metadata.age is not None else ""
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[image_id, "study"])
    ds.StudyDate = ds.InstanceCreationDate
    ds.StudyTime = ds.InstanceCreationTime
    ds.ReferringPhysicianName = ""
    ds.StudyID = image_id[-16:]
    ds.AccessionNumber = image_id[-16:]
    ds.StudyDescription = "Dermoscopy"
    ds.Modality = "DMS"
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[image_id, "series"])
    ds.SeriesNumber = 1
    site = ISIC_SITE_CODES.get(metadata.anatomic_site or "")
    if site is None or (site.scheme_designator, site.value) not in UNPAIRED_REGION_CODES:
        ds.Laterality = ""  # Type 2C: the side of a lesion is not in the ISIC metadata
    # Frame of Reference: not in the current IOD, but dicom3tools (2022) still requires it for DMS
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[image_id, "frame-of-reference"])
    ds.PositionReferenceIndicator = ""
    ds.SeriesDescription = f"Dermoscopy {image_id} (converted by dermnode)"
    # Equipment: the converter (the acquisition device is unknown)
    ds.Manufacturer = CONVERTER_MANUFACTURER
    ds.ManufacturerModelName = CONVERTER_MODEL
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = importlib.metadata.version("dermnode")
    # Image
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ContentDate = ds.InstanceCreationDate
    ds.ContentTime = ds.InstanceCreationTime
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ImageComments = f"Converted from {Path(image_path).name} (sha256 {digest[:16]})"
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.AcquisitionContextSequence = []
    if site is not None:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = site.value, site.scheme_designator, site.meaning
        ds.AnatomicRegionSequence = [item]
    # Dermoscopic Image module: unknown for archive images (Type 2, empty)
    ds.LightSourcePolarization = ""
    ds.EmitterColorTemperature = ""
    ds.ContactMethod = ""
    ds.OpticalMagnificationFactor = ""
    # Pixels
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = photometric
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = f"{rows * columns * 3 / len(stream):.2f}"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True  # encapsulated: also when sent from memory (pynetdicom)
    return ds


def _baseline_jpeg(raw: bytes, image: Image.Image) -> tuple[bytes, str]:
    """(baseline JPEG stream, Photometric Interpretation): the file itself if it already is one."""
    if image.format == "JPEG" and image.mode == "RGB":
        marker, components, factors = _jpeg_info(raw)
        adobe_rgb = image.info.get("adobe_transform") == 0
        if marker == 0xC0 and components == 3 and not adobe_rgb:
            subsampled = any(f != 0x11 for f in factors)
            return raw, "YBR_FULL_422" if subsampled else "YBR_FULL"
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=95, subsampling="4:2:2", optimize=False)
    return buffer.getvalue(), "YBR_FULL_422"

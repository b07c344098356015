"""Image-to-DICOM conversion, header checks at C-STORE time, decoding, and header reading.

Also the source images the other template tests use: a dicomized ISIC image and a VL Photographic
image built from an array (:func:`dicomized_isic`, :func:`vl_photographic_image`).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate, generate_fragmented_frames
from pydicom.uid import (
    CTImageStorage,
    DermoscopicPhotographyImageStorage,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    VLPhotographicImageStorage,
    generate_uid,
)
from typer.testing import CliRunner

from dermnode.contract import PatientMetadata
from dermnode.dicom_templates.codes import ISIC_SITE_CODES
from dermnode.dicom_templates.dicomize import read_metadata_csv
from dermnode.dicom_templates.image_conversion import (
    InvalidInstance,
    check_incoming,
    decode_rgb,
    dicomize_image,
    patient_metadata,
    pixel_spacing_mm,
)
from peers import assert_dciodvfy_clean, shared_data

ISIC_ID = "ISIC_0000019"


def isic_image_path() -> Path:
    path = shared_data() / "isic-8class" / "images" / f"{ISIC_ID}.jpg"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


def dicomized_isic(tmp_path: Path) -> Path:
    """The dicomized ISIC_0000019 (female, 30, posterior torso) written under tmp_path."""
    ds = dicomize_image(isic_image_path(), ISIC_ID, PatientMetadata(age=30, sex="female", anatomic_site="posterior torso"))
    path = tmp_path / f"{ISIC_ID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def lesion_image(rows: int = 96, columns: int = 128) -> np.ndarray:
    """A skin-coloured image with a dark elliptical 'lesion' in the middle."""
    yy, xx = np.mgrid[:rows, :columns]
    lesion = ((yy - rows / 2) / (rows / 4)) ** 2 + ((xx - columns / 2) / (columns / 5)) ** 2 <= 1
    image = np.empty((rows, columns, 3), np.uint8)
    image[...] = (222, 180, 160)
    image[lesion] = (90, 60, 40)
    return image


def vl_photographic_image(tmp_path: Path, array: np.ndarray | None = None, pixel_spacing: float | None = 0.05) -> Path:
    """A VL Photographic Image Storage instance (uncompressed RGB) of ``array``, written under tmp_path."""
    array = lesion_image() if array is None else array
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = VLPhotographicImageStorage
    ds.SOPClassUID = VLPhotographicImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Patient", "P-1", "", "M"
    ds.PatientAge = "061Y"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "20240102", "101500", "", "1", "A-1"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = "XC", 3, 1, "Test camera maker"
    ds.PatientOrientation = ""
    ds.ContentDate, ds.ContentTime = "20240102", "101500"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.AcquisitionContextSequence = []
    site = ISIC_SITE_CODES["upper extremity"]
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = site.value, site.scheme_designator, site.meaning
    ds.AnatomicRegionSequence = [item]
    if pixel_spacing is not None:
        ds.PixelSpacing = [pixel_spacing, pixel_spacing]
    ds.Rows, ds.Columns = array.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.LossyImageCompression = "00"
    ds.PixelData = array.tobytes()
    path = tmp_path / "vl_photo.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


# ----------------------------------------------------------------------------------------- dicomize


def test_dicomized_isic_image_is_clean_baseline_and_carries_the_original_jpeg(tmp_path):
    path = dicomized_isic(tmp_path)
    verdict = assert_dciodvfy_clean(path)
    assert all("DMS" in w or "Laterality" in w for w in verdict.warnings), verdict.output
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == DermoscopicPhotographyImageStorage
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert ds.Modality == "DMS"
    assert ds.PatientID == ds.AccessionNumber == ISIC_ID
    assert ds.PatientAge == "030Y" and ds.PatientSex == "F"
    assert ds.AnatomicRegionSequence[0].CodeValue == "66643007"  # Skin of back
    assert ds.LossyImageCompression == "01" and ds.LossyImageCompressionMethod == "ISO_10918_1"
    frame = next(generate_fragmented_frames(ds.PixelData, number_of_frames=1))
    original_bytes = isic_image_path().read_bytes()
    assert b"".join(frame)[: len(original_bytes)] == original_bytes  # no re-compression (+ even-length pad)
    original = np.asarray(Image.open(isic_image_path()).convert("RGB"), dtype=int)
    assert np.abs(decode_rgb(ds).astype(int) - original).max() <= 4
    assert patient_metadata(ds) == PatientMetadata(age=30.0, sex="female", anatomic_site="posterior torso")
    check_incoming(ds)


def test_one_study_per_image_id_and_stable_uids(tmp_path):
    a = dicomize_image(isic_image_path(), ISIC_ID, PatientMetadata())
    b = dicomize_image(isic_image_path(), ISIC_ID, PatientMetadata())
    other = dicomize_image(isic_image_path(), "ISIC_9999999", PatientMetadata())
    assert a.SOPInstanceUID == b.SOPInstanceUID and a.StudyInstanceUID == b.StudyInstanceUID
    assert other.StudyInstanceUID != a.StudyInstanceUID
    assert a.PatientAge == "" and a.PatientSex == "" and "AnatomicRegionSequence" not in a


def test_png_is_jpeg_encoded_and_clean(tmp_path):
    image = lesion_image()
    png = tmp_path / "ISIC_0000001.png"
    Image.fromarray(image).save(png)
    ds = dicomize_image(png, "ISIC_0000001", PatientMetadata(age=72, sex="male", anatomic_site="head/neck"))
    path = tmp_path / "png.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert_dciodvfy_clean(path)
    ds = pydicom.dcmread(path)
    assert "Laterality" not in ds  # head and neck is unpaired
    assert ds.PhotometricInterpretation == "YBR_FULL_422" and ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert float(ds.LossyImageCompressionRatio) > 1
    assert np.abs(decode_rgb(ds).astype(float) - image).mean() < 3  # quality 95
    assert patient_metadata(ds).anatomic_site == "head/neck"


@pytest.mark.parametrize("site", sorted(ISIC_SITE_CODES))
def test_every_isic_site_reads_back(tmp_path, site):
    png = tmp_path / "x.png"
    Image.fromarray(lesion_image(16, 16)).save(png)
    ds = dicomize_image(png, "X", PatientMetadata(anatomic_site=site))
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)
    assert_dciodvfy_clean(tmp_path / "x.dcm")
    assert patient_metadata(ds).anatomic_site == site


def test_cli_converts_good_images_and_reports_bad_ones(tmp_path):
    from dermnode.cli import app

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(lesion_image()).save(images / "ISIC_0000001.png")
    Image.fromarray(lesion_image(40, 40)).save(images / "ISIC_0000002.jpg", quality=90)
    (images / "ISIC_0000003.jpg").write_bytes(b"not an image")
    csv = tmp_path / "metadata.csv"
    csv.write_text(
        "image_id,collection,diagnosis,folder_label,age_approx,sex,anatom_site_general\n"
        "ISIC_0000001,isic-8class,NV,nevus,45,male,lower extremity\n"
        "ISIC_0000002,isic-8class,MEL,melanoma,,,\n"
    )
    result = CliRunner().invoke(app, ["dicomize", str(images), "--metadata", str(csv), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "ISIC_0000003.jpg" in result.output and "2 of 3" in result.output
    first = pydicom.dcmread(tmp_path / "out" / "ISIC_0000001.dcm")
    assert first.PatientAge == "045Y" and first.PatientSex == "M"
    assert patient_metadata(first).anatomic_site == "lower extremity"
    second = pydicom.dcmread(tmp_path / "out" / "ISIC_0000002.dcm")
    assert patient_metadata(second) == PatientMetadata()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ISIC_0000001.dcm", "ISIC_0000002.dcm"]


def test_metadata_csv_of_the_shared_data():
    table = read_metadata_csv(shared_data() / "metadata.csv")
    assert table[ISIC_ID] == PatientMetadata(age=30.0, sex="female", anatomic_site="posterior torso")


# ------------------------------------------------------------------------------ VL Photographic source


def test_vl_photographic_source_reads(tmp_path):
    ds = pydicom.dcmread(vl_photographic_image(tmp_path))
    check_incoming(ds)
    assert np.array_equal(decode_rgb(ds), lesion_image())
    assert pixel_spacing_mm(ds) == (0.05, 0.05)
    assert patient_metadata(ds) == PatientMetadata(age=61.0, sex="male", anatomic_site="upper extremity")


# ------------------------------------------------------------------------------------- bad instances


def _jpeg_instance(tmp_path: Path) -> Dataset:
    png = tmp_path / "x.png"
    Image.fromarray(lesion_image()).save(png)
    return dicomize_image(png, "X", PatientMetadata())


def _reject(ds: Dataset, words: str) -> None:
    with pytest.raises(InvalidInstance, match=words):
        check_incoming(ds)


def test_rejects_unsupported_sop_class(tmp_path):
    ds = _jpeg_instance(tmp_path)
    ds.SOPClassUID = CTImageStorage
    _reject(ds, "not a supported photographic")


def test_rejects_missing_pixel_data(tmp_path):
    ds = _jpeg_instance(tmp_path)
    del ds.PixelData
    _reject(ds, "no pixel data")


@pytest.mark.parametrize("photometric,samples", [("MONOCHROME2", 1), ("PALETTE COLOR", 1)])
def test_rejects_monochrome_and_palette(tmp_path, photometric, samples):
    ds = pydicom.dcmread(vl_photographic_image(tmp_path))
    ds.PhotometricInterpretation, ds.SamplesPerPixel = photometric, samples
    _reject(ds, "only colour")


@pytest.mark.parametrize("rows,columns,words", [(0, 0, "0x0"), (60000, 60000, "above the limit")])
def test_rejects_empty_and_huge_headers(tmp_path, rows, columns, words):
    ds = _jpeg_instance(tmp_path)
    ds.Rows, ds.Columns = rows, columns
    _reject(ds, words)


def test_rejects_jpeg_whose_frame_disagrees_with_the_header(tmp_path):
    ds = _jpeg_instance(tmp_path)
    ds.Rows = 500
    _reject(ds, "corrupt JPEG: the stream is 96x128")


def test_rejects_pixel_data_that_is_not_jpeg(tmp_path):
    ds = _jpeg_instance(tmp_path)
    ds.PixelData = encapsulate([b"\x00" * 1000])
    _reject(ds, "SOI marker")


def test_truncated_jpeg_passes_the_header_check_but_not_decoding(tmp_path):
    ds = _jpeg_instance(tmp_path)
    stream = b"".join(next(generate_fragmented_frames(ds.PixelData, number_of_frames=1)))
    ds.PixelData = encapsulate([stream[: len(stream) // 2]])
    check_incoming(ds)  # cheap checks cannot see a truncated scan
    with pytest.raises(InvalidInstance, match="could not be decoded"):
        decode_rgb(ds)


def test_short_native_pixel_data_is_rejected(tmp_path):
    ds = pydicom.dcmread(vl_photographic_image(tmp_path))
    ds.PixelData = ds.PixelData[:100]
    _reject(ds, "bytes of pixel data")


def test_unsupported_transfer_syntax_is_rejected(tmp_path):
    ds = copy.deepcopy(_jpeg_instance(tmp_path))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"  # JPEG 2000: no decoder installed
    _reject(ds, "not supported")


"""Where recorded outputs come from: the node's audit store, or a folder of SR (and SEG) files.

Both give :class:`~dermnode.validation.cohort.RecordedOutput` records plus a few words about
what was read (shown in the report), so the rest of ``validate`` does not care which it was.
"""

from __future__ import annotations

from pathlib import Path

from dermnode.validation.cohort import RecordedOutput, output_from_audit_row


def outputs_from_audit(database_url: str, result_dirs: tuple[Path, ...] = ()) -> tuple[list[RecordedOutput], dict]:
    """Every analysed image of the node's audit store (``AuditStore.analysed_rows``)."""
    from dermnode.node.audit import open_existing
    from dermnode.node.settings import mask_url

    store = open_existing(database_url)
    try:
        rows = store.analysed_rows()
    finally:
        store.close()
    outputs = [output_from_audit_row(row, result_dirs) for row in rows]
    masks = sum(o.predicted_mask is not None for o in outputs)
    return outputs, {"mode": "audit", "database": mask_url(database_url), "recorded_outputs": len(outputs),
                     "seg_files_found": masks}  # fmt: skip


FINDING_SITE = ("SCT", "363698007")


def finding_site(items) -> str | None:
    """The lesion's site (ISIC vocabulary) from the first TID 1500 Finding Site in an SR's content tree."""
    from dermnode.dicom_templates.codes import SITE_BY_CODE

    for item in items:
        name = item.get("ConceptNameCodeSequence", [None])[0]
        if name is not None and (name.CodingSchemeDesignator, name.CodeValue) == FINDING_SITE:
            for code in item.get("ConceptCodeSequence", []):
                return SITE_BY_CODE.get((code.CodingSchemeDesignator, code.CodeValue))
        found = finding_site(item.get("ContentSequence", []))
        if found is not None:
            return found
    return None


def outputs_from_sr_dir(directory: Path) -> tuple[list[RecordedOutput], dict]:
    """One output per finding of every dermnode SR under ``directory`` (searched recursively).

    The SEG file the finding refers to (found by its SOP Instance UID in the same tree) gives the
    node's mask.
    Files that are not DICOM, or SRs that are not dermnode's, are counted and skipped.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"SR folder {directory} does not exist")
    import pydicom
    from pydicom.errors import InvalidDicomError

    from dermnode.dicom_templates.image_conversion import patient_metadata
    from dermnode.dicom_templates.sr_reading import read_sr

    reports, seg_files, skipped, unreadable = [], {}, 0, []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError):
            skipped += 1
            continue
        modality = str(getattr(ds, "Modality", ""))
        if modality == "SEG":
            seg_files[str(ds.SOPInstanceUID)] = path
        elif modality == "SR":
            reports.append((path, ds))
        else:
            skipped += 1
    outputs = []
    for path, ds in reports:
        try:
            findings = read_sr(ds)
        except (ValueError, KeyError, AttributeError) as error:
            unreadable.append(f"{path.name}: {error}")
            continue
        patient = patient_metadata(ds)  # the SR repeats the source image's patient module
        site = finding_site(ds.get("ContentSequence", []))
        for finding in findings:
            analysis = finding.analysis
            outputs.append(
                RecordedOutput(
                    study_uid=str(ds.get("StudyInstanceUID", "")) or None,
                    sop_instance_uid=finding.source_sop_instance_uid,
                    accession_number=str(ds.get("AccessionNumber", "")) or None,
                    status=getattr(analysis.status, "value", str(analysis.status)),
                    probabilities=dict(analysis.probabilities),
                    veto_threshold=analysis.veto_threshold,
                    bcc_probability=analysis.bcc_probability,
                    failure_reason=analysis.failure_reason,
                    age=patient.age,
                    sex=patient.sex,
                    anatomic_site=site,
                    recorded_at=f"{ds.get('ContentDate', '')}{ds.get('ContentTime', '')}",
                    predicted_mask=seg_files.get(finding.segment[0]) if finding.segment else None,
                    patient_id=str(ds.get("PatientID", "")) or None,
                    models=analysis.models,
                )
            )
    info = {"mode": "sr-dir", "folder": str(directory), "sr_files": len(reports), "recorded_outputs": len(outputs),
            "seg_files_matched": sum(o.predicted_mask is not None for o in outputs),
            "other_files_skipped": skipped, "unreadable_sr": len(unreadable)}  # fmt: skip
    if unreadable:
        info["unreadable_sr_files"] = "; ".join(unreadable[:20])
    return outputs, info


def source_images(directory: Path | None) -> dict[str, Path]:
    """The DICOM files under ``directory`` (the node's spool, or a folder of the source images) by SOP
    Instance UID; results and unreadable files are left out. Empty when the folder is absent."""
    if directory is None or not Path(directory).is_dir():
        return {}
    import pydicom
    from pydicom.errors import InvalidDicomError

    found = {}
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID", "Modality"])
        except (InvalidDicomError, OSError, ValueError):
            continue
        if str(ds.get("Modality", "")) not in ("SEG", "SR", "KO") and ds.get("SOPInstanceUID"):
            found[str(ds.SOPInstanceUID)] = path
    return found

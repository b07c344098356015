"""Commands of this room, mounted on the `dermnode` app by dermnode/cli.py: `dicomize`, `report show`.

A user mistake raises UserError (one line on stderr, exit 2: see dermnode/cli.py).
"""

from __future__ import annotations

from pathlib import Path

import typer

from dermnode.errors import UserError

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"

report_app = typer.Typer(help="Read dermnode result objects back.", no_args_is_help=True)


def dicomize(
    images_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="Folder of JPEG/PNG images named <image_id>.jpg"),
    metadata: Path = typer.Option(..., "--metadata", exists=True, dir_okay=False, help="CSV with image_id, age_approx, sex, anatom_site_general"),
    out: Path = typer.Option(..., "--out", help="Output folder for <image_id>.dcm"),
    limit: int = typer.Option(0, help="Convert at most this many images (0 = all)"),
) -> None:
    """Turn dermoscopy images into Dermoscopic Photography Image Storage instances (JPEG Baseline)."""
    from rich.progress import track

    from dermnode.dicom_templates.dicomize import IMAGE_SUFFIXES, dicomize_folder, image_files, read_metadata_csv

    try:
        table = read_metadata_csv(metadata)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UserError(f"--metadata: {error}") from None
    images = image_files(images_dir)[: limit or None]
    if not images:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}")
    failures = 0
    for result in track(dicomize_folder(images, table, out), total=len(images), description="dicomize"):
        if result.error:
            failures += 1
            typer.echo(f"skipped {result.image.name}: {result.error}", err=True)
    typer.echo(f"{len(images) - failures} of {len(images)} images written to {out}")
    if failures:
        raise typer.Exit(code=1)


@report_app.command("show")
def report_show(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="A dermnode SR (TID 1500) file"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table"),
) -> None:
    """Decode a dermnode SR back into the analysis data class and print it."""
    import json

    from rich.console import Console
    from rich.table import Table

    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    from dermnode.dicom_templates.sr_reading import finding_as_dict, read_sr

    try:
        ds = dcmread(file)
    except InvalidDicomError:
        raise UserError(f"{file} is not a DICOM file (no DICOM file header)") from None
    except OSError as error:
        raise UserError(f"cannot read {file}: {error.strerror or error}") from None
    if str(ds.get("SOPClassUID", "")) != COMPREHENSIVE_3D_SR:
        kind = getattr(ds.get("SOPClassUID"), "name", None) or "an object without a SOP Class UID"
        raise UserError(f"{file} is {kind}, not a dermnode SR (Comprehensive 3D SR)")
    try:
        findings = read_sr(ds)
    except (AttributeError, KeyError, ValueError) as error:
        raise UserError(f"{file} is a Comprehensive 3D SR but not one dermnode wrote: {error}") from None
    rows = [finding_as_dict(finding) for finding in findings]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    console = Console()
    for row in rows:
        table = Table(title=f"image {row['source_sop_instance_uid']}", show_header=True)
        table.add_column("field")
        table.add_column("value")
        for key, value in row.items():
            table.add_row(key, json.dumps(value) if isinstance(value, (dict, list)) else str(value))
        console.print(table)


def register(app: typer.Typer) -> None:
    """Add this room's commands (and sub-apps) to the main app."""
    app.command("dicomize")(dicomize)
    app.add_typer(report_app, name="report")

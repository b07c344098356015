"""Every coded concept dermnode writes, in one table module.

Standard codes (SCT, DCM, UCUM) are built through :func:`verified`, which looks the code up in the
tables that pydicom ships (``pydicom.sr._concepts_dict``, generated from DICOM PS3.16) and fails at
import time if the code or its meaning is not there: nothing here is typed in from memory. Where the
shipped tables hold no code for a concept (several diagnoses, most radiomic features), the concept
gets a code in dermnode's private coding scheme :data:`PRIVATE_SCHEME` (declared in every SR's
Coding Scheme Identification Sequence); docs/CONFORMANCE.md lists them and says why.
"""

from __future__ import annotations

from pydicom.sr._concepts_dict import concepts as _SHIPPED
from pydicom.sr.coding import Code

PRIVATE_SCHEME = "99DERMNODE"
PRIVATE_SCHEME_NAME = "dermnode private codes"
PRIVATE_SCHEME_RESPONSIBLE = "dermnode project"


def verified(scheme: str, value: str, meaning: str) -> Code:
    """A code that exists with this meaning (case-insensitive) in pydicom's shipped tables."""
    meanings = {
        entry[value][0].lower()
        for entry in _SHIPPED.get(scheme, {}).values()
        if value in entry
    }
    if meaning.lower() not in meanings:
        raise LookupError(f"{scheme} {value} {meaning!r} is not in pydicom's tables (found {meanings})")
    return Code(value, scheme, meaning)


def private(value: str, meaning: str) -> Code:
    """A concept of dermnode's private coding scheme (documented in docs/CONFORMANCE.md)."""
    return Code(value, PRIVATE_SCHEME, meaning)


# ------------------------------------------------------------------------ anatomic sites (CID 4029)

#: ISIC ``anatom_site_general`` -> the code written in Anatomic Region Sequence. CID 4029
#: (Dermatology Anatomic Site) has no code for the lateral trunk, for "head and neck" as one region,
#: for palms and soles together or for oral/genital sites: those use the nearest verified SNOMED CT
#: code outside CID 4029 or the general "Skin" (see docs/CONFORMANCE.md).
ISIC_SITE_CODES: dict[str, Code] = {
    "anterior torso": verified("SCT", "181491009", "Skin of anterior trunk"),
    "posterior torso": verified("SCT", "66643007", "Skin of back"),
    "lateral torso": verified("SCT", "58602004", "Flank"),
    "head/neck": verified("SCT", "774007", "Head and Neck"),
    "upper extremity": verified("SCT", "371311000", "Skin of upper extremity"),
    "lower extremity": verified("SCT", "371304004", "Skin of lower extremity"),
    "palms/soles": verified("SCT", "70887009", "Skin of palm of hand"),
    "oral/genital": verified("SCT", "60944009", "Skin of external genitalia"),
}

#: Regions that dciodvfy knows as unpaired, where General Series Laterality (Type 2C) must be absent.
UNPAIRED_REGION_CODES: frozenset[tuple[str, str]] = frozenset({("SCT", "774007")})

#: More specific CID 4029 sites that other modalities write, folded back to the ISIC vocabulary.
_MORE_SITES: dict[str, tuple[Code, ...]] = {
    "anterior torso": (
        verified("SCT", "244106003", "Skin of anterior surface of thorax"),
        verified("SCT", "75093004", "Skin of abdomen"),
        verified("SCT", "54440003", "Skin of upper trunk"),
    ),
    "posterior torso": (
        verified("SCT", "244111001", "Skin of posterior surface of thorax"),
        verified("SCT", "113182001", "Skin of lower back"),
        verified("SCT", "22180002", "Skin of buttock"),
    ),
    "head/neck": (
        verified("SCT", "70762009", "Skin of head"),
        verified("SCT", "43081002", "Skin of neck"),
        verified("SCT", "73897004", "Skin of face"),
        verified("SCT", "43067004", "Skin of scalp"),
    ),
    "upper extremity": (verified("SCT", "33712006", "Skin of hand"),),
    "lower extremity": (verified("SCT", "60496002", "Skin of foot"),),
    "palms/soles": (
        verified("SCT", "35739000", "Skin of lateral border of sole of foot"),
        verified("SCT", "52953006", "Skin of medial border of sole of foot"),
        verified("DCM", "130317", "Skin of sole of forefoot"),
    ),
    "oral/genital": (verified("SCT", "113277000", "Oral mucosa"),),
}

#: (scheme, code value) -> ISIC ``anatom_site_general``, for reading the site back from a header.
SITE_BY_CODE: dict[tuple[str, str], str] = {
    (code.scheme_designator, code.value): site
    for site, codes in [(s, (c,)) for s, c in ISIC_SITE_CODES.items()] + list(_MORE_SITES.items())
    for code in codes
}

"""Every coded concept dermnode writes, in one table module.

Standard codes (SCT, DCM, UCUM) are built through :func:`verified`, which looks the code up in the
tables that pydicom ships (``pydicom.sr._concepts_dict``, generated from DICOM PS3.16) and fails at
import time if the code or its meaning is not there: nothing here is typed in from memory. Where the
shipped tables hold no code for a concept (several diagnoses, most radiomic features), the concept
gets a code in dermnode's private coding scheme :data:`PRIVATE_SCHEME` (declared in every SR's
Coding Scheme Identification Sequence); docs/CONFORMANCE.md lists them and says why.
"""

from __future__ import annotations

import hashlib

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


# ------------------------------------------------------------------------------------- diagnoses

#: The eight classes (dermnode.contract.CLASS_CODES) -> the code of the diagnosis: SNOMED CT where
#: pydicom's tables (DICOM PS3.16) hold the concept, private otherwise (docs/CONFORMANCE.md lists
#: the table of each). The tables hold no melanocytic nevus, basal cell carcinoma of skin, benign
#: keratosis or dermatofibroma; ISIC's VASC class (cherry angiomas, angiokeratomas, pyogenic
#: granulomas) gets the nearest coded concept, Hemangioma.
DIAGNOSIS_CODES: dict[str, Code] = {
    "NV": private("NV", "Melanocytic nevus"),
    "MEL": verified("SCT", "1162635006", "Malignant melanoma"),  # CID 638/639
    "BCC": private("BCC", "Basal cell carcinoma"),
    "BKL": private("BKL", "Benign keratosis"),
    "AK": verified("SCT", "201101007", "Actinic keratosis"),  # CID 4405
    "SCC": verified("SCT", "254651007", "Squamous cell carcinoma of skin"),  # CID 638/639
    "DF": private("DF", "Dermatofibroma"),
    "VASC": verified("SCT", "400210000", "Hemangioma"),  # CID 6030
}
#: The two answers of the BCC-versus-seborrheic-keratosis model.
BCC_SK_CODES: dict[str, Code] = {
    "BCC": DIAGNOSIS_CODES["BCC"],
    "SK": private("SK", "Seborrheic keratosis"),
}

# ---------------------------------------------------------------------------- SR concept names

YES = verified("SCT", "373066001", "Yes")
NO = verified("SCT", "373067005", "No")
LESION = verified("SCT", "52988006", "Lesion")
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = verified("SCT", "49755003", "Morphologically Abnormal Structure")
DERMOSCOPY_PROCEDURE = verified("SCT", "446078004", "Dermoscopic photography (procedure)")
ARTIFICIAL_INTELLIGENCE = verified("DCM", "123110", "Artificial Intelligence")
PROCESSING_EQUIPMENT = verified("DCM", "109102", "Processing Equipment")
PROBABILITY_OF_CANCER = verified("DCM", "111047", "Probability of cancer")
AREA = verified("SCT", "42798000", "Area")
LONG_AXIS = verified("SCT", "103339001", "Long axis")
SHORT_AXIS = verified("SCT", "103340004", "Short axis")
IMAGE_REGION = verified("DCM", "111030", "Image Region")
SOURCE_OF_MEASUREMENT = verified("DCM", "121112", "Source of Measurement")
MOST_LIKELY_DIAGNOSIS = verified("DCM", "111023", "Differential Diagnosis/Impression")
HORIZONTAL_PIXEL_SPACING = verified("DCM", "111026", "Horizontal Pixel Spacing")
VERTICAL_PIXEL_SPACING = verified("DCM", "111066", "Vertical Pixel Spacing")
ALGORITHM_PARAMETERS = verified("DCM", "111002", "Algorithm Parameters")
KOS_TITLE = verified("DCM", "113000", "Of Interest")  # CID 7010 has no "For Attention" title

MALIGNANCY_VETO = private("VETO", "Malignancy veto")
BCC_SK_CALL = private("BCCSK", "Basal cell carcinoma versus seborrheic keratosis")
BCC_PROBABILITY = private("P-BCCSK", "Probability of basal cell carcinoma versus seborrheic keratosis")
SEGMENTATION_CONFIDENCE = private("SEG-CONF", "Lesion segmentation confidence")
ANALYSIS_STATUS = private("STATUS", "Analysis status")
FAILURE_REASON = private("REASON", "Analysis failure reason")
#: AnalysisStatus value -> its code (values of ANALYSIS_STATUS).
STATUS_CODES: dict[str, Code] = {
    "analysed": private("ANALYSED", "Image analysed"),
    "no_lesion": private("NO-LESION", "No lesion segmented"),
    "failed": private("FAILED", "Analysis failed"),
    "not_analysable": private("NOT-ANALYSABLE", "Image not analysable"),
}
#: Probability of each class: one private concept per class ("P-MEL", "Probability of malignant
#: melanoma"); the tables' only probability of a diagnosis is DCM 111047 "Probability of cancer".
CLASS_PROBABILITY_CODES: dict[str, Code] = {
    code: private(f"P-{code}", f"Probability of {concept.meaning[0].lower()}{concept.meaning[1:]}")
    for code, concept in DIAGNOSIS_CODES.items()
}

# ------------------------------------------------------------------------------------------ units

PROBABILITY_UNIT = verified("UCUM", "1", "no units")
MILLIMETER = verified("UCUM", "mm", "mm")
SQUARE_MILLIMETER = verified("UCUM", "mm2", "square millimeter")
#: A UCUM annotation (dimensionless count): valid UCUM syntax, not in the shipped tables.
PIXELS = Code("{pixels}", "UCUM", "pixels")

# -------------------------------------------------------------------------------- radiomic features

#: pyradiomics feature (class_Feature) -> IBSI code, where IBSI defines the same quantity for the same
#: discretised image. First-order features other than entropy and uniformity are computed by
#: pyradiomics on undiscretised intensities (IBSI's intensity-based family, which pydicom's tables
#: do not hold) and the 2D shape features have no IBSI counterpart (IBSI's morphology is 3D): these
#: use private codes ("RAD-" + 8 hex digits of the name's SHA-1; the meaning names the feature).
_IBSI_BY_FEATURE: dict[str, tuple[str, str]] = {
    "firstorder_Entropy": ("TLU2", "Intensity Histogram Entropy"),
    "firstorder_Uniformity": ("BJ5W", "Intensity Histogram Uniformity"),
    "glcm_Autocorrelation": ("QWB0", "Autocorrelation of GLCM"),
    "glcm_ClusterProminence": ("AE86", "Cluster Prominence of GLCM"),
    "glcm_ClusterShade": ("7NFM", "Cluster Shade of GLCM"),
    "glcm_ClusterTendency": ("DG8W", "Cluster Tendency of GLCM"),
    "glcm_Contrast": ("ACUI", "Contrast of GLCM"),
    "glcm_Correlation": ("NI2N", "Correlation of GLCM"),
    "glcm_DifferenceAverage": ("TF7R", "Difference Average of GLCM"),
    "glcm_DifferenceEntropy": ("NTRS", "Difference Entropy of GLCM"),
    "glcm_DifferenceVariance": ("D3YU", "Difference Variance of GLCM"),
    "glcm_Id": ("IB1Z", "Inverse Difference of GLCM"),
    "glcm_Idm": ("WF0Z", "Inverse Difference Moment of GLCM"),
    "glcm_Idmn": ("1QCO", "Normalized Inverse Difference Moment of GLCM"),
    "glcm_Idn": ("NDRX", "Normalized Inverse Difference of GLCM"),
    "glcm_Imc1": ("R8DG", "First Measure of Information Correlation of GLCM"),
    "glcm_Imc2": ("JN9H", "Second Measure of Information Correlation of GLCM"),
    "glcm_InverseVariance": ("E8JP", "Inverse Variance of GLCM"),
    "glcm_JointAverage": ("60VM", "Joint Average of GLCM"),
    "glcm_JointEnergy": ("8ZQL", "Angular Second Moment of GLCM"),
    "glcm_JointEntropy": ("TU9B", "Joint Entropy of GLCM"),
    "glcm_MaximumProbability": ("GYBY", "Joint Maximum of GLCM"),
    "glcm_SumAverage": ("ZGXS", "Sum Average of GLCM"),
    "glcm_SumEntropy": ("P6QZ", "Sum Entropy of GLCM"),
    "glcm_SumSquares": ("UR99", "Joint Variance of GLCM"),
    "glrlm_GrayLevelNonUniformity": ("R5YN", "Gray Level Nonuniformity in Runs"),
    "glrlm_GrayLevelNonUniformityNormalized": ("OVBL", "Normalized Gray Level Nonuniformity in Runs"),
    "glrlm_GrayLevelVariance": ("8CE5", "Gray Level Variance in Runs"),
    "glrlm_HighGrayLevelRunEmphasis": ("G3QZ", "High Gray Level Run Emphasis"),
    "glrlm_LongRunEmphasis": ("W4KF", "Long Runs Emphasis"),
    "glrlm_LongRunHighGrayLevelEmphasis": ("3KUM", "Long Run High Gray Level Emphasis"),
    "glrlm_LongRunLowGrayLevelEmphasis": ("IVPO", "Long Run Low Gray Level Emphasis"),
    "glrlm_LowGrayLevelRunEmphasis": ("V3SW", "Low Gray Level Run Emphasis"),
    "glrlm_RunEntropy": ("HJ9O", "Run Entropy"),
    "glrlm_RunLengthNonUniformity": ("W92Y", "Run Length Nonuniformity"),
    "glrlm_RunLengthNonUniformityNormalized": ("IC23", "Normalized Run Length Nonuniformity"),
    "glrlm_RunPercentage": ("9ZK5", "Run Percentage"),
    "glrlm_RunVariance": ("SXLW", "Run Length Variance"),
    "glrlm_ShortRunEmphasis": ("22OV", "Short Runs Emphasis"),
    "glrlm_ShortRunHighGrayLevelEmphasis": ("GD3A", "Short Run High Gray Level Emphasis"),
    "glrlm_ShortRunLowGrayLevelEmphasis": ("HTZT", "Short Run Low Gray Level Emphasis"),
    "glszm_GrayLevelNonUniformity": ("JNSA", "Gray Level Nonuniformity of Size Zone Counts"),
    "glszm_GrayLevelNonUniformityNormalized": ("Y1RO", "Normalized Gray Level Nonuniformity of Size Zone Counts"),
    "glszm_GrayLevelVariance": ("BYLV", "Gray Level Variance in Size Zones"),
    "glszm_HighGrayLevelZoneEmphasis": ("5GN9", "High Gray Level Zone Emphasis"),
    "glszm_LargeAreaEmphasis": ("48P8", "Large Zone Emphasis"),
    "glszm_LargeAreaHighGrayLevelEmphasis": ("J17V", "Large Zone High Gray Level Emphasis"),
    "glszm_LargeAreaLowGrayLevelEmphasis": ("YH51", "Large Zone Low Gray Level Emphasis"),
    "glszm_LowGrayLevelZoneEmphasis": ("XMSY", "Low Gray Level Zone Emphasis"),
    "glszm_SizeZoneNonUniformity": ("4JP3", "Zone Size Nonuniformity"),
    "glszm_SizeZoneNonUniformityNormalized": ("VB3A", "Normalized Zone Size Nonuniformity"),
    "glszm_SmallAreaEmphasis": ("5QRC", "Small Zone Emphasis"),
    "glszm_SmallAreaHighGrayLevelEmphasis": ("HW1V", "Small Zone High Gray Level Emphasis"),
    "glszm_SmallAreaLowGrayLevelEmphasis": ("5RAI", "Small Zone Low Gray Level Emphasis"),
    "glszm_ZoneEntropy": ("GU8N", "Zone Size Entropy"),
    "glszm_ZonePercentage": ("P30P", "Size Zone Percentage"),
    "glszm_ZoneVariance": ("3NSA", "Zone Size Variance"),
    "gldm_DependenceEntropy": ("FCBV", "Dependence count entropy"),
    "gldm_DependenceNonUniformity": ("Z87G", "Dependence count non-uniformity"),
    "gldm_DependenceNonUniformityNormalized": ("OKJI", "Dependence count non-uniformity normalized"),
    "gldm_DependenceVariance": ("DNX2", "Dependence count variance"),
    "gldm_GrayLevelNonUniformity": ("FP8K", "Grey level non-uniformity of NGLDM"),
    "gldm_GrayLevelVariance": ("1PFV", "Grey level variance of NGLDM"),
    "gldm_HighGrayLevelEmphasis": ("OAE7", "High grey level count emphasis"),
    "gldm_LargeDependenceEmphasis": ("IMOQ", "High dependence emphasis"),
    "gldm_LargeDependenceHighGrayLevelEmphasis": ("9QMG", "High dependence high grey level emphasis"),
    "gldm_LargeDependenceLowGrayLevelEmphasis": ("NBZI", "High dependence low grey level emphasis"),
    "gldm_LowGrayLevelEmphasis": ("TL9H", "Low grey level count emphasis"),
    "gldm_SmallDependenceEmphasis": ("SODN", "Low dependence emphasis"),
    "gldm_SmallDependenceHighGrayLevelEmphasis": ("JA6D", "Low dependence high grey level emphasis"),
    "gldm_SmallDependenceLowGrayLevelEmphasis": ("EQ3F", "Low dependence low grey level emphasis"),
    "ngtdm_Busyness": ("NQ30", "Busyness of NGTDM"),
    "ngtdm_Coarseness": ("QCDE", "Coarseness of NGTDM"),
    "ngtdm_Complexity": ("HDEZ", "Complexity of NGTDM"),
    "ngtdm_Contrast": ("65HE", "Contrast of NGTDM"),
    "ngtdm_Strength": ("1X9X", "Strength of NGTDM"),
}
IBSI_CODES: dict[str, Code] = {name: verified("IBSI", v, m) for name, (v, m) in _IBSI_BY_FEATURE.items()}
_FEATURE_BY_IBSI = {code.value: name for name, code in IBSI_CODES.items()}
RADIOMICS_PREFIX = "original_"


def radiomic_feature_code(name: str) -> Code:
    """The concept of a pyradiomics feature (``original_glcm_Contrast``): IBSI if defined, else private."""
    short = name.removeprefix(RADIOMICS_PREFIX)
    if name.startswith(RADIOMICS_PREFIX) and short in IBSI_CODES:
        return IBSI_CODES[short]
    # Code values are SH (16 characters) and highdicom cannot parse Long Code Values in SR content:
    # a short stable hash is the value, the pyradiomics name is in the meaning.
    return private(f"RAD-{hashlib.sha1(name.encode()).hexdigest()[:8]}", f"{_RADIOMIC_MEANING}{name}")


_RADIOMIC_MEANING = "pyradiomics "  # + the feature name: at most 64 characters (LO)


def radiomic_feature_name(scheme: str, value: str, meaning: str) -> str | None:
    """The pyradiomics name of a coded radiomic feature, or None if the code is not one."""
    if scheme == "IBSI" and value in _FEATURE_BY_IBSI:
        return RADIOMICS_PREFIX + _FEATURE_BY_IBSI[value]
    if scheme == PRIVATE_SCHEME and value.startswith("RAD-") and meaning.startswith(_RADIOMIC_MEANING):
        return meaning.removeprefix(_RADIOMIC_MEANING)
    return None

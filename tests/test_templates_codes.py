"""The code tables: verified against pydicom's shipped tables, within DICOM's length limits, decodable."""

from __future__ import annotations

import pytest

from dermnode.contract import CLASS_CODES
from dermnode.dicom_templates import codes


def all_codes():
    tables = [codes.ISIC_SITE_CODES, codes.DIAGNOSIS_CODES, codes.BCC_SK_CODES, codes.STATUS_CODES,
              codes.CLASS_PROBABILITY_CODES, codes.IBSI_CODES]
    singles = [value for value in vars(codes).values() if type(value).__name__ == "Code"]
    return [code for table in tables for code in table.values()] + singles


def test_verified_refuses_unknown_codes_and_wrong_meanings():
    assert codes.verified("SCT", "52988006", "lesion").value == "52988006"  # case-insensitive meaning
    with pytest.raises(LookupError):
        codes.verified("SCT", "52988006", "Tumour")
    with pytest.raises(LookupError):
        codes.verified("SCT", "999999999", "Lesion")


def test_every_code_fits_dicom_value_representations():
    for code in all_codes():
        assert 0 < len(code.value) <= 16, code  # Code Value is SH
        assert 0 < len(code.meaning) <= 64, code  # Code Meaning is LO


def test_every_class_has_a_diagnosis_and_a_probability_concept():
    assert set(codes.DIAGNOSIS_CODES) == set(CLASS_CODES) == set(codes.CLASS_PROBABILITY_CODES)
    keys = [(c.scheme_designator, c.value) for c in codes.DIAGNOSIS_CODES.values()]
    assert len(set(keys)) == len(keys)


def test_isic_sites_read_back_to_themselves():
    for site, code in codes.ISIC_SITE_CODES.items():
        assert codes.SITE_BY_CODE[(code.scheme_designator, code.value)] == site


@pytest.mark.parametrize(
    "name",
    ["original_glcm_Contrast", "original_gldm_LargeDependenceHighGrayLevelEmphasis", "original_firstorder_Mean",
     "original_shape2D_Elongation", "original_glszm_SizeZoneNonUniformityNormalized", "a_feature_without_prefix"],
)
def test_radiomic_feature_codes_decode_to_their_names(name):
    code = codes.radiomic_feature_code(name)
    assert len(code.value) <= 16 and len(code.meaning) <= 64
    assert codes.radiomic_feature_name(code.scheme_designator, code.value, code.meaning) == name


def test_ibsi_is_used_where_ibsi_defines_the_feature():
    assert codes.radiomic_feature_code("original_glcm_Contrast").scheme_designator == "IBSI"
    assert codes.radiomic_feature_code("original_firstorder_Mean").scheme_designator == codes.PRIVATE_SCHEME
    assert codes.radiomic_feature_name("SCT", "52988006", "Lesion") is None

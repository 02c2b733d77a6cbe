"""Tags, VRs and lengths of the DICOM encoding (PS3.5 7 and A.4): the one copy.

Tags are ints, ``group << 16 | element``. VRs are two-letter ``str``; the
parsers compare the raw bytes against `LONG_VRS_BYTES` and `VRS_BYTES`.
"""

from __future__ import annotations

#: a length field of all ones: the value runs to a delimiter
UNDEFINED = 0xFFFFFFFF
#: the largest even defined length (PS3.5 7.1.1)
MAX_DEFINED_LENGTH = 0xFFFFFFFE

# -- items and delimiters (group FFFE) -----------------------------------------------
ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
#: the group of items and delimiters, which have no VR in any encoding
DELIMITER_GROUP = ITEM >> 16

# -- file meta information ------------------------------------------------------------
FILE_META_GROUP_LENGTH = 0x00020000
FILE_META_INFORMATION_VERSION = 0x00020001
MEDIA_STORAGE_SOP_CLASS_UID = 0x00020002
MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003
TRANSFER_SYNTAX_UID = 0x00020010
IMPLEMENTATION_CLASS_UID = 0x00020012

# -- the data set ---------------------------------------------------------------------
SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
MODALITY = 0x00080060
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
SAMPLES_PER_PIXEL = 0x00280002
PHOTOMETRIC_INTERPRETATION = 0x00280004
PLANAR_CONFIGURATION = 0x00280006
NUMBER_OF_FRAMES = 0x00280008
ROWS = 0x00280010
COLUMNS = 0x00280011
BITS_ALLOCATED = 0x00280100
BITS_STORED = 0x00280101
HIGH_BIT = 0x00280102
PIXEL_REPRESENTATION = 0x00280103

# -- pixel data -----------------------------------------------------------------------
EXTENDED_OFFSET_TABLE = 0x7FE00001
EXTENDED_OFFSET_TABLE_LENGTHS = 0x7FE00002
ENCAPSULATED_PIXEL_DATA_VALUE_TOTAL_LENGTH = 0x7FE00003
FLOAT_PIXEL_DATA = 0x7FE00008
DOUBLE_PIXEL_DATA = 0x7FE00009
PIXEL_DATA = 0x7FE00010
#: tag -> keyword of the three pixel data elements
PIXEL_TAGS = {PIXEL_DATA: "PixelData", FLOAT_PIXEL_DATA: "FloatPixelData", DOUBLE_PIXEL_DATA: "DoubleFloatPixelData"}
PIXEL_KEYWORD_TAGS = {keyword: tag for tag, keyword in PIXEL_TAGS.items()}

# -- whole-slide functional groups ------------------------------------------------------
SHARED_FUNCTIONAL_GROUPS_SEQUENCE = 0x52009229
PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE = 0x52009230
PLANE_POSITION_SLIDE_SEQUENCE = 0x0048021A
COLUMN_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX = 0x0048021E
ROW_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX = 0x0048021F
Z_OFFSET_IN_SLIDE_COORDINATE_SYSTEM = 0x0040074A
OPTICAL_PATH_IDENTIFICATION_SEQUENCE = 0x00480207
OPTICAL_PATH_IDENTIFIER = 0x00480106
PIXEL_MEASURES_SEQUENCE = 0x00289110
PIXEL_SPACING = 0x00280030

# -- value representations ----------------------------------------------------------------
#: VRs whose explicit length field is 4 bytes, after 2 reserved bytes (PS3.5 Table 7.1-1)
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"})
#: every VR of PS3.5 6.2
VRS = LONG_VRS | frozenset({
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT",
    "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US",
})
LONG_VRS_BYTES = frozenset(vr.encode() for vr in LONG_VRS)
VRS_BYTES = frozenset(vr.encode() for vr in VRS)

#: sequences nested deeper than this are refused (hostile input), by every walker
MAX_DEPTH = 64


def tag_text(tag: int) -> str:
    """``(GGGG,EEEE)``, as error messages name a tag."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


#: attributes that QIDO-RS results carry and no file header does (PS3.18 10.6.3):
#: tag -> (keyword, VR)
QIDO_ATTRIBUTES: dict[int, tuple[str, str]] = {
    0x00080056: ("InstanceAvailability", "CS"),
    0x00080061: ("ModalitiesInStudy", "CS"),
    0x00080062: ("SOPClassesInStudy", "UI"),
    0x00080201: ("TimezoneOffsetFromUTC", "SH"),
    0x00081150: ("ReferencedSOPClassUID", "UI"),
    0x00081155: ("ReferencedSOPInstanceUID", "UI"),
    0x00081190: ("RetrieveURL", "UR"),
    0x00083002: ("AvailableTransferSyntaxUID", "UI"),
    0x00201206: ("NumberOfStudyRelatedSeries", "IS"),
    0x00201208: ("NumberOfStudyRelatedInstances", "IS"),
    0x00201209: ("NumberOfSeriesRelatedInstances", "IS"),
    0x00400244: ("PerformedProcedureStepStartDate", "DA"),
}

"""Codec families (dicomframes.frames.codecs.families): codestream parameters on
real codestreams, RLE header validation, colour hints, sign corrections, and
the backend registry's preference order."""

from __future__ import annotations

import numpy as np
import pytest

import dicomframes
from dicomframes._dicom.codestream import J2K_START_MARKERS
from dicomframes._dicom.syntaxes import SYNTAXES, Codec, lookup
from dicomframes.errors import DecodeError
from dicomframes.frames import codecs
from dicomframes.frames.codecs import Backend, Decoded
from dicomframes.frames.codecs.families import (
    DEFLATE_FRAMES,
    ENCAPSULATED_NATIVE,
    FAMILIES,
    HTJ2K,
    J2K,
    JPEG,
    JPEG_LS,
    NATIVE,
    RLE,
    family_for,
    shift_out_high_bits,
)
from dicomframes.frames.codecs.families.j2k import j2k_decoded_photometric, j2k_sign_shift
from dicomframes.frames.codecs.families.jpeg import jpeg_colour_hint
from dicomframes.frames.codecs.families.jpegls import jpegls_sign_shift
from dicomframes.frames.codecs.families.rle import validate_rle_header
from dicomframes.frames.pixels import PixelFormat
from dicomframes.samples import sample_frame, write_sample

BASELINE = "1.2.840.10008.1.2.4.50"
EXTENDED = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
ENC_NATIVE = "1.2.840.10008.1.2.1.98"
DEFLATED_FRAMES = "1.2.840.10008.1.2.8.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"

ROWS, COLUMNS = 64, 48


def _fmt(uid, *, spp=1, ba=8, bs=None, pr=0, pi=None, rows=ROWS, columns=COLUMNS) -> PixelFormat:
    return PixelFormat(
        name="test.dcm", ts=lookup(uid), rows=rows, columns=columns, samples_per_pixel=spp,
        bits_allocated=ba, bits_stored=ba if bs is None else bs, pixel_representation=pr,
        photometric_interpretation=pi or ("MONOCHROME2" if spp == 1 else "RGB"),
        planar_configuration=0, keyword="PixelData", vr="OB",
    )


def _grey16() -> np.ndarray:
    return sample_frame(0, ROWS, COLUMNS, 1, 16, seed=3)


def _rgb8() -> np.ndarray:
    return sample_frame(0, ROWS, COLUMNS, 3, 8, seed=3)


def _signed12() -> tuple[np.ndarray, np.ndarray]:
    """12-bit signed pixels, and the same as unsigned 12-bit two's complement."""
    s = (np.arange(ROWS * COLUMNS, dtype=np.int32).reshape(ROWS, COLUMNS) * 7 % 4096 - 2048).astype(np.int16)
    return s, s.astype(np.uint16) & 0xFFF


# The encoders samples.py writes with (the required pylibjpeg plugins and pyjpegls).
def _rle(arr: np.ndarray, bits_allocated: int) -> bytes:
    from rle.utils import encode_array

    spp = 1 if arr.ndim == 2 else arr.shape[-1]
    return next(encode_array(arr, rows=arr.shape[0], columns=arr.shape[1], samples_per_pixel=spp,
                             bits_allocated=bits_allocated, number_of_frames=1))


def _jpegls(arr: np.ndarray) -> bytes:
    import jpeg_ls

    return bytes(jpeg_ls.encode_array(arr, interleave_mode=2 if arr.ndim == 3 else None))


def _j2k(arr: np.ndarray, bits_stored: int) -> bytes:
    from openjpeg.utils import encode_array

    return bytes(encode_array(arr, bits_stored=bits_stored, use_mct=False))


def _decode(fmt: PixelFormat, cs: bytes, decoder: str = "pylibjpeg") -> np.ndarray:
    """The steps of `decode_span` for one codestream."""
    params = fmt.codestream_parameters(cs)
    fmt.check_codestream(params, 0)
    backend = codecs.select(fmt.ts, decoder)
    return fmt.from_decoded(backend.decode(cs, fmt.context(params), params), params, 0)


# -- the family of each syntax ------------------------------------------------------------
def test_every_syntax_has_a_family_keyed_by_its_codec():
    assert set(FAMILIES) == set(Codec)
    for ts in SYNTAXES.values():
        assert isinstance(ts.codec, Codec)
        family = family_for(ts)
        assert family.codec is ts.codec and family_for(ts.codec) is family
        # The frame index's markers (from the lowest layer) are the family's own.
        assert ts.frame_start_markers == family.start_markers
        assert ts.encapsulated == (family is not NATIVE)
    assert family_for(lookup(J2K_LOSSLESS)) is J2K and family_for(lookup(HTJ2K_LOSSLESS)) is HTJ2K
    assert family_for(lookup(JPEG_LS_LOSSLESS)) is JPEG_LS and family_for(lookup(RLE_LOSSLESS)) is RLE
    assert [f.pixel_bytes for f in (NATIVE, ENCAPSULATED_NATIVE, DEFLATE_FRAMES)] == [True] * 3
    assert not any(f.pixel_bytes for f in (RLE, JPEG, JPEG_LS, J2K, HTJ2K))


def test_codec_compares_with_the_strings_backends_may_use():
    assert Codec.JPEGLS == "jpegls" and "j2k" == Codec.J2K
    assert Codec.DEFLATE_FRAMES in frozenset({"deflate-frames"}) and "rle" in frozenset({Codec.RLE})
    assert f"{Codec.ENCAPSULATED_NATIVE}" == str(Codec.ENCAPSULATED_NATIVE) == "encapsulated-native"
    assert family_for("htj2k") is HTJ2K


# -- codestream parameters on real codestreams ---------------------------------------------
def test_jpeg_parameters():
    imagecodecs = pytest.importorskip("imagecodecs")
    ycbcr = bytes(imagecodecs.jpeg8_encode(_rgb8(), level=90))
    params = JPEG.parameters(ycbcr)
    assert (params["height"], params["width"], params["components"], params["precision"]) == (ROWS, COLUMNS, 3, 8)
    assert params["dct"] and not params["jpegls"] and params["component_ids"] == [1, 2, 3]
    assert any(segment.startswith(b"JFIF") for segment in params["app"].values())
    assert ycbcr.startswith(JPEG.start_markers)

    lossless = bytes(imagecodecs.jpeg8_encode(_grey16() >> 4, lossless=True, predictor=1, bitspersample=12))
    params = JPEG.parameters(lossless)
    assert (params["height"], params["width"], params["components"], params["precision"]) == (ROWS, COLUMNS, 1, 12)
    assert not params["dct"] and not params["jpegls"]


def test_jpegls_parameters():
    params = JPEG_LS.parameters(_jpegls(_grey16()))
    assert params["jpegls"] and not params["dct"]
    assert (params["height"], params["width"], params["components"], params["precision"]) == (ROWS, COLUMNS, 1, 16)
    params = JPEG_LS.parameters(_jpegls(_rgb8()))
    assert (params["components"], params["precision"], params["component_ids"]) == (3, 8, [1, 2, 3])
    assert JPEG_LS.parameters(_jpegls(_signed12()[1]))["precision"] == 12


def test_j2k_parameters():
    signed, unsigned = _signed12()
    cs = _j2k(unsigned, 12)
    assert cs.startswith(J2K_START_MARKERS)
    assert J2K.parameters(cs) == {
        "reversible": True, "width": COLUMNS, "height": ROWS, "components": 1, "precision": 12, "is_signed": False,
    }
    assert J2K.parameters(_j2k(signed, 12))["is_signed"] is True
    params = J2K.parameters(_j2k(_rgb8(), 8))
    assert (params["components"], params["precision"], params["is_signed"]) == (3, 8, False)


def test_j2k_parameters_of_a_jp2_file_and_htj2k():
    imagecodecs = pytest.importorskip("imagecodecs")
    grey = _grey16()
    jp2 = bytes(imagecodecs.jpeg2k_encode(grey, codecformat="JP2"))
    assert jp2.startswith(J2K.start_markers) and not jp2.startswith(J2K_START_MARKERS[0])
    params = J2K.parameters(jp2)
    assert (params["width"], params["height"], params["precision"], params["reversible"]) == (COLUMNS, ROWS, 16, True)
    assert HTJ2K.parameters(bytes(imagecodecs.htj2k_encode(grey, reversible=True)))["reversible"] is True
    irreversible = HTJ2K.parameters(bytes(imagecodecs.htj2k_encode(grey, level=30, reversible=False)))
    assert irreversible["reversible"] is False and (irreversible["width"], irreversible["height"]) == (COLUMNS, ROWS)


def test_rle_parameters():
    params = RLE.parameters(_rle(_rgb8(), 8))
    assert params["segments"] == 3 and params["offsets"][0] == 64 and len(params["offsets"]) == 3
    params = RLE.parameters(_rle(_grey16(), 16))
    assert params["segments"] == 2 and params["offsets"][0] == 64 and params["offsets"][1] < params["length"]
    assert RLE.parameters(b"\x00" * 63) == {}


def test_families_without_a_codestream_declare_nothing():
    for family in (NATIVE, ENCAPSULATED_NATIVE, DEFLATE_FRAMES):
        assert family.parameters(b"\xff\xd8\xff\xc0" + bytes(60)) == {} and family.start_markers == ()
    assert RLE.start_markers == ()
    # Unparseable bytes: no parameters, hence no size check.
    assert JPEG.parameters(b"not a codestream") == {} and J2K.parameters(b"\xff\x4f\xff\x51") == {}


def test_dimension_check_refuses_a_codestream_larger_than_the_header():
    fmt = _fmt(J2K_LOSSLESS, rows=8, columns=8)
    params = fmt.codestream_parameters(_j2k(np.ascontiguousarray(_rgb8()[..., 0]), 8))
    with pytest.raises(DecodeError, match=f"the codestream is {COLUMNS}x{ROWS} but the header says 8x8") as info:
        fmt.check_codestream(params, 5)
    assert info.value.frame == 5 and info.value.path == "test.dcm"
    _fmt(J2K_LOSSLESS).check_codestream(params, 0)


# -- RLE header validation -----------------------------------------------------------------
def test_rle_header_of_a_real_codestream_is_valid():
    fmt = _fmt(RLE_LOSSLESS, spp=3)
    fmt.check_codestream(fmt.codestream_parameters(_rle(_rgb8(), 8)), 0)
    validate_rle_header(RLE.parameters(_rle(_grey16(), 16)), 1, 16)


@pytest.mark.parametrize("case,params", [
    ("segment count", {"segments": 2, "offsets": [64, 100], "length": 200}),
    ("first offset", {"segments": 3, "offsets": [60, 100, 150], "length": 200}),
    ("decreasing", {"segments": 3, "offsets": [64, 150, 100], "length": 200}),
    ("repeated", {"segments": 3, "offsets": [64, 100, 100], "length": 200}),
    ("past the end", {"segments": 3, "offsets": [64, 100, 200], "length": 200}),
    ("no segments", {"segments": 0, "offsets": [], "length": 64}),
    ("too short", {}),
])
def test_rle_header_validation_errors(case, params):
    fmt = _fmt(RLE_LOSSLESS, spp=3)
    with pytest.raises(DecodeError, match="the RLE header is invalid") as info:
        fmt.check_codestream(params, 7)
    assert info.value.frame == 7 and info.value.path == "test.dcm"
    assert "expected 3 segments" in str(info.value)


def test_rle_header_segments_follow_bits_allocated():
    cs = _rle(_grey16(), 16)
    with pytest.raises(DecodeError, match="expected 1 segments"):
        _fmt(RLE_LOSSLESS, ba=8).check_codestream(RLE.parameters(cs), 0)
    corrupt = bytearray(cs)
    corrupt[8:12] = (len(cs) + 10).to_bytes(4, "little")  # second segment past the end
    with pytest.raises(DecodeError, match="2 segments at"):
        validate_rle_header(RLE.parameters(bytes(corrupt)), 1, 16, path="x.dcm", frame=1)


# -- colour hints ----------------------------------------------------------------------------
def test_jpeg_colour_hints_on_real_codestreams():
    imagecodecs = pytest.importorskip("imagecodecs")
    jfif = JPEG.parameters(bytes(imagecodecs.jpeg8_encode(_rgb8(), level=90)))
    adobe_rgb = JPEG.parameters(bytes(imagecodecs.jpeg8_encode(_rgb8(), level=90, colorspace="RGB", outcolorspace="RGB")))
    assert adobe_rgb["component_ids"] == [82, 71, 66]
    # A JFIF codestream in a file that says RGB holds YCbCr: 4:2:2 for Baseline.
    assert _fmt(BASELINE, spp=3).photometric_for(jfif) == "YBR_FULL_422"
    assert _fmt(EXTENDED, spp=3).photometric_for(jfif) == "YBR_FULL"
    assert _fmt(BASELINE, spp=3, pi="YBR_FULL").photometric_for(jfif) == "YBR_FULL"
    # 'R', 'G', 'B' component identifiers win over the header.
    assert _fmt(BASELINE, spp=3, pi="YBR_FULL_422").photometric_for(adobe_rgb) == "RGB"
    assert _fmt(JPEG_LOSSLESS, spp=3, pi="YBR_FULL").photometric_for(adobe_rgb) == "RGB"


def test_jpeg_colour_hint_rules():
    jfif = {"component_ids": [1, 2, 3], "app": {b"\xff\xe0": b"JFIF\x00\x01\x01"}}
    assert jpeg_colour_hint(jfif, "RGB", 3, "YBR_FULL") == "YBR_FULL"
    assert jpeg_colour_hint(jfif, "YBR_FULL_422", 3, "YBR_FULL") == "YBR_FULL_422"
    assert jpeg_colour_hint({"component_ids": [114, 103, 98]}, "YBR_FULL", 3, "YBR_FULL") == "RGB"
    assert jpeg_colour_hint({"component_ids": [1, 2, 3]}, "RGB", 3, "YBR_FULL") == "RGB"
    assert jpeg_colour_hint(jfif, "MONOCHROME2", 1, "YBR_FULL") == "MONOCHROME2"
    assert jpeg_colour_hint({}, "RGB", 3, "YBR_FULL") == "RGB"
    # JPEG-LS reads the same hints, and is never Baseline (never 4:2:2).
    assert _fmt(JPEG_LS_LOSSLESS, spp=3).photometric_for(jfif) == "YBR_FULL"
    assert _fmt(JPEG_LS_LOSSLESS, spp=3).photometric_for(JPEG_LS.parameters(_jpegls(_rgb8()))) == "RGB"
    # Families without colour hints keep the header's colour space.
    for uid in (J2K_LOSSLESS, RLE_LOSSLESS, ENC_NATIVE):
        assert _fmt(uid, spp=3).photometric_for(jfif) == "RGB"


def test_j2k_colour_transform_is_inverted_by_the_decoder():
    assert j2k_decoded_photometric("YBR_ICT") == j2k_decoded_photometric("YBR_RCT") == "RGB"
    assert j2k_decoded_photometric("YBR_FULL") == "YBR_FULL"
    assert HTJ2K.decoded_photometric("YBR_RCT") == "RGB"
    assert JPEG.decoded_photometric("YBR_ICT") == "YBR_ICT"  # a JPEG 2000 rule only


@pytest.mark.parametrize("uid,pi,params,as_rgb,want", [
    (EXPLICIT_LE, "YBR_FULL_422", {}, False, "YBR_FULL"),  # expanded to full resolution
    (EXPLICIT_LE, "YBR_FULL_422", {}, True, "RGB"),
    (EXPLICIT_LE, "YBR_FULL", {}, False, "YBR_FULL"),
    (J2K_LOSSLESS, "YBR_RCT", {}, False, "RGB"),
    (HTJ2K_LOSSLESS, "YBR_ICT", {}, True, "RGB"),
    (BASELINE, "RGB", {"app": {b"\xff\xe0": b"JFIF\x00"}}, False, "YBR_FULL"),
    (BASELINE, "RGB", {"app": {b"\xff\xe0": b"JFIF\x00"}}, True, "RGB"),
    (BASELINE, "YBR_FULL_422", {"component_ids": [82, 71, 66]}, False, "RGB"),
    (RLE_LOSSLESS, "RGB", {}, True, "RGB"),
])
def test_output_photometric(uid, pi, params, as_rgb, want):
    assert _fmt(uid, spp=3, pi=pi).output_photometric(params, as_rgb) == want


def test_output_photometric_of_monochrome_and_when_the_codestream_is_read():
    assert _fmt(BASELINE, pi="MONOCHROME1").output_photometric({}, True) == "MONOCHROME1"
    assert _fmt(BASELINE, spp=3).colour_from_codestream and _fmt(JPEG_LS_LOSSLESS, spp=3).colour_from_codestream
    assert not _fmt(BASELINE).colour_from_codestream
    assert not any(_fmt(uid, spp=3).colour_from_codestream for uid in (J2K_LOSSLESS, RLE_LOSSLESS, EXPLICIT_LE))


def test_decompress_reports_the_familys_photometric(tmp_path):
    from dicomframes.transcode.decompress import output_photometric

    path = write_sample(tmp_path / "rgb.dcm", frames=2, rows=32, columns=32, samples_per_pixel=3, syntax="jpegls")
    with dicomframes.open(path) as reader:
        params = reader.format.codestream_parameters(reader.encoded_frame(0))
        for as_rgb in (True, False):
            assert output_photometric(reader, as_rgb) == reader.format.output_photometric(params, as_rgb) == "RGB"


# -- sign and precision corrections -----------------------------------------------------------
def test_shift_out_high_bits():
    signed = np.array([0x0FFF, 0x0800, 0x07FF, 0x7123], dtype=np.int16)
    np.testing.assert_array_equal(shift_out_high_bits(signed.copy(), 4), [-1, -2048, 2047, 0x123])
    unsigned = np.array([0xF0FF, 0x0FFF], dtype=np.uint16)
    np.testing.assert_array_equal(shift_out_high_bits(unsigned.copy(), 4), [0x00FF, 0x0FFF])
    frozen = np.array([0x0FFF], dtype=np.int16)
    frozen.flags.writeable = False
    assert shift_out_high_bits(frozen, 4)[0] == -1 and frozen[0] == 0x0FFF  # copied, not written
    assert shift_out_high_bits(frozen, 0) is frozen


def test_sign_shift_rules():
    params = {"precision": 12, "is_signed": False}
    assert jpegls_sign_shift(params, 2, 1, 12) == 4 and jpegls_sign_shift(params, 2, 0, 12) == 0
    assert jpegls_sign_shift({}, 2, 1, 10) == 6  # no SOF: Bits Stored
    assert j2k_sign_shift(params, "MONOCHROME2", 2, 1, 12) == 4  # codestream unsigned, header signed
    assert j2k_sign_shift({"precision": 12, "is_signed": True}, "MONOCHROME1", 2, 0, 12) == 4
    assert j2k_sign_shift(params, "MONOCHROME2", 2, 0, 12) == 0  # they agree
    assert j2k_sign_shift(params, "RGB", 2, 1, 12) == 0  # colour: left as decoded
    # Everything else masks (or sign-extends) the bits above Bits Stored.
    for uid in (JPEG_LOSSLESS, RLE_LOSSLESS, ENC_NATIVE, DEFLATED_FRAMES):
        assert _fmt(uid, ba=16, bs=12).family.sign_shift({}, "MONOCHROME2", 2, _fmt(uid, ba=16, bs=12)) == 4


# JPEG 2000 declares its signedness, which may disagree with the header; DICOM's
# JPEG-LS codestreams hold signed pixels as unsigned values.
@pytest.mark.parametrize("uid,signed_codestream", [(J2K_LOSSLESS, False), (J2K_LOSSLESS, True), (JPEG_LS_LOSSLESS, False)])
@pytest.mark.parametrize("pr", [0, 1])
def test_sign_correction_matches_pydicom(uid, signed_codestream, pr):
    pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate

    signed, unsigned = _signed12()
    cs = _jpegls(unsigned) if uid == JPEG_LS_LOSSLESS else _j2k(signed if signed_codestream else unsigned, 12)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = ROWS, COLUMNS, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation, ds.NumberOfFrames = 16, 12, 11, pr, 1
    ds.PixelData = encapsulate([cs])
    ds["PixelData"].VR = "OB"
    want = ds.pixel_array

    got = _decode(_fmt(uid, ba=16, bs=12, pr=pr), cs)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, signed if pr else unsigned)


# -- the backend registry --------------------------------------------------------------------
def _names(uid: str) -> list[str]:
    return [b.name for b in codecs.backends_for(lookup(uid))]


def _registry() -> dict[str, list[int]]:
    return {uid: [id(b) for b in codecs.backends_for(ts)] for uid, ts in SYNTAXES.items()}


def test_builtin_preference_order():
    for uid in (BASELINE, J2K_LOSSLESS, HTJ2K_LOSSLESS):
        assert _names(uid) == ["imagecodecs", "pylibjpeg"]
    # JPEG-LS: pylibjpeg-libjpeg decodes it too, last: the fallback for codestreams CharLS refuses
    assert _names(JPEG_LS_LOSSLESS) == ["imagecodecs", "pylibjpeg", "libjpeg"]
    assert _names(RLE_LOSSLESS) == ["pylibjpeg", "imagecodecs"]  # imagecodecs' RLE never the default
    assert _names(ENC_NATIVE) == _names(DEFLATED_FRAMES) == ["numpy"]
    assert _names(EXPLICIT_LE) == []
    assert codecs.select(lookup(RLE_LOSSLESS)).name == "pylibjpeg"
    if codecs.backends_for(lookup(BASELINE))[0].available():
        assert codecs.select(lookup(BASELINE)).name == "imagecodecs"
    # Frames that are pixel bytes have one backend, whatever name is asked for.
    assert codecs.select(lookup(ENC_NATIVE), "imagecodecs").name == "numpy"


def _counting(inner: Backend, name: str, calls: list) -> Backend:
    def decode(src: bytes, ctx, params) -> Decoded:
        calls.append(len(src))
        return inner.decode(src, ctx, params)

    return Backend(name, frozenset({Codec.JPEGLS}), inner.packages, inner.modules, decode)


def test_a_backend_registered_first_wins(tmp_path):
    ts = lookup(JPEG_LS_LOSSLESS)
    before = _registry()
    default = codecs.select(ts)
    calls_first: list = []
    calls_last: list = []
    first = _counting(codecs.select(ts, "pylibjpeg"), "first", calls_first)
    last = _counting(codecs.select(ts, "pylibjpeg"), "last", calls_last)
    codecs.register(first, first=True)
    codecs.register(last)
    try:
        assert codecs.backends_for(ts)[0] is first and codecs.backends_for(ts)[-1] is last
        assert codecs.select(ts) is first and codecs.select(ts, "last") is last
        # The reader decodes through the registry.
        path = write_sample(tmp_path / "ls.dcm", frames=2, rows=32, columns=32, syntax="jpegls")
        with dicomframes.open(path) as reader:
            np.testing.assert_array_equal(reader.frame(1), sample_frame(1, 32, 32))
        assert len(calls_first) == 1 and not calls_last
        # Registering again moves a backend: last in the order, no longer the default.
        codecs.register(first)
        assert codecs.backends_for(ts)[-1] is first and codecs.select(ts) is default
        assert _names(JPEG_LS_LOSSLESS).count("first") == 1
    finally:
        codecs.unregister(first)
        codecs.unregister(last)
    assert _registry() == before
    codecs.unregister(first)  # not registered: nothing to do
    assert _registry() == before

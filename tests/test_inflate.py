"""The io layer's `InflatedSource`: random access into a raw deflate stream.

Checkpoints are made small on the instance (``checkpoint_every``) so that a few
hundred KiB of data cross many of them; what a jump costs is read from the raw
source's own counters (``raw.stats``).
"""

from __future__ import annotations

import random
import zlib

import pytest

from dicomframes.errors import InvalidFileError, TruncatedFileError
from dicomframes.io.inflate import InflatedSource
from dicomframes.io.local import BytesSource, LocalFileSource

KiB = 1 << 10
PREFIX = b"\x00" * 128 + b"DICM" + b"file meta"  # bytes before the stream, as in a deflated file


_LETTERS = bytes(b"ACGT0123456789ab"[i % 16] for i in range(256))


def text(n: int, seed: int = 0) -> bytes:
    """`n` bytes that deflate about 2:1 (random letters of a small alphabet, and runs)."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < n:
        k = rng.randrange(1, 3000)
        if rng.random() < 0.7:
            out += rng.randbytes(k).translate(_LETTERS)
        else:
            out += bytes([rng.randrange(256)]) * k
    return bytes(out[:n])


def deflate(data: bytes, level: int = 6) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


DATA = text(4_000_000)
N = len(DATA)
RAW = PREFIX + deflate(DATA)


def inflated(raw: bytes = RAW, checkpoint_every: int | None = 64 * KiB) -> InflatedSource:
    source = InflatedSource(BytesSource(raw, name="deflated.dcm"), len(PREFIX))
    if checkpoint_every is not None:
        source.checkpoint_every = checkpoint_every
    return source


def test_the_raw_stream_is_larger_than_the_input_blocks():
    # The tests below rely on it: the stream spans several 256 KiB input blocks.
    assert len(RAW) > 5 * 256 * KiB


def test_offsets_are_in_the_inflated_stream():
    source = inflated()
    assert source.read(0, 100) == DATA[:100]
    assert source.read(N - 100, 100) == DATA[-100:]
    assert source.name == "deflated.dcm"


def test_random_access_forwards_and_backwards_across_checkpoints():
    source = inflated()
    rng = random.Random(5)
    offsets = [rng.randrange(N) for _ in range(60)]
    offsets += sorted(offsets) + sorted(offsets, reverse=True)
    for o in offsets:
        n = rng.randrange(1, 100 * KiB)
        assert source.read(o, n) == DATA[o : o + n], (o, n)


def test_reads_ranges_across_checkpoints():
    source = inflated(checkpoint_every=16 * KiB)
    ranges = [(N - 50_000, 40_000), (10, 200_000), (1_000_000, 3), (999_999, 10)]
    assert source.read_ranges(ranges) == [DATA[o : o + n] for o, n in ranges]


def test_a_backwards_jump_costs_at_most_one_checkpoint_interval():
    source = inflated(checkpoint_every=64 * KiB)
    assert source.read(0, N) == DATA
    whole = source.raw.stats.bytes
    assert whole == len(RAW) - len(PREFIX)  # the stream read once, from its start
    # Back to near the end, to the middle, to the start: each inflates from the last
    # checkpoint before it (one or two input blocks), not from the start of the stream.
    for o in (N - 1000, N // 2, 5):
        before = source.raw.stats.bytes
        assert source.read(o, 10) == DATA[o : o + 10]
        assert source.raw.stats.bytes - before <= 2 * 256 * KiB, o


def test_without_checkpoints_a_backwards_jump_inflates_from_the_start():
    # The default interval (8 MiB) is larger than this stream: only the start is a checkpoint.
    source = inflated(checkpoint_every=None)
    assert InflatedSource.checkpoint_every == 8 << 20
    source.read(N - 10, 10)
    whole = source.raw.stats.bytes
    source.read(N - 1000, 10)
    assert source.raw.stats.bytes - whole >= len(RAW) - len(PREFIX) - 256 * KiB


def test_forward_reads_continue_without_rereading():
    source = inflated()
    pos = 0
    while pos < N:
        assert source.read(pos, 50_000) == DATA[pos : pos + 50_000]
        pos += 50_000
    assert source.raw.stats.bytes == len(RAW) - len(PREFIX)


def test_size_is_learnt_at_the_end():
    source = inflated()
    assert source.size is None
    source.read(0, N // 2)
    assert source.size is None
    assert source.read(N - 5, 100) == DATA[-5:]
    assert source.size == N
    assert source.read(N, 10) == b""


def test_read_past_the_end_learns_the_size():
    source = inflated()
    assert source.read(N + 1000, 10) == b""
    assert source.size == N
    assert source.read(3, 3) == DATA[3:6]


def test_read_exact_past_the_end_is_truncated():
    source = inflated()
    with pytest.raises(TruncatedFileError) as info:
        source.read_exact(N - 2, 10)
    assert info.value.offset == N - 2 and info.value.path == "deflated.dcm"


def test_trailing_bytes_after_the_stream_are_not_data():
    source = inflated(RAW + b"\x00\x00padding")
    assert source.read(N - 10, 100) == DATA[-10:]
    assert source.size == N


def test_an_empty_stream():
    source = inflated(PREFIX + deflate(b""))
    assert source.read(0, 10) == b""
    assert source.size == 0


def test_corrupt_stream_is_invalid_file_error_with_offset():
    # A full flush ends the first part on a byte boundary; then a block of the invalid type 3.
    good = DATA[:300_000]
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream = c.compress(good) + c.flush(zlib.Z_FULL_FLUSH)
    broken_at = len(PREFIX) + len(stream)
    source = inflated(PREFIX + stream + b"\xff" * 1000)
    assert source.read(0, 1000) == good[:1000]  # before the corruption all is well
    with pytest.raises(InvalidFileError) as info:
        source.read(250_000, 100_000)
    err = info.value
    assert err.path == "deflated.dcm" and "corrupt" in err.message
    # The offset is in the raw file: where the input taken so far ends, at or past the damage.
    assert broken_at < err.offset <= broken_at + 1000


def test_garbage_from_the_start_is_invalid_file_error():
    source = InflatedSource(BytesSource(b"\x00" * 10 + b"\xff" * 100, name="junk"), 10)
    with pytest.raises(InvalidFileError) as info:
        source.read(0, 10)
    assert info.value.path == "junk" and info.value.offset == 110


def test_a_truncated_stream_ends_early_with_the_right_bytes():
    source = inflated(RAW[: len(RAW) // 2])
    got = source.read(0, N)
    assert 0 < len(got) < N and got == DATA[: len(got)]
    assert source.size == len(got)
    with pytest.raises(TruncatedFileError):
        source.read_exact(len(got) - 1, 10)
    # Backwards after the end of the input: still right.
    assert source.read(100, 10) == DATA[100:110]


def test_over_a_local_file(tmp_path):
    path = tmp_path / "deflated.bin"
    path.write_bytes(RAW)
    source = InflatedSource(LocalFileSource(path), len(PREFIX))
    source.checkpoint_every = 32 * KiB
    rng = random.Random(9)
    for _ in range(20):
        o, n = rng.randrange(N), rng.randrange(1, 50_000)
        assert source.read(o, n) == DATA[o : o + n]
    assert source.name == str(path)
    source.close()

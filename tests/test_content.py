"""alf.content with a real file behind it: the output takes its name only once verified."""

from __future__ import annotations

import os

import pytest


def test_output_takes_its_name_only_when_the_digest_matches(tmp_path: os.PathLike[str]) -> None:
    """A digest mismatch leaves the output partial (deleted on close): never a wrong file under
    the final name (found by the lab test that corrupts the FINAL's digest)."""
    from alf.content import OffsetSink
    from alf.digest import digest_bytes
    from alf.io.sink import FileBackend
    from alf.wire import DigestAlg

    data = bytes(range(256)) * 40
    for expected, kept in ((digest_bytes(DigestAlg.XXH3_128, data), True), (bytes(32), False)):
        path = os.path.join(tmp_path, f"out-{kept}")
        sink = OffsetSink(FileBackend(path, force=False))
        sink.start(100, len(data), DigestAlg.XXH3_128)
        sink.write_block(0, len(data) // 100 + 1, data)
        sink.advance(len(data) // 100 + 1)
        nbytes, digest = sink.finish(len(data), expected)
        assert nbytes == len(data) and digest == digest_bytes(DigestAlg.XXH3_128, data)
        assert os.path.exists(path) == kept
        sink.close(kept)
        assert os.path.exists(path) == kept and not os.path.exists(path + ".alf-partial")
        if kept:
            with open(path, "rb") as f:
                assert f.read() == data


def test_read_back_hashes_what_was_written_and_catches_a_truncated_output(
    tmp_path: os.PathLike[str],
) -> None:
    """What arrived beyond a hole is hashed from the output file (through a mapping), in
    windows that need not start on a page; an output cut short behind alf's back is an error,
    not a SIGBUS from reading a mapping past the end of its file."""
    from alf.content import OffsetSink, SinkError
    from alf.digest import digest_bytes
    from alf.io.sink import FileBackend
    from alf.wire import DigestAlg

    data = os.urandom(100 * 997)
    for cut in (False, True):
        path = os.path.join(tmp_path, f"out-{cut}")
        sink = OffsetSink(FileBackend(path, force=False), hash_chunk=5000)
        sink.start(100, len(data), DigestAlg.XXH3_128)
        sink.write_block(1, 996, data[100:])  # beyond the hole at ADU 0: hashed later, read back
        sink.write_block(0, 1, data[:100])
        if cut:
            os.truncate(path + ".alf-partial", 50_000)
            with pytest.raises(SinkError, match="shorter"):
                sink.advance(997)  # (one chunk: within what is left)
                sink.finish(len(data), None)
        else:
            sink.advance(997)
            assert sink._hashed == 5100  # read back one chunk per call: never a long stall
            sink.advance(997)
            assert sink._hashed == 10100
            assert sink.finish(len(data), None)[1] == digest_bytes(DigestAlg.XXH3_128, data)
        sink.close(False)

"""RangedReader.iter_chunks(size) hands out pieces of at most size bytes (as botocore's StreamingBody does), so
that a restore decompressing each piece holds a bounded output instead of a whole 8 MiB range's (bench/shapes.py
measured 521-635 MB of peak RSS for a 0.5 GiB restore with jobs=2 before, see bench/README.md)."""

from __future__ import annotations

import random

import pytest
import zstandard

from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import RangedReader

pytestmark = pytest.mark.integration


def put(target, key, body):
    target.client.put_object(Bucket=target.bucket, Key=key, Body=body)
    return target.client.head_object(Bucket=target.bucket, Key=key)["ETag"]


def test_pieces_are_at_most_the_asked_size_and_give_back_the_object(s3_target, prefix):
    payload = random.randbytes(3 * 1024 * 1024 + 4321)
    key = f"{prefix}/pieces.bin"
    etag = put(s3_target, key, payload)
    reader = RangedReader(s3_target, key, len(payload), etag, chunk=1024 * 1024, workers=2)
    try:
        pieces = list(reader.iter_chunks(300 * 1024))
    finally:
        reader.close()
    assert b"".join(pieces) == payload
    assert max(len(p) for p in pieces) == 300 * 1024
    assert len(pieces) == 3 * 4 + 1  # each 1 MiB range in 4 pieces (3 x 300 KiB + 124 KiB), then the tail
    whole = RangedReader(s3_target, key, len(payload), etag, chunk=1024 * 1024, workers=2)
    try:
        assert [len(p) for p in whole.iter_chunks()] == [1024 * 1024] * 3 + [4321]  # no size: whole ranges
    finally:
        whole.close()


def test_decompressing_the_pieces_keeps_each_output_small(s3_target, prefix):
    """The restore's case: COPY text compresses about 4-5x, so one 8 MiB range decompressed at once is ~35 MiB."""
    rows = b"".join(b'%d\tuser-%d\t{"kind": "chat.message", "n": %d}\n' % (i, i % 977, i) for i in range(400000))
    body = zstandard.ZstdCompressor(level=1).compress(rows)
    key = f"{prefix}/copy.zst"
    etag = put(s3_target, key, body)
    reader = RangedReader(s3_target, key, len(body), etag, chunk=len(body), workers=1)
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    outputs = []
    try:
        for piece in reader.iter_chunks(64 * 1024):
            outputs.append(len(decompressor.decompress(piece)))
    finally:
        reader.close()
    assert sum(outputs) == len(rows)
    assert max(outputs) < len(rows) / 4  # without pieces the one range decompresses to all of it at once

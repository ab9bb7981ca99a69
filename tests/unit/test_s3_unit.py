"""s3 without a server: part sizes, checksums, error translation and the multipart writer over a fake client."""

from __future__ import annotations

import base64
import hashlib
import threading

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from ansible_collections.pgdr.supabase.plugins.module_utils import s3
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

MiB = 1024 * 1024
TB = 1000**4


class TestPartSize:
    @pytest.mark.parametrize("expected", [0, -5, 1, 100 * MiB, 10 * 1000**3])
    def test_small_objects_use_the_16_mib_minimum(self, expected):
        assert s3.part_size_for(expected) == 16 * MiB

    @pytest.mark.parametrize("expected", [TB, 5 * TB, int(5.5 * TB)])
    def test_large_objects_stay_well_under_10000_parts(self, expected):
        size = s3.part_size_for(expected)
        parts = -(-expected // size)
        assert parts <= s3.MAX_PARTS // 4  # the margin of 4 is for a database that grows during the dump
        assert parts * 4 <= s3.MAX_PARTS

    def test_5_tb_object_fits_even_at_four_times_its_size(self):
        size = s3.part_size_for(5 * TB)
        assert size > 16 * MiB
        assert -(-(4 * 5 * TB) // size) < s3.MAX_PARTS

    @pytest.mark.parametrize("expected", [0, 123_456_789, 7 * TB + 3])
    def test_whole_mebibytes(self, expected):
        assert s3.part_size_for(expected) % MiB == 0

    def test_never_below_the_s3_minimum(self):
        assert s3.part_size_for(0, minimum=1) == s3.MIN_PART_SIZE

    def test_grows_with_the_object(self):
        sizes = [s3.part_size_for(n * TB) for n in (1, 2, 4, 8)]
        assert sizes == sorted(sizes)
        assert len(set(sizes)) == 4


def test_b64_sha256():
    data = b"pgdr"
    assert s3.b64_sha256(data) == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert s3.b64_sha256(b"") == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


def client_error(code, message="msg", operation="PutObject"):
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


class TestTranslate:
    def test_client_error_names_code_step_subject_and_hint(self):
        err = s3.translate(client_error("AccessDenied", "Access Denied"), "upload data", "s3://b/k")
        assert isinstance(err, DRError)
        assert err.step == "upload data"
        assert err.subject == "s3://b/k"
        assert "S3 answered AccessDenied: Access Denied" in str(err)
        assert "s3:GetObject" in err.hint

    def test_unknown_code_has_no_hint(self):
        err = s3.translate(client_error("SlowDown"), "upload", "s3://b/k")
        assert err.hint is None
        assert "SlowDown" in str(err)

    def test_message_falls_back_to_the_code(self):
        err = s3.translate(client_error("NoSuchBucket", message=""), "list", "s3://b/")
        assert "S3 answered NoSuchBucket: NoSuchBucket" in str(err)
        assert "create the bucket" in err.hint

    def test_unreachable_endpoint(self):
        err = s3.translate(EndpointConnectionError(endpoint_url="https://127.0.0.1:1/b"), "check bucket", "s3://b/")
        assert "cannot reach the S3 endpoint" in str(err)
        assert "endpoint" in err.hint

    def test_drerror_passes_through(self):
        original = DRError("already translated", step="x")
        assert s3.translate(original, "y", "z") is original

    def test_other_exception(self):
        err = s3.translate(RuntimeError("socket closed"), "upload", "s3://b/k")
        assert str(err).startswith("[upload] S3 request failed: socket closed")

    def test_error_code_and_not_found(self):
        assert s3.error_code(client_error("NoSuchKey")) == "NoSuchKey"
        assert s3.error_code(RuntimeError("x")) is None
        assert s3.is_not_found(client_error("404"))
        assert s3.is_not_found(client_error("NoSuchUpload"))
        assert not s3.is_not_found(client_error("AccessDenied"))
        assert not s3.is_not_found(RuntimeError("404"))


class FakeClient:
    """Records the S3 calls the writer makes; fails upload_part number ``fail_part`` when set."""

    def __init__(self, fail_part=None):
        self.calls = []
        self.parts = {}
        self.objects = {}
        self.fail_part = fail_part
        self.lock = threading.Lock()

    def _record(self, name, **kwargs):
        with self.lock:
            self.calls.append((name, kwargs))

    def create_multipart_upload(self, **kwargs):
        self._record("create_multipart_upload", **kwargs)
        return {"UploadId": "up-1"}

    def upload_part(self, **kwargs):
        self._record("upload_part", **kwargs)
        if kwargs["PartNumber"] == self.fail_part:
            raise client_error("BadDigest", "checksum mismatch", "UploadPart")
        assert kwargs["ChecksumSHA256"] == s3.b64_sha256(kwargs["Body"])
        with self.lock:
            self.parts[kwargs["PartNumber"]] = kwargs["Body"]
        return {"ETag": f'"etag-{kwargs["PartNumber"]}"'}

    def complete_multipart_upload(self, **kwargs):
        self._record("complete_multipart_upload", **kwargs)
        numbers = [p["PartNumber"] for p in kwargs["MultipartUpload"]["Parts"]]
        self.objects[kwargs["Key"]] = b"".join(self.parts[n] for n in numbers)

    def abort_multipart_upload(self, **kwargs):
        self._record("abort_multipart_upload", **kwargs)

    def put_object(self, **kwargs):
        self._record("put_object", **kwargs)
        assert kwargs["ChecksumSHA256"] == s3.b64_sha256(kwargs["Body"])
        self.objects[kwargs["Key"]] = kwargs["Body"]
        return {}

    def names(self):
        return [name for name, _unused in self.calls]


class FakeTarget(s3.S3Target):
    """An S3Target whose client is a FakeClient (no boto3 session)."""

    def __init__(self, client):  # no super().__init__: no boto3 client on purpose
        self.bucket = "bucket"
        self.endpoint_url = None
        self.client = client


def payload(size):
    return (bytes(range(251)) * (size // 251 + 1))[:size]


class TestMultipartWriter:
    def test_part_size_below_the_s3_minimum_is_refused(self):
        with pytest.raises(ValueError, match="at least"):
            s3.MultipartWriter(FakeTarget(FakeClient()), "k", part_size=s3.MIN_PART_SIZE - 1)

    def test_small_object_is_one_put_with_its_checksum(self):
        client = FakeClient()
        writer = s3.MultipartWriter(FakeTarget(client), "small", part_size=s3.MIN_PART_SIZE)
        data = payload(1000)
        writer.write(data[:400])
        writer.write(data[400:])
        size, sha = writer.close()
        assert (size, sha) == (1000, hashlib.sha256(data).hexdigest())
        assert client.names() == ["put_object"]
        assert client.objects["small"] == data

    def test_large_object_is_cut_into_parts_and_completed_in_order(self):
        client = FakeClient()
        progress = []
        writer = s3.MultipartWriter(
            FakeTarget(client), "big", part_size=s3.MIN_PART_SIZE, concurrency=2, on_progress=progress.append
        )
        data = payload(2 * s3.MIN_PART_SIZE + 12345)
        for start in range(0, len(data), 1_000_000):
            writer.write(data[start : start + 1_000_000])
        size, sha = writer.close()
        assert size == len(data)
        assert sha == hashlib.sha256(data).hexdigest()
        assert client.objects["big"] == data
        assert [p["PartNumber"] for p in writer.parts] == [1, 2, 3]
        assert client.names()[0] == "create_multipart_upload"
        assert client.names()[-1] == "complete_multipart_upload"
        assert client.calls[0][1]["ChecksumAlgorithm"] == "SHA256"
        assert progress[-1] == len(data)
        assert progress == sorted(progress)

    def test_close_twice_returns_the_same_result(self):
        client = FakeClient()
        writer = s3.MultipartWriter(FakeTarget(client), "k")
        writer.write(b"abc")
        first = writer.close()
        assert writer.close() == first
        assert client.names() == ["put_object"]

    def test_failed_part_surfaces_as_drerror_and_abort_removes_the_upload(self):
        client = FakeClient(fail_part=1)
        writer = s3.MultipartWriter(FakeTarget(client), "bad", part_size=s3.MIN_PART_SIZE, concurrency=1)
        with pytest.raises(DRError) as caught:
            writer.write(payload(2 * s3.MIN_PART_SIZE))
            writer.write(payload(s3.MIN_PART_SIZE))
            writer.close()
        assert "BadDigest" in str(caught.value)
        assert caught.value.step == "upload part 1"
        assert writer.abort() is None
        assert "abort_multipart_upload" in client.names()
        assert "complete_multipart_upload" not in client.names()
        assert "bad" not in client.objects

    def test_abort_before_any_part_sends_nothing(self):
        client = FakeClient()
        writer = s3.MultipartWriter(FakeTarget(client), "k")
        writer.write(b"abc")
        assert writer.abort() is None
        assert client.calls == []


class TestS3Target:
    def test_where(self):
        target = s3.S3Target("dr-backups", endpoint_url="https://127.0.0.1:1", access_key="a", secret_key="b")
        assert target.where("x/y") == "s3://dr-backups/x/y"
        assert target.where() == "s3://dr-backups/"

    def test_unreachable_endpoint_fails_with_the_bucket_named(self):
        target = s3.S3Target(
            "dr-backups", endpoint_url="http://127.0.0.1:1", access_key="a", secret_key="b", max_attempts=1
        )
        with pytest.raises(DRError) as caught:
            target.check_bucket(step="check bucket")
        assert caught.value.step == "check bucket"
        assert caught.value.subject == "s3://dr-backups/"
        assert "cannot reach the S3 endpoint" in str(caught.value)

    def test_checksum_header_replaces_the_payload_hash(self):
        class Request:
            def __init__(self, headers):
                self.headers = headers

        with_checksum = Request({"x-amz-checksum-sha256": "abc"})
        s3._reuse_payload_checksum(with_checksum)
        assert with_checksum.headers["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
        without = Request({})
        s3._reuse_payload_checksum(without)
        assert "X-Amz-Content-SHA256" not in without.headers
        already = Request({"x-amz-checksum-sha256": "abc", "X-Amz-Content-SHA256": "deadbeef"})
        s3._reuse_payload_checksum(already)
        assert already.headers["X-Amz-Content-SHA256"] == "deadbeef"

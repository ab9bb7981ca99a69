"""S3 access for the engine: a client with explicit checksum and retry settings, one error translation,
and a streaming multipart writer with SHA-256 checksums whose memory is bounded by part size x concurrency."""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    HAS_BOTO3 = True
except ImportError:  # pragma: no cover - reported by the modules
    HAS_BOTO3 = False

MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10000
MAX_PART_SIZE = 5 * 1024 * 1024 * 1024
NOT_FOUND_CODES = ("404", "NoSuchKey", "NotFound", "NoSuchUpload")
PRECONDITION_CODES = ("PreconditionFailed", "ConditionalRequestConflict", "412")

_HINTS = {
    "NoSuchBucket": "create the bucket or fix the bucket name in the inventory",
    "InvalidAccessKeyId": "check the S3 access key in the vault or secret store",
    "SignatureDoesNotMatch": "check the S3 secret key in the vault or secret store",
    "AccessDenied": "give the backup identity s3:GetObject/PutObject/ListBucket/AbortMultipartUpload on the bucket",
    "BadDigest": "the data changed in transit or on disk; run the step again",
    "PreconditionFailed": "another run wrote the object first; list the backups and run again",
}


def error_code(exc):
    """The S3 error code of a botocore exception, or None."""
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code")
    return None


def is_not_found(exc):
    return error_code(exc) in NOT_FOUND_CODES


def is_precondition_failed(exc):
    """A conditional request (IfMatch / IfNoneMatch) whose condition did not hold; exc may be a DRError raised from
    the botocore error."""
    exc = exc.__cause__ if isinstance(exc, DRError) else exc
    return error_code(exc) in PRECONDITION_CODES


def translate(exc, step, subject):
    """Turn a boto3/botocore exception into a DRError that names the step, the object and the next action."""
    if isinstance(exc, DRError):
        return exc
    code = error_code(exc)
    if code:
        message = exc.response.get("Error", {}).get("Message") or code
        return DRError(f"S3 answered {code}: {message}", step=step, subject=subject, hint=_HINTS.get(code))
    if isinstance(exc, EndpointConnectionError):
        return DRError(
            f"cannot reach the S3 endpoint: {exc}",
            step=step,
            subject=subject,
            hint="check that the S3 endpoint is up and the endpoint URL in the inventory is right",
        )
    return DRError(f"S3 request failed: {exc}", step=step, subject=subject, hint="check the S3 endpoint and run again")


S3_ERRORS = (ClientError, BotoCoreError) if HAS_BOTO3 else ()


class S3Target:
    """A bucket on an endpoint, with the settings every call shares."""

    def __init__(
        self,
        bucket,
        endpoint_url=None,
        region="us-east-1",
        access_key=None,
        secret_key=None,
        session_token=None,
        ca_bundle=None,
        validate_certs=True,
        checksums="when_required",
        addressing_style="path",
        max_attempts=5,
        connect_timeout=10,
        read_timeout=120,
        max_pool=10,
    ):
        if not HAS_BOTO3:
            raise DRError("boto3 is not installed on the host that runs the module", hint="run 'make setup'")
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        verify = (ca_bundle or True) if validate_certs else False
        config = Config(
            region_name=region,
            retries={"mode": "standard", "max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool,
            s3={"addressing_style": addressing_style},
            # boto3 >= 1.36 adds CRC checksums to every request by default; some S3-compatible servers reject
            # them. We send our own SHA-256 checksums explicitly, so the implicit ones are an explicit choice.
            request_checksum_calculation=checksums,
            response_checksum_validation=checksums,
        )
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            aws_session_token=session_token,
            verify=verify,
            config=config,
        )
        client.meta.events.register("before-sign.s3", _reuse_payload_checksum)
        self.client = client

    def where(self, key=""):
        return f"s3://{self.bucket}/{key}"

    def check_bucket(self, step="check bucket"):
        """Fail with a clear message when the bucket is missing or the credentials are wrong."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except S3_ERRORS as exc:
            if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
                raise DRError(
                    "the bucket does not exist",
                    step=step,
                    subject=self.where(),
                    hint="create it (or fix the bucket name in the inventory)",
                ) from exc
            if error_code(exc) in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise DRError(
                    "access to the bucket was refused (wrong S3 access key or secret key, or no permission)",
                    step=step,
                    subject=self.where(),
                    hint="check the S3 credentials in the vault or secret store",
                ) from exc
            raise translate(exc, step, self.where()) from exc

    def get_json(self, key, step="read object"):
        """The JSON object at key, or None when it does not exist."""
        return self.get_json_etag(key, step)[0]

    def get_json_etag(self, key, step="read object"):
        """(the JSON object at key, its ETag), or (None, None) when it does not exist. The ETag is what a
        compare-and-swap (put_bytes(if_match=...), delete_if_match) names."""
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
            body = resp["Body"].read()
        except S3_ERRORS as exc:
            if is_not_found(exc):
                return None, None
            raise translate(exc, step, self.where(key)) from exc
        try:
            return json.loads(body), resp.get("ETag")
        except ValueError as exc:
            raise DRError(f"not valid JSON: {exc}", step=step, subject=self.where(key)) from exc

    def put_bytes(
        self,
        key,
        data,
        step="write object",
        if_none_match=False,
        content_type="application/json",
        extra_args=None,
        if_match=None,
    ):
        """Write a small object with its SHA-256 checksum; with if_none_match, only when it does not exist yet;
        with if_match (an ETag), only when the object is still that version (compare-and-swap)."""
        extra = dict(extra_args or {})
        if if_none_match:
            extra["IfNoneMatch"] = "*"
        if if_match:
            extra["IfMatch"] = if_match
        try:
            return self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                ChecksumSHA256=b64_sha256(data),
                **extra,
            )
        except S3_ERRORS as exc:
            raise translate(exc, step, self.where(key)) from exc

    def list_keys(self, prefix, step="list objects"):
        """Every key under prefix with its size, in key order."""
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            return [(obj["Key"], obj["Size"]) for page in pages for obj in page.get("Contents", [])]
        except S3_ERRORS as exc:
            raise translate(exc, step, self.where(prefix)) from exc

    def list_common_prefixes(self, prefix, step="list backups"):
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/"
            )
            return [p["Prefix"] for page in pages for p in page.get("CommonPrefixes", [])]
        except S3_ERRORS as exc:
            raise translate(exc, step, self.where(prefix)) from exc

    def list_uploads(self, prefix, step="list multipart uploads"):
        """In-progress multipart uploads under prefix as (key, upload id)."""
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix)
            return [(u["Key"], u["UploadId"]) for page in pages for u in page.get("Uploads", [])]
        except S3_ERRORS as exc:
            raise translate(exc, step, self.where(prefix)) from exc

    def abort_upload(self, key, upload_id, step="abort multipart upload"):
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except S3_ERRORS as exc:
            if not is_not_found(exc):
                raise translate(exc, step, self.where(key)) from exc

    def delete_if_match(self, key, etag, step="delete object"):
        """Delete key only while it is the version etag names. True when deleted; False when it is gone or was
        replaced (then it is someone else's object now and stays)."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key, IfMatch=etag)
        except S3_ERRORS as exc:
            if is_not_found(exc) or is_precondition_failed(exc):
                return False
            raise translate(exc, step, self.where(key)) from exc
        return True

    def delete_keys(self, keys, step="delete objects"):
        for key in keys:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key)
            except S3_ERRORS as exc:
                if not is_not_found(exc):
                    raise translate(exc, step, self.where(key)) from exc


def _reuse_payload_checksum(request, **_kwargs):
    """Skip SigV4's payload hash when the body already carries our SHA-256 (x-amz-checksum-sha256).

    The checksum header is signed and the server verifies the body against it, so hashing the body a
    second time for the signature (botocore does over plain HTTP) and a third time on the server adds
    CPU and no protection."""
    if request.headers.get("x-amz-checksum-sha256") and "X-Amz-Content-SHA256" not in request.headers:
        request.headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"


def b64_sha256(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def b64_from_hex(hexdigest):
    """A hex SHA-256 as S3 writes checksums (base64 of the raw digest)."""
    return base64.b64encode(bytes.fromhex(hexdigest)).decode()


def version_args(obj):
    """``{"VersionId": ...}`` when a backup object entry names the exact version to read, else ``{}``.

    Entries read from an immutable copy carry the locked version id recorded when the copy was secured, so a
    delete marker or a newer version put on top of the key never changes what a restore reads."""
    version_id = obj.get("version_id") if isinstance(obj, dict) else None
    return {"VersionId": version_id} if version_id else {}


# S3's CopyObject copies at most 5 GiB; bigger objects are copied part by part (UploadPartCopy).
MULTIPART_COPY_THRESHOLD = 5 * 1024 * 1024 * 1024
COPY_PART_SIZE = 512 * 1024 * 1024


def server_copy(source, source_key, dest, dest_key, size, extra_args=None, source_version=None):
    """Copy an object inside one endpoint (CopyObject, or UploadPartCopy above 5 GiB) with SHA-256 checksums.

    Returns the new version id (None in an unversioned bucket). botocore errors are the caller's to translate."""
    copy_source = {"Bucket": source.bucket, "Key": source_key}
    if source_version:
        copy_source["VersionId"] = source_version
    extra = dict(extra_args or {})
    client = dest.client
    if size <= MULTIPART_COPY_THRESHOLD:
        resp = client.copy_object(
            Bucket=dest.bucket,
            Key=dest_key,
            CopySource=copy_source,
            ChecksumAlgorithm="SHA256",
            MetadataDirective="COPY",
            **extra,
        )
        return resp.get("VersionId")
    upload = client.create_multipart_upload(Bucket=dest.bucket, Key=dest_key, ChecksumAlgorithm="SHA256", **extra)[
        "UploadId"
    ]
    try:
        parts = []
        for number, start in enumerate(range(0, size, COPY_PART_SIZE), start=1):
            end = min(start + COPY_PART_SIZE, size) - 1
            result = client.upload_part_copy(
                Bucket=dest.bucket,
                Key=dest_key,
                UploadId=upload,
                PartNumber=number,
                CopySource=copy_source,
                CopySourceRange=f"bytes={start}-{end}",
            )["CopyPartResult"]
            part = {"PartNumber": number, "ETag": result["ETag"]}
            if result.get("ChecksumSHA256"):
                part["ChecksumSHA256"] = result["ChecksumSHA256"]
            parts.append(part)
        resp = client.complete_multipart_upload(
            Bucket=dest.bucket, Key=dest_key, UploadId=upload, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        dest.abort_upload(dest_key, upload)
        raise
    return resp.get("VersionId")


def part_size_for(expected_bytes, minimum=16 * 1024 * 1024):
    """A part size that keeps an object of about expected_bytes (times a margin of 4) under S3's 10,000 parts."""
    needed = -(-max(expected_bytes, 0) * 4 // (MAX_PARTS - 100))
    size = max(minimum, MIN_PART_SIZE, needed)
    return min(-(-size // (1024 * 1024)) * 1024 * 1024, MAX_PART_SIZE)


class MultipartWriter:
    """A write-only stream into one S3 object.

    Data is cut into parts of ``part_size``; up to ``concurrency`` parts upload at once, each with its own
    SHA-256 checksum checked by the server. Memory is at most (concurrency + 1) x part_size. The object's
    own SHA-256 and size are computed on the way. An object smaller than one part is written with a single
    PUT. Nothing is visible under the key until ``close()`` completes; ``abort()`` removes every part.
    """

    def __init__(
        self, target, key, part_size=16 * 1024 * 1024, concurrency=3, extra_args=None, on_progress=None, ledger=None
    ):
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        self.target = target
        self.key = key
        self.part_size = part_size
        self.extra_args = dict(extra_args or {})
        self.on_progress = on_progress
        self.size = 0
        self.parts = []
        self.upload_id = None
        self.etag = None
        # A WriteLedger (runsafety.py) noting the object once it exists, so a failed run removes only its own.
        self.ledger = ledger
        self._sha = hashlib.sha256()
        self._buffer = bytearray()
        # The object's own SHA-256 is computed in order on one thread of its own, off the caller's thread.
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s3-sha")
        self._hashing = collections.deque()
        self._concurrency = concurrency
        self._slots = threading.Semaphore(concurrency)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3-part")
        self._futures = []
        self._error = None
        self._closed = False

    # The zstd stream writer and file-like callers use write() / flush().
    def write(self, data):
        if self._error:
            raise self._error
        n = len(data)
        self._buffer += data
        self.size += n
        while len(self._buffer) >= self.part_size:
            part = bytes(self._buffer[: self.part_size])
            del self._buffer[: self.part_size]
            self._submit(part)
        if self.on_progress and n:
            self.on_progress(self.size)
        return n

    def flush(self):
        return None

    @property
    def sha256(self):
        return self._sha.hexdigest()

    def _start(self):
        try:
            resp = self.target.client.create_multipart_upload(
                Bucket=self.target.bucket, Key=self.key, ChecksumAlgorithm="SHA256", **self.extra_args
            )
        except S3_ERRORS as exc:
            raise translate(exc, "start upload", self.target.where(self.key)) from exc
        self.upload_id = resp["UploadId"]

    def _submit(self, data):
        if self.upload_id is None:
            self._start()
        number = len(self._futures) + 1
        if number > MAX_PARTS:
            raise DRError(
                f"more than {MAX_PARTS} parts",
                step="upload",
                subject=self.target.where(self.key),
                hint="raise part_size",
            )
        self._slots.acquire()
        if self._error:
            self._slots.release()
            raise self._error
        # Hashing runs behind the caller; never let more than `concurrency` parts wait for it (bounded memory).
        self._hashing.append(self._hasher.submit(self._sha.update, data))
        while len(self._hashing) > self._concurrency:
            self._hashing.popleft().result()
        self._futures.append(self._pool.submit(self._upload_part, number, data))

    def _upload_part(self, number, data):
        try:
            checksum = b64_sha256(data)
            resp = self.target.client.upload_part(
                Bucket=self.target.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=data,
                ChecksumSHA256=checksum,
            )
            return {"PartNumber": number, "ETag": resp["ETag"], "ChecksumSHA256": checksum}
        except BaseException as exc:
            self._error = translate(exc, f"upload part {number}", self.target.where(self.key))
            raise self._error from exc
        finally:
            self._slots.release()

    def close(self):
        """Send what is left and complete the object. Returns the object's size and SHA-256."""
        if self._closed:
            return self.size, self.sha256
        data = bytes(self._buffer)
        self._buffer.clear()
        try:
            if self.upload_id is None and not self._futures:
                self._sha.update(data)
                resp = self.target.put_bytes(
                    self.key, data, step="upload", content_type="application/octet-stream", extra_args=self.extra_args
                )
            else:
                if data:
                    self._submit(data)
                self.parts = [future.result() for future in self._futures]
                self._hasher.shutdown(wait=True)
                resp = self.target.client.complete_multipart_upload(
                    Bucket=self.target.bucket,
                    Key=self.key,
                    UploadId=self.upload_id,
                    MultipartUpload={"Parts": self.parts},
                )
            self.etag = (resp or {}).get("ETag")
            if self.ledger is not None:
                self.ledger.wrote(self.key, self.etag)
        except S3_ERRORS as exc:
            raise translate(exc, "complete upload", self.target.where(self.key)) from exc
        finally:
            self._pool.shutdown(wait=True)
            self._hasher.shutdown(wait=True)
        self._closed = True
        return self.size, self.sha256

    def abort(self):
        """Stop: cancel queued parts and remove the upload. Returns an error message or None."""
        self._closed = True
        for future in self._futures:
            future.cancel()
        self._pool.shutdown(wait=True)
        self._hasher.shutdown(wait=True, cancel_futures=True)
        if self.upload_id is None:
            return None
        try:
            self.target.abort_upload(self.key, self.upload_id)
        except DRError as exc:
            return str(exc)
        return None


def _pieces(data, size):
    if not size or len(data) <= size:
        yield data
        return
    for start in range(0, len(data), size):
        yield data[start : start + size]


class RangedReader:
    """Reads one object with parallel ranged GETs, in order, as a stream (``read(n)`` / ``iter_chunks()``).

    Up to ``workers`` ranges are fetched ahead while the caller consumes the current one, so download, hashing
    and decompression overlap; memory stays at about (2 x workers + 1) ranges. Every range asks for the same
    ETag (If-Match), so an object replaced mid-read fails instead of mixing two versions; with ``version_id`` every
    range reads that exact version (a locked copy), whatever version is current.
    """

    def __init__(self, target, key, size, etag, chunk=8 * 1024 * 1024, workers=3, step="download", version_id=None):
        self.target = target
        self.key = key
        self.step = step
        self._version = {"VersionId": version_id} if version_id else {}
        self._ranges = iter([(start, min(start + chunk, size) - 1) for start in range(0, size, chunk)])
        self._etag = etag
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s3-range")
        self._window = collections.deque()
        for _unused in range(workers * 2):
            self._schedule()
        self._buffer = b""

    def _get(self, byte_range):
        try:
            resp = self.target.client.get_object(
                Bucket=self.target.bucket,
                Key=self.key,
                Range=f"bytes={byte_range[0]}-{byte_range[1]}",
                IfMatch=self._etag,
                **self._version,
            )
            return resp["Body"].read()
        except S3_ERRORS as exc:
            raise translate(exc, self.step, self.target.where(self.key)) from exc

    def _schedule(self):
        byte_range = next(self._ranges, None)
        if byte_range is not None:
            self._window.append(self._pool.submit(self._get, byte_range))

    def _next_chunk(self):
        if not self._window:
            return b""
        data = self._window.popleft().result()
        self._schedule()
        return data

    def iter_chunks(self, size=None):
        """The object's bytes in order, in pieces of at most size bytes when size is given (as botocore's
        StreamingBody.iter_chunks): a consumer that decompresses each piece then holds a bounded output, not
        a whole range's (an 8 MiB range of COPY text decompresses to about 30 MiB)."""
        if self._buffer:
            data, self._buffer = self._buffer, b""
            yield from _pieces(data, size)
        while chunk := self._next_chunk():
            yield from _pieces(chunk, size)

    def read(self, n=-1):
        while n < 0 or len(self._buffer) < n:
            chunk = self._next_chunk()
            if not chunk:
                break
            self._buffer += chunk
        if n < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def close(self):
        for future in self._window:
            future.cancel()
        self._pool.shutdown(wait=True)

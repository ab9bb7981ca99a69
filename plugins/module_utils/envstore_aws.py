"""The AWS stores: ``ssm`` (one SecureString parameter per variable under a prefix) and ``secretsmanager`` (one
secret holding a JSON object), over the shared AWS connection settings, with AWS errors translated once.
"""

from __future__ import annotations

import json
import re

from ansible_collections.pgdr.supabase.plugins.module_utils.envstore_common import Store
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "KMSAccessDeniedException"}
_BAD_CREDENTIALS = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "ExpiredTokenException",
}


class AwsStore(Store):
    service = "?"

    def __init__(self, settings):
        self.settings = settings
        self._client = None

    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            s = self.settings
            verify = s.get("ca_bundle") or s.get("validate_certs", True)
            self._client = boto3.session.Session().client(
                self.service,
                region_name=s.get("region") or "us-east-1",
                endpoint_url=s.get("endpoint_url") or None,
                aws_access_key_id=s.get("access_key") or None,
                aws_secret_access_key=s.get("secret_key") or None,
                aws_session_token=s.get("session_token") or None,
                verify=verify,
                config=Config(
                    connect_timeout=s.get("connect_timeout") or 5,
                    read_timeout=30,
                    retries={"mode": "standard", "max_attempts": s.get("max_attempts") or 3},
                ),
            )
        return self._client

    def where(self):
        s = self.settings
        return s.get("endpoint_url") or f"the {self.service} endpoint of region {s.get('region') or 'us-east-1'}"

    def translate(self, exc, step, names=(), action="", values=()):
        """The one place AWS library errors become DRErrors."""
        from botocore.exceptions import (
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            text = exc.response.get("Error", {}).get("Message", "") or str(exc)
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            # Some endpoints answer a JSON-protocol call with an XML error body that botocore cannot parse.
            inner = re.search(r"<Code>([^<]+)</Code>", text)
            if inner:
                code = inner.group(1)
                message = re.search(r"<Message>([^<]*)</Message>", text)
                text = message.group(1) if message else code
            if code in _DENIED or (status == 403 and code not in _BAD_CREDENTIALS):
                return self.error(
                    f"access denied ({code}): {text}",
                    step,
                    names,
                    hint=f"grant the credentials {action or 'the needed permission'} on it (and kms:Encrypt/Decrypt "
                    "on its KMS key), or use credentials that have it",
                    values=values,
                )
            if code in _BAD_CREDENTIALS:
                return self.error(
                    f"the credentials were refused ({code})",
                    step,
                    names,
                    hint="check access_key/secret_key (or the host's AWS credentials) and the region",
                    values=values,
                )
            return self.error(f"{code}: {text}", step, names, hint="see the AWS error above", values=values)
        if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)):
            return self.error(
                f"cannot reach {self.where()}: {exc}",
                step,
                names,
                hint="check endpoint_url/region and the network path (proxy, VPC endpoint), then run again",
                values=values,
            )
        if isinstance(exc, NoCredentialsError):
            return self.error(
                "no AWS credentials found",
                step,
                names,
                hint="set access_key/secret_key in the store settings or give the host an instance role",
            )
        return self.error(f"{type(exc).__name__}: {exc}", step, names, hint="see the error above", values=values)

    def call(self, step, names, action, fn, *args, values=(), **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self.translate(exc, step, names, action, values) from exc


class SsmStore(AwsStore):
    kind = service = "ssm"

    def __init__(self, settings):
        super().__init__(settings)
        prefix = settings.get("prefix")
        if not prefix or not prefix.startswith("/"):
            raise DRError(
                "an ssm store needs a path prefix starting with '/'",
                step="configure env store",
                subject=f"ssm prefix {prefix!r}",
                hint="set store.prefix, e.g. /myapp/production",
            )
        self.prefix = prefix.rstrip("/")

    def label(self):
        return f"ssm store {self.prefix}/ at {self.where()}"

    def param(self, name, base=None):
        return f"{base or self.prefix}/{name}"

    def _get(self, params, step, names):
        found = {}
        for start in range(0, len(params), 10):
            batch = params[start : start + 10]
            response = self.call(
                step,
                names,
                "ssm:GetParameters",
                self.client().get_parameters,
                Names=batch,
                WithDecryption=True,
            )
            for item in response.get("Parameters", []):
                found[item["Name"]] = item["Value"]
        return found

    def read(self, names):
        found = self._get([self.param(n) for n in names], "read env store", list(names))
        return {n: found.get(self.param(n)) for n in names}

    def _put(self, name, value, step, label_names):
        kwargs = {"Name": name, "Value": str(value), "Overwrite": True}
        if self.settings.get("secure", True):
            kwargs["Type"] = "SecureString"
            if self.settings.get("kms_key_id"):
                kwargs["KeyId"] = self.settings["kms_key_id"]
        else:
            kwargs["Type"] = "String"
        self.call(step, label_names, "ssm:PutParameter", self.client().put_parameter, values=[value], **kwargs)

    def write(self, values):
        for name, value in values.items():
            self._put(self.param(name), value, "write env store", [name])

    def _delete(self, params, step, names):
        client = self.client()
        for param, name in zip(params, names, strict=True):
            try:
                client.delete_parameter(Name=param)
            except client.exceptions.ParameterNotFound:
                continue
            except Exception as exc:
                from botocore.exceptions import BotoCoreError, ClientError

                if isinstance(exc, (BotoCoreError, ClientError)):
                    raise self.translate(exc, step, [name], "ssm:DeleteParameter") from exc
                raise

    def delete(self, names):
        self._delete([self.param(n) for n in names], "write env store", list(names))

    # Record: <prefix>/_pgdr_rollback/_record holds the metadata (JSON), <prefix>/_pgdr_rollback/<NAME> each
    # previous value (SecureString); a name that was absent before has no parameter.
    def default_record_location(self):
        return f"{self.prefix}/_pgdr_rollback"

    def load_record(self, location):
        meta = self._get([f"{location}/_record"], "read rollback record", [])
        if not meta:
            return None
        record = json.loads(meta[f"{location}/_record"])
        names = [n for n in record.get("names", []) if n not in record.get("absent_before", [])]
        found = self._get([self.param(n, location) for n in names], "read rollback record", names)
        record["previous"] = {n: found.get(self.param(n, location)) for n in record.get("names", [])}
        return record

    def save_record(self, location, record):
        record = dict(record)
        previous = record.pop("previous")
        for name, value in previous.items():
            if value is not None:
                self._put(self.param(name, location), value, "write rollback record", [name])
        gone = [n for n, v in previous.items() if v is None]
        self._delete([self.param(n, location) for n in gone], "write rollback record", gone)
        record["absent_before"] = gone
        self._put(f"{location}/_record", json.dumps(record, sort_keys=True), "write rollback record", [])


class SecretsManagerStore(AwsStore):
    kind = service = "secretsmanager"

    def __init__(self, settings):
        super().__init__(settings)
        if not settings.get("secret_id"):
            raise DRError(
                "a secretsmanager store needs secret_id",
                step="configure env store",
                hint="set store.secret_id to the name or ARN of the secret holding the JSON object of variables",
            )
        self.secret_id = settings["secret_id"]

    def label(self):
        return f"secretsmanager store {self.secret_id} at {self.where()}"

    def _load(self, secret_id, step, names):
        return self.load_versioned(secret_id, step, names)[0]

    def load_versioned(self, secret_id, step, names):
        """(the secret's JSON object, its VersionId); (None, None) when the secret does not exist."""
        client = self.client()
        try:
            response = client.get_secret_value(SecretId=secret_id)
        except client.exceptions.ResourceNotFoundException:
            return None, None
        except Exception as exc:
            from botocore.exceptions import BotoCoreError, ClientError

            if isinstance(exc, (BotoCoreError, ClientError)):
                raise self.translate(exc, step, names, "secretsmanager:GetSecretValue") from exc
            raise
        try:
            data = json.loads(response.get("SecretString") or "")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise self.error(
                f"secret {secret_id} does not hold a JSON object",
                step,
                names,
                hint='store the variables as one JSON object {"NAME": "value", ...} or use another secret',
            )
        return data, response.get("VersionId")

    def read(self, names):
        data = self._load(self.secret_id, "read env store", list(names)) or {}
        return {n: (None if data.get(n) is None else str(data[n])) for n in names}

    def _store(self, secret_id, data, step, names, values=()):
        exists = self._load(secret_id, step, names) is not None
        text = json.dumps(data)
        if exists:
            self.call(
                step,
                names,
                "secretsmanager:PutSecretValue",
                self.client().put_secret_value,
                SecretId=secret_id,
                SecretString=text,
                values=values,
            )
            return
        kwargs = {"Name": secret_id, "SecretString": text}
        if self.settings.get("kms_key_id"):
            kwargs["KmsKeyId"] = self.settings["kms_key_id"]
        self.call(step, names, "secretsmanager:CreateSecret", self.client().create_secret, values=values, **kwargs)

    def write(self, values):
        data = self._load(self.secret_id, "write env store", list(values)) or {}
        data.update({k: str(v) for k, v in values.items()})
        self._store(self.secret_id, data, "write env store", list(values), values.values())

    def delete(self, names):
        data = self._load(self.secret_id, "write env store", list(names))
        if data is None:
            return
        for name in names:
            data.pop(name, None)
        self._store(self.secret_id, data, "write env store", list(names))

    # Record: a separate secret <name>-pgdr-rollback holding the record as JSON (previous values included).
    def default_record_location(self):
        name = self.secret_id
        if name.startswith("arn:"):
            # arn:aws:secretsmanager:region:account:secret:NAME-AbCdEf (AWS appends 6 random characters).
            name = re.sub(r"-[A-Za-z0-9]{6}$", "", name.split(":secret:", 1)[-1])
        return f"{name}-pgdr-rollback"

    def load_record(self, location):
        return self._load(location, "read rollback record", [])

    def save_record(self, location, record):
        self._store(location, record, "write rollback record", [], [v for v in record["previous"].values() if v])

"""Helpers for S3 tests: boto3 clients, and a tiny independent SigV4 signer
for requests boto3 will not make (skewed clocks, garbage)."""
import datetime
import hashlib
import hmac
import socket
import urllib.parse

import boto3
from botocore.config import Config

from conftest import ACCESS_KEY, SECRET_KEY


def client(url, access=ACCESS_KEY, secret=SECRET_KEY, **cfg):
    return boto3.client("s3", endpoint_url=url, aws_access_key_id=access,
                        aws_secret_access_key=secret, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                                      retries={"max_attempts": 1}, **cfg))


def sign(method, host, path, query="", headers=None, body=b"", when=None,
         access=ACCESS_KEY, secret=SECRET_KEY):
    """Return headers for a SigV4-signed request (written from the AWS docs)."""
    when = when or datetime.datetime.now(datetime.timezone.utc)
    amz = when.strftime("%Y%m%dT%H%M%SZ")
    day = amz[:8]
    h = {"host": host, "x-amz-date": amz,
         "x-amz-content-sha256": hashlib.sha256(body).hexdigest()}
    h.update({k.lower(): v for k, v in (headers or {}).items()})
    names = sorted(h)
    canon_q = "&".join(sorted(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True)))
    creq = "\n".join([method, urllib.parse.quote(path, safe="/-_.~"), canon_q,
                      "".join(f"{n}:{h[n].strip()}\n" for n in names), ";".join(names),
                      h["x-amz-content-sha256"]])
    scope = f"{day}/us-east-1/s3/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(creq.encode()).hexdigest()])
    k = f"AWS4{secret}".encode()
    for part in (day, "us-east-1", "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    h["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access}/{scope}, "
                          f"SignedHeaders={';'.join(names)}, Signature={sig}")
    return h


def raw(port, data, timeout=10, read=True):
    """Send raw bytes; return the response (headers and body) once complete
    (Content-Length), or whatever arrived before close or timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if not read:
            return b""
        out = b""
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                out += b
                head, sep, body = out.partition(b"\r\n\r\n")
                if sep:
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            if len(body) >= int(value.strip()):
                                return out
        except socket.timeout:
            pass
        return out

"""The S3 head with boto3, driven against a real plenum server."""
import datetime
import hashlib
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request

import botocore
import pytest

from conftest import Plenum
from s3util import client, raw, sign


@pytest.fixture(scope="module")
def s3(s3server):
    return client(s3server.s3_url)


def code(exc_info):
    return exc_info.value.response["Error"]["Code"]


def status(exc_info):
    return exc_info.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_buckets(s3):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.create_bucket(Bucket="Bad_Name")
    assert code(e) == "InvalidBucketName"
    s3.create_bucket(Bucket="bkt-one")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.create_bucket(Bucket="bkt-one")
    assert code(e) == "BucketAlreadyOwnedByYou" and status(e) == 409
    assert "bkt-one" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket="bkt-one")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_bucket(Bucket="no-such-bucket")
    assert status(e) == 404
    assert s3.get_bucket_location(Bucket="bkt-one").get("LocationConstraint") in (None, "")
    assert "Status" not in s3.get_bucket_versioning(Bucket="bkt-one")
    s3.put_object(Bucket="bkt-one", Key="x", Body=b"x")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.delete_bucket(Bucket="bkt-one")
    assert code(e) == "BucketNotEmpty"
    s3.delete_object(Bucket="bkt-one", Key="x")
    s3.delete_bucket(Bucket="bkt-one")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.list_objects_v2(Bucket="bkt-one")
    assert code(e) == "NoSuchBucket"


def test_objects_metadata_ranges_conditionals(s3):
    s3.create_bucket(Bucket="objs")
    body = os.urandom(100_000)
    r = s3.put_object(Bucket="objs", Key="dir/obj.bin", Body=body, ContentType="application/x-test",
                      Metadata={"color": "blue"}, CacheControl="max-age=60",
                      ContentDisposition="attachment")
    etag = r["ETag"]
    assert etag == '"%s"' % hashlib.md5(body).hexdigest()
    g = s3.get_object(Bucket="objs", Key="dir/obj.bin")
    assert g["Body"].read() == body
    assert g["ContentType"] == "application/x-test"
    assert g["Metadata"] == {"color": "blue"}
    assert g["CacheControl"] == "max-age=60" and g["ContentDisposition"] == "attachment"
    h = s3.head_object(Bucket="objs", Key="dir/obj.bin")
    assert h["ContentLength"] == len(body) and h["ETag"] == etag
    # ranges
    assert s3.get_object(Bucket="objs", Key="dir/obj.bin", Range="bytes=10-19")["Body"].read() == body[10:20]
    assert s3.get_object(Bucket="objs", Key="dir/obj.bin", Range="bytes=-100")["Body"].read() == body[-100:]
    g = s3.get_object(Bucket="objs", Key="dir/obj.bin", Range="bytes=99990-")
    assert g["Body"].read() == body[99990:] and g["ContentRange"] == "bytes 99990-99999/100000"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="objs", Key="dir/obj.bin", Range="bytes=100000-")
    assert code(e) == "InvalidRange" and status(e) == 416
    # conditionals
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="objs", Key="dir/obj.bin", IfMatch='"0000"')
    assert status(e) == 412
    assert s3.get_object(Bucket="objs", Key="dir/obj.bin", IfMatch=etag)["Body"].read() == body
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="objs", Key="dir/obj.bin", IfNoneMatch=etag)
    assert status(e) == 304
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    earlier = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="objs", Key="dir/obj.bin", IfModifiedSince=later)
    assert status(e) == 304
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="objs", Key="dir/obj.bin", IfUnmodifiedSince=earlier)
    assert status(e) == 412
    g = s3.get_object(Bucket="objs", Key="dir/obj.bin", ResponseContentType="text/plain",
                      ResponseContentDisposition="inline")
    assert g["ContentType"] == "text/plain" and g["ContentDisposition"] == "inline"
    # missing things
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="objs", Key="nope")
    assert code(e) == "NoSuchKey"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="nobucket", Key="nope")
    assert code(e) == "NoSuchBucket"
    # a key that would turn an object into a directory
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket="objs", Key="dir/obj.bin/child", Body=b"x")
    assert status(e) == 409
    # Content-MD5 checked
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket="objs", Key="md5", Body=b"abc", ContentMD5="AAAAAAAAAAAAAAAAAAAAAA==")
    assert code(e) == "BadDigest"
    with pytest.raises(botocore.exceptions.ClientError):
        s3.head_object(Bucket="objs", Key="md5")
    # a "folder" marker, and a prefix that is not one
    s3.put_object(Bucket="objs", Key="folder/", Body=b"")
    h = s3.head_object(Bucket="objs", Key="folder/")
    assert h["ContentLength"] == 0 and h["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_object(Bucket="objs", Key="dir/")  # only implied by dir/obj.bin
    assert status(e) == 404
    keys = [c["Key"] for c in s3.list_objects_v2(Bucket="objs", Prefix="folder")["Contents"]]
    assert keys == ["folder/"]
    # empty object, delete semantics
    s3.put_object(Bucket="objs", Key="empty", Body=b"")
    assert s3.get_object(Bucket="objs", Key="empty")["Body"].read() == b""
    assert s3.delete_object(Bucket="objs", Key="never-existed")["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_checksums(s3):
    s3.create_bucket(Bucket="cks")
    for alg in ("CRC32", "CRC32C", "SHA1", "SHA256"):
        try:
            r = s3.put_object(Bucket="cks", Key=alg, Body=b"checksum me" * 1000,
                              ChecksumAlgorithm=alg)
        except botocore.exceptions.ParamValidationError:
            pytest.skip("this botocore has no flexible checksums")
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert s3.get_object(Bucket="cks", Key=alg)["Body"].read() == b"checksum me" * 1000


def test_copy(s3):
    s3.create_bucket(Bucket="copy-src")
    s3.create_bucket(Bucket="copy-dst")
    s3.put_object(Bucket="copy-src", Key="a", Body=b"payload", ContentType="text/x-a",
                  Metadata={"k": "v"})
    r = s3.copy_object(Bucket="copy-dst", Key="b", CopySource={"Bucket": "copy-src", "Key": "a"})
    assert r["CopyObjectResult"]["ETag"] == '"%s"' % hashlib.md5(b"payload").hexdigest()
    h = s3.head_object(Bucket="copy-dst", Key="b")
    assert h["Metadata"] == {"k": "v"} and h["ContentType"] == "text/x-a"
    s3.copy_object(Bucket="copy-src", Key="a", CopySource="copy-src/a", MetadataDirective="REPLACE",
                   Metadata={"new": "1"}, ContentType="text/x-b")
    h = s3.head_object(Bucket="copy-src", Key="a")
    assert h["Metadata"] == {"new": "1"} and h["ContentType"] == "text/x-b"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.copy_object(Bucket="copy-src", Key="a", CopySource="copy-src/a")
    assert code(e) == "InvalidRequest"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.copy_object(Bucket="copy-dst", Key="c", CopySource="copy-src/a",
                       CopySourceIfMatch='"bad"')
    assert status(e) == 412


def test_listing(s3):
    s3.create_bucket(Bucket="listing")
    keys = ["a-c", "a/b", "a/c/d", "a/c/e", "a0", "b", "sp ace", "uni\u00e9"]
    for k in keys:
        s3.put_object(Bucket="listing", Key=k, Body=k.encode())
    r = s3.list_objects_v2(Bucket="listing")
    assert [c["Key"] for c in r["Contents"]] == sorted(keys, key=lambda k: k.encode())
    r = s3.list_objects_v2(Bucket="listing", Delimiter="/", Prefix="a")
    assert [c["Key"] for c in r["Contents"]] == ["a-c", "a0"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/"]
    # pagination with continuation tokens
    seen, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        r = s3.list_objects_v2(Bucket="listing", MaxKeys=3, **kw)
        seen += [c["Key"] for c in r.get("Contents", [])]
        if not r["IsTruncated"]:
            break
        token = r["NextContinuationToken"]
    assert seen == sorted(keys, key=lambda k: k.encode())
    r = s3.list_objects_v2(Bucket="listing", StartAfter="a/c/d")
    assert r["Contents"][0]["Key"] == "a/c/e"
    r = s3.list_objects_v2(Bucket="listing", EncodingType="url", Prefix="sp")
    # asked for explicitly, botocore leaves the keys encoded
    assert [urllib.parse.unquote_plus(c["Key"]) for c in r["Contents"]] == ["sp ace"]
    assert r["Contents"][0]["Key"] != "sp ace"
    r = s3.list_objects(Bucket="listing", Marker="a0", MaxKeys=2)
    assert [c["Key"] for c in r["Contents"]] == ["b", "sp ace"] and r["IsTruncated"]
    r = s3.list_objects_v2(Bucket="listing", Delimiter="c", Prefix="a/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/c"]
    v = s3.list_object_versions(Bucket="listing", Prefix="b")
    assert [(x["Key"], x["VersionId"]) for x in v["Versions"]] == [("b", "null")]


def test_delete_objects(s3):
    s3.create_bucket(Bucket="bulk")
    for i in range(10):
        s3.put_object(Bucket="bulk", Key=f"k{i}", Body=b"x")
    r = s3.delete_objects(Bucket="bulk", Delete={"Objects": [{"Key": f"k{i}"} for i in range(5)]})
    assert sorted(d["Key"] for d in r["Deleted"]) == [f"k{i}" for i in range(5)]
    r = s3.delete_objects(Bucket="bulk", Delete={"Objects": [{"Key": f"k{i}"} for i in range(5, 10)],
                                                 "Quiet": True})
    assert "Deleted" not in r and "Errors" not in r
    assert s3.list_objects_v2(Bucket="bulk")["KeyCount"] == 0


def test_multipart(s3):
    s3.create_bucket(Bucket="mpu")
    part = [os.urandom(5 * 1024 * 1024), os.urandom(5 * 1024 * 1024), b"tail"]
    up = s3.create_multipart_upload(Bucket="mpu", Key="big", ContentType="video/x-test")
    uid = up["UploadId"]
    etags = [s3.upload_part(Bucket="mpu", Key="big", UploadId=uid, PartNumber=i + 1,
                            Body=p)["ETag"] for i, p in enumerate(part)]
    assert [p["PartNumber"] for p in s3.list_parts(Bucket="mpu", Key="big", UploadId=uid)["Parts"]] == [1, 2, 3]
    assert uid in [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="mpu")["Uploads"]]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.complete_multipart_upload(Bucket="mpu", Key="big", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 2, "ETag": etags[1]}, {"PartNumber": 1, "ETag": etags[0]}]})
    assert code(e) == "InvalidPartOrder"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.complete_multipart_upload(Bucket="mpu", Key="big", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": '"00000000000000000000000000000000"'}]})
    assert code(e) == "InvalidPart"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.complete_multipart_upload(Bucket="mpu", Key="big", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 3, "ETag": etags[2]}, {"PartNumber": 4, "ETag": etags[2]}]})
    assert code(e) in ("InvalidPart", "EntityTooSmall")
    r = s3.complete_multipart_upload(Bucket="mpu", Key="big", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": i + 1, "ETag": t} for i, t in enumerate(etags)]})
    want = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in part)).hexdigest() + "-3"
    assert r["ETag"] == f'"{want}"'
    g = s3.get_object(Bucket="mpu", Key="big")
    assert g["Body"].read() == b"".join(part) and g["ContentType"] == "video/x-test"
    # each part as it was uploaded
    for i, p in enumerate(part):
        g = s3.get_object(Bucket="mpu", Key="big", PartNumber=i + 1)
        assert g["Body"].read() == p and g["PartsCount"] == 3
        assert g["ResponseMetadata"]["HTTPStatusCode"] == 206
    h = s3.head_object(Bucket="mpu", Key="big", PartNumber=3)
    assert h["ContentLength"] == 4 and h["PartsCount"] == 3
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="mpu", Key="big", PartNumber=4)
    assert code(e) == "InvalidPartNumber" and status(e) == 416
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="mpu", Key="big", PartNumber=1, Range="bytes=0-1")
    assert code(e) == "InvalidRequest"
    s3.put_object(Bucket="mpu", Key="plain", Body=b"plain body")
    assert s3.get_object(Bucket="mpu", Key="plain", PartNumber=1)["Body"].read() == b"plain body"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.list_parts(Bucket="mpu", Key="big", UploadId=uid)
    assert code(e) == "NoSuchUpload"
    # abort, small parts, copy parts
    uid = s3.create_multipart_upload(Bucket="mpu", Key="gone")["UploadId"]
    s3.upload_part(Bucket="mpu", Key="gone", UploadId=uid, PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket="mpu", Key="gone", UploadId=uid)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.upload_part(Bucket="mpu", Key="gone", UploadId=uid, PartNumber=2, Body=b"x")
    assert code(e) == "NoSuchUpload"
    uid = s3.create_multipart_upload(Bucket="mpu", Key="small")["UploadId"]
    t1 = s3.upload_part(Bucket="mpu", Key="small", UploadId=uid, PartNumber=1, Body=b"1")["ETag"]
    t2 = s3.upload_part(Bucket="mpu", Key="small", UploadId=uid, PartNumber=2, Body=b"2")["ETag"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.complete_multipart_upload(Bucket="mpu", Key="small", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": t1}, {"PartNumber": 2, "ETag": t2}]})
    assert code(e) == "EntityTooSmall"
    uid = s3.create_multipart_upload(Bucket="mpu", Key="copied")["UploadId"]
    c1 = s3.upload_part_copy(Bucket="mpu", Key="copied", UploadId=uid, PartNumber=1,
                             CopySource="mpu/big", CopySourceRange=f"bytes=0-{5 * 1024 * 1024 - 1}")
    c2 = s3.upload_part_copy(Bucket="mpu", Key="copied", UploadId=uid, PartNumber=2,
                             CopySource="mpu/big", CopySourceRange="bytes=10485760-10485763")
    s3.complete_multipart_upload(Bucket="mpu", Key="copied", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": c1["CopyPartResult"]["ETag"]},
                  {"PartNumber": 2, "ETag": c2["CopyPartResult"]["ETag"]}]})
    assert s3.get_object(Bucket="mpu", Key="copied")["Body"].read() == part[0] + b"tail"


def test_auth_errors(s3server, s3):
    s3.create_bucket(Bucket="auth")
    s3.put_object(Bucket="auth", Key="k", Body=b"secret data")
    bad = client(s3server.s3_url, secret="wrong-secret-wrong-secret")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        bad.get_object(Bucket="auth", Key="k")
    assert code(e) == "SignatureDoesNotMatch" and status(e) == 403
    # AWS shows what it signed, so a client author can see why
    assert "CanonicalRequest" in e.value.response["Error"]
    assert "StringToSign" in e.value.response["Error"]
    unknown = client(s3server.s3_url, access="NOSUCHKEY0000000000")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        unknown.get_object(Bucket="auth", Key="k")
    assert code(e) == "InvalidAccessKeyId"
    # anonymous
    with pytest.raises(urllib.error.HTTPError) as he:
        urllib.request.urlopen(s3server.s3_url + "/auth/k", timeout=10)
    assert he.value.code == 403 and b"AccessDenied" in he.value.read()
    # presigned: works, then expires
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "auth", "Key": "k"},
                                    ExpiresIn=60)
    assert urllib.request.urlopen(url, timeout=10).read() == b"secret data"
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "auth", "Key": "k"},
                                    ExpiresIn=1)
    time.sleep(2.1)
    with pytest.raises(urllib.error.HTTPError) as he:
        urllib.request.urlopen(url, timeout=10)
    assert he.value.code == 403 and b"expired" in he.value.read()
    # clock skew: a correctly signed request from 20 minutes ago
    host = f"127.0.0.1:{s3server.s3_port}"
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
    h = sign("GET", host, "/auth/k", when=old)
    req = "GET /auth/k HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    out = raw(s3server.s3_port, req.encode())
    assert b" 403 " in out.split(b"\r\n")[0] and b"RequestTimeTooSkewed" in out
    # and the same signer, on time, works (our test signer agrees with the server)
    h = sign("GET", host, "/auth/k")
    req = "GET /auth/k HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    out = raw(s3server.s3_port, req.encode())
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"secret data")


def test_tagging(s3):
    s3.create_bucket(Bucket="tags")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_bucket_tagging(Bucket="tags")
    assert code(e) == "NoSuchTagSet"
    s3.put_bucket_tagging(Bucket="tags", Tagging={"TagSet": [{"Key": "team", "Value": "ml"}]})
    assert s3.get_bucket_tagging(Bucket="tags")["TagSet"] == [{"Key": "team", "Value": "ml"}]
    s3.delete_bucket_tagging(Bucket="tags")
    with pytest.raises(botocore.exceptions.ClientError):
        s3.get_bucket_tagging(Bucket="tags")
    s3.put_object(Bucket="tags", Key="o", Body=b"x", Tagging="a=1&b=two%20words")
    tags = s3.get_object_tagging(Bucket="tags", Key="o")["TagSet"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("a", "1"), ("b", "two words")]
    assert s3.get_object(Bucket="tags", Key="o")["TagCount"] == 2
    s3.put_object_tagging(Bucket="tags", Key="o", Tagging={"TagSet": [{"Key": "k&", "Value": "<v>"}]})
    assert s3.get_object_tagging(Bucket="tags", Key="o")["TagSet"] == [{"Key": "k&", "Value": "<v>"}]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object_tagging(Bucket="tags", Key="o", Tagging={"TagSet": [
            {"Key": "dup", "Value": "1"}, {"Key": "dup", "Value": "2"}]})
    assert status(e) == 400
    s3.delete_object_tagging(Bucket="tags", Key="o")
    assert s3.get_object_tagging(Bucket="tags", Key="o")["TagSet"] == []
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object_tagging(Bucket="tags", Key="missing")
    assert code(e) == "NoSuchKey"


def test_metrics_per_operation(s3server, s3):
    s3.list_buckets()
    with urllib.request.urlopen(s3server.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    assert 'plenum_requests_total{head="s3",op="ListBuckets"}' in text
    assert 'plenum_request_seconds_bucket{head="s3",op="PutObject",le="+Inf"}' in text


def test_near_copies_read_through_the_hot_chunk_cache(s3server, s3):
    """A near-copy is stored as deltas against the original's chunks; its
    readers find the decoded originals in memory after the first read."""
    s3.create_bucket(Bucket="near")
    orig = bytearray(os.urandom(4 << 20))
    s3.put_object(Bucket="near", Key="orig", Body=bytes(orig))
    copies = []
    for i in range(4):
        c = bytearray(orig)
        for k in range(16):  # a byte changed in every 256 KiB
            c[k * (256 << 10) + 1000 * i + 7] ^= 0xA5
        copies.append(bytes(c))
        s3.put_object(Bucket="near", Key=f"copy{i}", Body=copies[-1])
    pl = Plenum(s3server.data)
    pl.ok("flush")
    assert pl.json("stats")["delta_chunks"] >= 16

    def lookups():
        with urllib.request.urlopen(s3server.url + "/metrics", timeout=10) as r:
            text = r.read().decode()
        return {o: int(re.search(r'plenum_hot_chunk_lookups_total\{outcome="%s"\} (\d+)' % o,
                                 text).group(1)) for o in ("found", "read")}
    before = lookups()
    for i in range(4):
        assert s3.get_object(Bucket="near", Key=f"copy{i}")["Body"].read() == copies[i]
    mid = lookups()
    for i in range(4):
        assert s3.get_object(Bucket="near", Key=f"copy{i}")["Body"].read() == copies[i]
    after = lookups()
    # every reference the second round needed was already decoded
    assert after["read"] == mid["read"]
    assert after["found"] - mid["found"] >= 16
    assert mid["read"] + mid["found"] > before["read"] + before["found"]
    assert pl.json("stats")["hot_chunks"]["bytes"] > 0


def test_same_bytes_everywhere(s3server, s3):
    s3.create_bucket(Bucket="same")
    body = os.urandom(3 * 1024 * 1024)
    etag = s3.put_object(Bucket="same", Key="x/y.bin", Body=body)["ETag"].strip('"')
    pl = Plenum(s3server.data)
    assert pl.ok("cat", "pl://same/x/y.bin").stdout == body
    assert pl.json("stat", "pl://same/x/y.bin")["etag"] == etag
    before = pl.json("stats")["unique_bytes"]
    pl.ok("cp", "-", "pl://same/copy-from-cli", input=body)  # deduplicated against the S3 write
    # deduplicated: nothing new but the events of the two writes on $events.same
    assert pl.json("stats")["unique_bytes"] - before < 64 * 1024
    assert s3.get_object(Bucket="same", Key="copy-from-cli")["Body"].read() == body


def test_virtual_host_style(tmp_path):
    from conftest import Server
    from s3util import raw, sign
    srv = Server(tmp_path / "data", s3=True, extra=("--s3-domain", "s3.test"))
    try:
        s3c = client(srv.s3_url)
        s3c.create_bucket(Bucket="vhost")
        s3c.put_object(Bucket="vhost", Key="dir/k", Body=b"virtual")
        host = f"vhost.s3.test:{srv.s3_port}"
        h = sign("GET", host, "/dir/k")
        out = raw(srv.s3_port, ("GET /dir/k HTTP/1.1\r\n" +
                                "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n").encode())
        assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"virtual")
        h = sign("GET", host, "/", query="list-type=2")
        out = raw(srv.s3_port, ("GET /?list-type=2 HTTP/1.1\r\n" +
                                "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n").encode())
        assert b"<Key>dir/k</Key>" in out
    finally:
        assert srv.stop() == 0


def test_get_survives_replacement(s3server, s3):
    """A GET that started before the key was replaced sends the old bytes to
    the end (the element is pinned), and the old bytes are freed afterwards."""
    s3.create_bucket(Bucket="replace")
    old = os.urandom(24 * 1024 * 1024)
    s3.put_object(Bucket="replace", Key="k", Body=old)
    body = s3.get_object(Bucket="replace", Key="k")["Body"]
    first = body.read(1024 * 1024)  # the GET is in flight
    new = os.urandom(1024)
    s3.put_object(Bucket="replace", Key="k", Body=new)
    s3.delete_object(Bucket="replace", Key="k")
    s3.put_object(Bucket="replace", Key="k", Body=new)
    rest = body.read()
    assert first + rest == old
    assert s3.get_object(Bucket="replace", Key="k")["Body"].read() == new
    pl = Plenum(s3server.data)
    assert pl.run("fsck").returncode == 0


def test_versioning(s3):
    s3.create_bucket(Bucket="vers")
    s3.put_object(Bucket="vers", Key="k", Body=b"before")  # the "null" version
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_bucket_versioning(Bucket="vers", VersioningConfiguration={"Status": "Bogus"})
    assert code(e) == "MalformedXML"
    s3.put_bucket_versioning(Bucket="vers", VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket="vers")["Status"] == "Enabled"
    v1 = s3.put_object(Bucket="vers", Key="k", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket="vers", Key="k", Body=b"two")["VersionId"]
    assert v1 != v2 and "null" not in (v1, v2)
    assert s3.get_object(Bucket="vers", Key="k")["Body"].read() == b"two"
    g = s3.get_object(Bucket="vers", Key="k", VersionId=v1)
    assert g["Body"].read() == b"one" and g["VersionId"] == v1
    assert s3.get_object(Bucket="vers", Key="k", VersionId="null")["Body"].read() == b"before"
    assert s3.head_object(Bucket="vers", Key="k", VersionId=v2)["ContentLength"] == 3
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="vers", Key="k", VersionId="00000000000fffff")
    assert code(e) == "NoSuchVersion" and status(e) == 404
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="vers", Key="k", VersionId="not-a-version")
    assert code(e) == "InvalidArgument"

    # a plain delete leaves a marker: the key is gone, its versions stay
    d = s3.delete_object(Bucket="vers", Key="k")
    assert d["DeleteMarker"] is True
    marker = d["VersionId"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="vers", Key="k")
    assert code(e) == "NoSuchKey"
    assert e.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == "true"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_object(Bucket="vers", Key="k", VersionId=marker)
    assert status(e) == 405
    assert "Contents" not in s3.list_objects_v2(Bucket="vers")
    lv = s3.list_object_versions(Bucket="vers")
    assert [(x["VersionId"], x["IsLatest"]) for x in lv["Versions"]] == \
        [(v2, False), (v1, False), ("null", False)]
    assert [(x["Key"], x["VersionId"], x["IsLatest"]) for x in lv["DeleteMarkers"]] == \
        [("k", marker, True)]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.delete_bucket(Bucket="vers")
    assert code(e) == "BucketNotEmpty"

    # removing the marker brings v2 back; deleting v2 by id brings v1 back
    d = s3.delete_object(Bucket="vers", Key="k", VersionId=marker)
    assert d["DeleteMarker"] is True and d["VersionId"] == marker
    assert s3.get_object(Bucket="vers", Key="k")["Body"].read() == b"two"
    s3.delete_object(Bucket="vers", Key="k", VersionId=v2)
    assert s3.get_object(Bucket="vers", Key="k")["Body"].read() == b"one"

    # copy from an old version; multipart completion gets a version too
    c = s3.copy_object(Bucket="vers", Key="copy", CopySource={"Bucket": "vers", "Key": "k",
                                                               "VersionId": "null"})
    assert c["CopySourceVersionId"] == "null" and c["VersionId"]
    assert s3.get_object(Bucket="vers", Key="copy")["Body"].read() == b"before"
    up = s3.create_multipart_upload(Bucket="vers", Key="mp")["UploadId"]
    p = s3.upload_part(Bucket="vers", Key="mp", UploadId=up, PartNumber=1, Body=b"m" * 100)
    done = s3.complete_multipart_upload(Bucket="vers", Key="mp", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": p["ETag"]}]})
    assert done["VersionId"]

    # DeleteObjects with and without version ids
    r = s3.delete_objects(Bucket="vers", Delete={"Objects": [
        {"Key": "copy"}, {"Key": "k", "VersionId": v1}]})
    got = {(x["Key"], x.get("VersionId"), x.get("DeleteMarker", False)) for x in r["Deleted"]}
    assert ("k", v1, False) in got
    assert any(k == "copy" and dm for k, _, dm in got)
    assert s3.get_object(Bucket="vers", Key="k")["Body"].read() == b"before"

    # paging through versions one at a time visits each exactly once
    for i in range(3):
        s3.put_object(Bucket="vers", Key="page", Body=b"%d" % i)
    seen, km, vm = [], None, None
    while True:
        kw = {"Bucket": "vers", "MaxKeys": 1}
        if km:
            kw.update(KeyMarker=km, VersionIdMarker=vm or "")
        page = s3.list_object_versions(**kw)
        seen += [(x["Key"], x["VersionId"]) for x in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        if not page["IsTruncated"]:
            break
        km, vm = page["NextKeyMarker"], page.get("NextVersionIdMarker")
    everything = s3.list_object_versions(Bucket="vers")
    want = [(x["Key"], x["VersionId"]) for x in everything.get("Versions", []) + everything.get("DeleteMarkers", [])]
    assert sorted(seen) == sorted(want) and len(seen) == len(set(seen))

    # suspended: new writes are the null version, replacing the old null one
    s3.put_bucket_versioning(Bucket="vers", VersioningConfiguration={"Status": "Suspended"})
    assert s3.get_bucket_versioning(Bucket="vers")["Status"] == "Suspended"
    s3.put_object(Bucket="vers", Key="k", Body=b"suspended")
    vs = [x for x in s3.list_object_versions(Bucket="vers", Prefix="k")["Versions"]]
    assert [x["VersionId"] for x in vs] == ["null"]  # "one" was v1, deleted; "before" replaced
    assert s3.get_object(Bucket="vers", Key="k", VersionId="null")["Body"].read() == b"suspended"

    # emptying every version lets the bucket go
    everything = s3.list_object_versions(Bucket="vers")
    objs = [{"Key": x["Key"], "VersionId": x["VersionId"]}
            for x in everything.get("Versions", []) + everything.get("DeleteMarkers", [])]
    s3.delete_objects(Bucket="vers", Delete={"Objects": objs, "Quiet": True})
    s3.delete_bucket(Bucket="vers")

"""Element events: every change from every head (S3 with boto3, NFS with
libnfs's nfs-cp, the FUSE mount) arrives once on $events.BUCKET, read with
kcat; S3 bucket notifications (boto3) deliver matching events to a named
topic; kill -9 neither loses an acknowledged change's event nor duplicates
one."""
import functools
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from conftest import ACCESS_KEY, SECRET_KEY, Mount, Plenum, Server, free_port, run

pytestmark = pytest.mark.skipif(shutil.which("kcat") is None,
                                reason="kcat is installed by scripts/deps.sh")

C, R, P = "s3:ObjectCreated:", "s3:ObjectRemoved:", "s3:Object"


def s3client(srv):
    import boto3
    from botocore.config import Config
    return boto3.client("s3", endpoint_url=srv.s3_url, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                        config=Config(retries={"max_attempts": 1}))


def start(data, extra=()):
    kport = free_port()
    srv = Server(data, s3=True, extra=["--kafka", f"127.0.0.1:{kport}", *extra])
    srv.bootstrap = f"127.0.0.1:{kport}"
    return srv


def read_topic(srv, topic):
    """Every record of the topic's partition 0: (key, event) in offset order."""
    p = subprocess.run(["kcat", "-b", srv.bootstrap, "-C", "-t", topic, "-p", "0", "-o",
                        "beginning", "-e", "-q", "-f", "%k\t%s\n"],
                       capture_output=True, timeout=60)
    if p.returncode:
        return []
    out = []
    for line in p.stdout.decode().splitlines():
        key, _, val = line.partition("\t")
        out.append((key, json.loads(val)))
    return out


def wait_events(srv, topic, n, timeout=30):
    deadline = time.time() + timeout
    while True:
        ev = read_topic(srv, topic)
        if len(ev) >= n or time.time() > deadline:
            return ev
        time.sleep(0.3)


def by_key(events):
    keys = {}
    for k, e in events:
        assert k == e["subject"] == e["data"]["key"]
        keys.setdefault(k, []).append(e["type"])
    return keys


@pytest.fixture
def launch(launch_with):
    """start(), and every server it started is gone after the test, pass or fail."""
    return functools.partial(launch_with, start)


@pytest.mark.skipif(not os.path.exists("/dev/fuse") or shutil.which("nfs-cp") is None,
                    reason="needs /dev/fuse and libnfs-utils (scripts/deps.sh)")
def test_every_change_from_every_head_is_one_event(tmp_path, launch):
    data = tmp_path / "data"
    Plenum(data).ok("mb", "pl://bkt")
    port, mport = free_port(), free_port()
    srv = launch(data, ["--nfs", f"127.0.0.1:{port}", "--mountd", f"127.0.0.1:{mport}"])
    s3 = s3client(srv)
    s3.put_object(Bucket="bkt", Key="a.txt", Body=b"hello")
    u = s3.create_multipart_upload(Bucket="bkt", Key="big.bin")["UploadId"]
    parts = [s3.upload_part(Bucket="bkt", Key="big.bin", UploadId=u, PartNumber=i + 1,
                            Body=bytes([i]) * (5 << 20 if i == 0 else 1000))["ETag"]
             for i in range(2)]
    s3.complete_multipart_upload(
        Bucket="bkt", Key="big.bin", UploadId=u,
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(parts)]})
    s3.copy_object(Bucket="bkt", Key="c.txt", CopySource={"Bucket": "bkt", "Key": "a.txt"})
    src = tmp_path / "n.bin"
    src.write_bytes(os.urandom(3 << 20))
    run("nfs-cp", str(src),
        f"nfs://127.0.0.1/bkt/n.bin?nfsport={port}&mountport={mport}&version=3")
    # the NFS write is one event, whether a COMMIT or idleness ends it
    assert len(wait_events(srv, "$events.bkt", 5)) == 5
    m = Mount(data, "bkt", tmp_path / "mnt")
    try:
        mp = m.mp
        os.rename(f"{mp}/c.txt", f"{mp}/d.txt")
        os.chmod(f"{mp}/d.txt", 0o600)
        with open(f"{mp}/f.txt", "wb") as f:
            for _ in range(8):
                f.write(os.urandom(300_000))
        os.mkdir(f"{mp}/sub")
        os.unlink(f"{mp}/n.bin")
    finally:
        assert m.stop() == 0
    s3.delete_object(Bucket="bkt", Key="a.txt")
    want = {
        "a.txt": [C + "Put", R + "Delete"],
        "big.bin": [C + "CompleteMultipartUpload"],
        "c.txt": [C + "Copy"],
        "n.bin": [C + "Create", C + "Write", R + "Delete"],
        "d.txt": [P + "Renamed", P + "Metadata:Update"],
        "f.txt": [C + "Create", C + "Write"],
        "sub/": [C + "Create"],
    }
    n = sum(len(v) for v in want.values())
    events = wait_events(srv, "$events.bkt", n)
    time.sleep(3)  # nothing more may follow (an idle-write sweep, a duplicate)
    events = read_topic(srv, "$events.bkt")
    assert by_key(events) == want
    ev = {(k, e["type"]): e for k, e in events}
    ren = ev[("d.txt", P + "Renamed")]
    assert ren["data"]["from"] == "c.txt" and ren["data"]["size"] == 5
    assert ev[("a.txt", C + "Put")]["data"]["etag"] == "5d41402abc4b2a76b9719d911017c592"
    assert ev[("a.txt", C + "Put")]["data"]["user"] == "root"
    assert ev[("f.txt", C + "Write")]["data"]["size"] == 2_400_000
    assert ev[("n.bin", C + "Write")]["data"]["size"] == 3 << 20
    assert {e["data"]["head"] for _, e in events} == {"s3", "nfs", "fuse"}
    assert ev[("sub/", C + "Create")]["data"]["type"] == "directory"
    # commit order: sequence numbers rise with the offsets
    ids = [int(e["id"]) for _, e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # clients may read the event topic, not write to it
    p = subprocess.run(["kcat", "-b", srv.bootstrap, "-P", "-t", "$events.bkt", "-p", "0"],
                       input=b"forged\n", capture_output=True, timeout=60)
    assert b"authoriz" in (p.stdout + p.stderr).lower()
    assert len(read_topic(srv, "$events.bkt")) == n
    assert srv.stop() == 0


def test_kill9_neither_loses_nor_repeats_events(tmp_path, launch):
    data = tmp_path / "data"
    Plenum(data).ok("mb", "pl://evq")
    acked = set()
    for rnd in range(3):
        srv = launch(data)
        s3 = s3client(srv)
        stop = threading.Event()

        def writer(w):
            i = 0
            while not stop.is_set():
                key = f"r{rnd}/w{w}/{i}"
                try:
                    s3.put_object(Bucket="evq", Key=key, Body=key.encode())
                except Exception:
                    return
                acked.add(key)
                i += 1
        ts = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for t in ts:
            t.start()
        time.sleep(1.5)
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        stop.set()
        for t in ts:
            t.join()
    srv = launch(data)
    s3 = s3client(srv)
    keys = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="evq"):
        keys |= {o["Key"] for o in page.get("Contents", [])}
    assert acked <= keys
    events = wait_events(srv, "$events.evq", len(keys), timeout=60)
    time.sleep(2)
    events = read_topic(srv, "$events.evq")
    got = [k for k, _ in events]
    assert len(got) == len(set(got)), "an event was published twice"
    assert set(got) == keys  # one per stored object: none lost, none for what did not commit
    assert srv.stop() == 0


def test_bucket_notifications_filter_into_a_topic(tmp_path, launch):
    import botocore
    data = tmp_path / "data"
    Plenum(data).ok("mb", "pl://pics")
    srv = launch(data)
    s3 = s3client(srv)
    assert "TopicConfigurations" not in s3.get_bucket_notification_configuration(Bucket="pics")
    cfg = {"TopicConfigurations": [{
        "Id": "jpegs",
        "TopicArn": "arn:aws:sns:us-east-1:000000000000:images",
        "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "img/"},
                                           {"Name": "suffix", "Value": ".jpg"}]}}}]}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_bucket_notification_configuration(Bucket="pics", NotificationConfiguration=cfg)
    assert e.value.response["Error"]["Code"] == "InvalidArgument"  # no such topic yet
    run("kcat", "-b", srv.bootstrap, "-L")  # the broker answers
    from confluent_kafka.admin import AdminClient, NewTopic
    a = AdminClient({"bootstrap.servers": srv.bootstrap})
    a.create_topics([NewTopic("images", num_partitions=1, replication_factor=1)])["images"].result(30)
    a.create_topics([NewTopic("gone", num_partitions=1, replication_factor=1)])["gone"].result(30)
    s3.put_bucket_notification_configuration(Bucket="pics", NotificationConfiguration=cfg)
    got = s3.get_bucket_notification_configuration(Bucket="pics")["TopicConfigurations"]
    assert got[0]["Id"] == "jpegs" and got[0]["TopicArn"] == cfg["TopicConfigurations"][0]["TopicArn"]
    assert got[0]["Events"] == ["s3:ObjectCreated:*"]
    assert sorted((r["Name"], r["Value"]) for r in got[0]["Filter"]["Key"]["FilterRules"]) == \
        [("prefix", "img/"), ("suffix", ".jpg")]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_bucket_notification_configuration(Bucket="pics", NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": "arn:aws:sqs:us-east-1:0:q",
                                     "Events": ["s3:ObjectCreated:*"]}]})
    assert e.value.response["Error"]["Code"] == "InvalidArgument"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_bucket_notification_configuration(Bucket="pics", NotificationConfiguration={
            "TopicConfigurations": [{"TopicArn": "images", "Events": ["s3:NoSuch:*"]}]})
    assert e.value.response["Error"]["Code"] == "InvalidArgument"
    for key in ["img/a.jpg", "img/b.png", "doc/c.jpg", "img/sub/d.jpg"]:
        s3.put_object(Bucket="pics", Key=key, Body=b"x")
    s3.delete_object(Bucket="pics", Key="img/a.jpg")  # a removal: not ObjectCreated
    assert len(wait_events(srv, "$events.pics", 5)) == 5
    time.sleep(1)
    hits = read_topic(srv, "images")
    assert [(k, e["type"]) for k, e in hits] == [("img/a.jpg", C + "Put"),
                                                  ("img/sub/d.jpg", C + "Put")]
    # a second rule on removals only; then a configuration naming nothing turns it off
    cfg["TopicConfigurations"].append({"Id": "rm", "TopicArn": "gone",
                                       "Events": ["s3:ObjectRemoved:Delete"]})
    s3.put_bucket_notification_configuration(Bucket="pics", NotificationConfiguration=cfg)
    s3.delete_object(Bucket="pics", Key="img/sub/d.jpg")
    s3.put_object(Bucket="pics", Key="img/e.jpg", Body=b"x")
    assert [k for k, _ in wait_events(srv, "gone", 1)] == ["img/sub/d.jpg"]
    assert [k for k, _ in wait_events(srv, "images", 3)][2:] == ["img/e.jpg"]
    s3.put_bucket_notification_configuration(Bucket="pics", NotificationConfiguration={})
    assert "TopicConfigurations" not in s3.get_bucket_notification_configuration(Bucket="pics")
    s3.put_object(Bucket="pics", Key="img/f.jpg", Body=b"x")
    assert len(wait_events(srv, "$events.pics", 8)) == 8
    time.sleep(1)
    assert len(read_topic(srv, "images")) == 3
    assert srv.stop() == 0

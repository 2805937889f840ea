"""The Kafka head with real clients: kcat (librdkafka), kafka-python and
confluent-kafka against a real plenum server. Raw frames are used only to
look at what is stored and to send what no client would."""
import functools
import json
import shutil
import signal
import socket
import struct
import subprocess
import time

import pytest

from conftest import Plenum, Server, free_port

pytestmark = pytest.mark.skipif(shutil.which("kcat") is None,
                                reason="kcat is installed by scripts/deps.sh")


def start(data, extra=()):
    port = free_port()
    srv = Server(data, extra=["--kafka", f"127.0.0.1:{port}", *extra])
    srv.bootstrap = f"127.0.0.1:{port}"
    srv.kport = port
    return srv


@pytest.fixture
def launch(launch_with):
    """start(), and every server it started is gone after the test, pass or fail."""
    return functools.partial(launch_with, start)


@pytest.fixture
def kafka(tmp_path):
    srv = start(tmp_path / "data")
    yield srv
    if srv.proc.poll() is None:
        assert srv.stop() == 0


def kcat(*args, input=None, timeout=60):
    p = subprocess.run(["kcat", *args], input=input, capture_output=True, timeout=timeout)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    return p.stdout


def create_topic(bootstrap, name, partitions=1, config=None):
    from confluent_kafka.admin import AdminClient, NewTopic
    a = AdminClient({"bootstrap.servers": bootstrap})
    fs = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                   config=config or {})])
    fs[name].result(timeout=30)


# ---- raw protocol, for what clients hide or would never send ----
def kstr(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def frame(api, ver, corr, body, client=b"raw"):
    hdr = struct.pack(">hhi", api, ver, corr) + struct.pack(">h", len(client)) + client
    return struct.pack(">i", len(hdr) + len(body)) + hdr + body


def recv_frame(s):
    def exact(n):
        b = b""
        while len(b) < n:
            c = s.recv(n - len(b))
            if not c:
                raise ConnectionError("closed")
            b += c
        return b
    n = struct.unpack(">i", exact(4))[0]
    return exact(n)


def raw_fetch(port, topic, part, offset, max_bytes=1 << 20):
    """Fetch v4 of one partition: the stored batches, undecoded."""
    body = struct.pack(">iiiib", -1, 100, 1, max_bytes, 0) + struct.pack(">i", 1) + kstr(topic)
    body += struct.pack(">i", 1) + struct.pack(">iqi", part, offset, max_bytes)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(frame(1, 4, 7, body))
        r = recv_frame(s)
    at = 4 + 4  # correlation id, throttle
    nt = struct.unpack_from(">i", r, at)[0]
    at += 4
    assert nt == 1
    tl = struct.unpack_from(">h", r, at)[0]
    at += 2 + tl + 4
    p, err, hwm, lso = struct.unpack_from(">ihqq", r, at)
    at += 4 + 2 + 8 + 8 + 4  # + aborted transactions count
    n = struct.unpack_from(">i", r, at)[0]
    at += 4
    return err, hwm, r[at:at + max(n, 0)]


def batches(recs):
    out = []
    at = 0
    while at + 61 <= len(recs):
        base, length = struct.unpack_from(">qi", recs, at)
        attrs, = struct.unpack_from(">h", recs, at + 21)
        count, = struct.unpack_from(">i", recs, at + 57)
        out.append((base, attrs & 7, count))
        at += 12 + length
    return out


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def make_batch(values, base_ts=1_700_000_000_000, bad_crc=False, ts_step=0):
    recs = b""
    for i, v in enumerate(values):
        def varint(n):
            n = (n << 1) ^ (n >> 63)
            o = b""
            while True:
                if n < 0x80:
                    return o + bytes([n])
                o += bytes([(n & 0x7F) | 0x80])
                n >>= 7
        body = (b"\0" + varint(i * ts_step) + varint(i) + varint(-1) + varint(len(v)) + v +
                varint(0))
        recs += varint(len(body)) + body
    after_crc = struct.pack(">hiqqqhii", 0, len(values) - 1, base_ts,
                            base_ts + (len(values) - 1) * ts_step, -1, -1, -1, len(values)) + recs
    crc = crc32c(after_crc) ^ (1 if bad_crc else 0)
    rest = struct.pack(">ib", 0, 2) + struct.pack(">I", crc) + after_crc
    return struct.pack(">qi", 0, len(rest)) + rest


def raw_produce(s, topic, batch, corr=1, acks=-1):
    body = struct.pack(">hi", acks, 10000) + struct.pack(">i", 1) + kstr(topic)
    body += struct.pack(">i", 1) + struct.pack(">i", 0) + struct.pack(">i", len(batch)) + batch
    s.sendall(frame(0, 3, corr, struct.pack(">h", -1) + body))
    r = recv_frame(s)
    at = 4 + 4
    tl = struct.unpack_from(">h", r, at)[0]
    at += 2 + tl + 4
    part, err, base = struct.unpack_from(">ihq", r, at)
    return err, base


# ---- tests ----
def test_kcat_codecs_offsets_and_timestamps(kafka):
    b = kafka.bootstrap
    meta = kcat("-b", b, "-L").decode()
    assert "1 brokers" in meta and f"broker 1 at {b}" in meta
    create_topic(b, "codecs")
    codecs = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
    for z in codecs:
        lines = "".join(f"{z}-{i}\n" for i in range(500)).encode()
        kcat("-b", b, "-P", "-t", "codecs", "-p", "0", "-z", z, input=lines)
    err, hwm, recs = raw_fetch(kafka.kport, "codecs", 0, 0, 64 << 20)
    assert err == 0 and hwm == 2500
    stored = batches(recs)
    # each produce kept the codec it was sent with; offsets are dense. A
    # batch librdkafka could not shrink it sends uncompressed (codec 0): a
    # small batch at the end of a run, seen under ASan when kcat's 500
    # messages left in two batches
    sent = list(codecs.values())  # run k (offsets 500k..500k+499) asked for sent[k]
    for base, c, n in stored:
        assert c in (sent[base // 500], 0) and (base + n - 1) // 500 == base // 500, (base, c, n)
    for k, want in enumerate(sent):
        assert want in {c for base, c, _ in stored if base // 500 == k}, want
    assert sum(n for _, _, n in stored) == 2500
    assert stored[0][0] == 0
    out = kcat("-b", b, "-C", "-t", "codecs", "-p", "0", "-o", "beginning", "-e", "-q").decode()
    assert out.splitlines() == [f"{z}-{i}" for z in codecs for i in range(500)]
    out = kcat("-b", b, "-C", "-t", "codecs", "-p", "0", "-o", "2497", "-e", "-q",
               "-f", "%o %s\n").decode()
    assert out.splitlines() == ["2497 zstd-497", "2498 zstd-498", "2499 zstd-499"]
    # by timestamp: messages sent after a mark are found from it
    time.sleep(0.05)
    mark = int(time.time() * 1000)
    time.sleep(0.05)
    kcat("-b", b, "-P", "-t", "codecs", "-p", "0", input=b"late-1\nlate-2\n")
    out = kcat("-b", b, "-C", "-t", "codecs", "-p", "0", "-o", f"s@{mark}", "-e", "-q").decode()
    assert out.splitlines() == ["late-1", "late-2"]
    # an unknown topic is an error, not a hang
    p = subprocess.run(["kcat", "-b", b, "-C", "-t", "nosuch", "-p", "0", "-e", "-q",
                        "-m", "5"], capture_output=True, timeout=60)
    assert p.returncode != 0 or p.stdout == b""


def test_groups_split_partitions_and_commits_survive_restart(tmp_path, launch):
    from kafka import KafkaConsumer, KafkaProducer
    data = tmp_path / "data"
    srv = launch(data)
    b = srv.bootstrap
    create_topic(b, "work", partitions=4)
    # two kcat consumers in one group split the four partitions: once both
    # are members, what is produced is consumed once, by one of them
    procs = [subprocess.Popen(["kcat", "-b", b, "-G", "kg", "-o", "beginning", "-q",
                               "-f", "%p %s\n", "work"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL) for _ in range(2)]
    pl = Plenum(data)
    deadline = time.time() + 60
    while True:
        r = pl.run("group", "describe", "kg", "--json")
        g = json.loads(r.stdout) if r.returncode == 0 else {}
        if g.get("state") == "Stable" and len(g["members"]) == 2:
            break
        assert time.time() < deadline, f"the group never settled: {g}"
        time.sleep(0.3)
    prod = KafkaProducer(bootstrap_servers=b, acks="all")
    for i in range(400):
        prod.send("work", value=b"m%d" % i, partition=i % 4)
    prod.flush()
    prod.close()
    # kcat commits what it consumed every few seconds: wait for all of it
    deadline = time.time() + 90
    while sum(o["offset"] for o in pl.json("group", "describe", "kg")["offsets"]) < 400:
        assert time.time() < deadline, "the group did not consume everything"
        time.sleep(0.5)
    outs = []
    for p in procs:
        p.send_signal(signal.SIGINT)
        outs.append(p.communicate(timeout=30)[0].decode().split("\n"))
    parts = [{line.split()[0] for line in o if line} for o in outs]
    msgs = [line.split()[1] for o in outs for line in o if line]
    assert parts[0] and parts[1] and not parts[0] & parts[1], parts
    assert sorted(msgs) == sorted("m%d" % i for i in range(400))
    # kafka-python: a group consumer commits; a restart keeps the commits
    c = KafkaConsumer("work", bootstrap_servers=b, group_id="pg", auto_offset_reset="earliest",
                      enable_auto_commit=False, consumer_timeout_ms=8000)
    got = [m.value for m in c]
    c.commit()
    c.close()
    assert sorted(got) == sorted(b"m%d" % i for i in range(400))
    assert srv.stop() == 0
    srv = launch(data)
    b = srv.bootstrap
    prod = KafkaProducer(bootstrap_servers=b, acks="all")
    for i in range(8):
        prod.send("work", value=b"new%d" % i, partition=i % 4)
    prod.flush()
    prod.close()
    c = KafkaConsumer("work", bootstrap_servers=b, group_id="pg", auto_offset_reset="earliest",
                      consumer_timeout_ms=8000)
    got = sorted(m.value for m in c)
    c.close()
    assert got == sorted(b"new%d" % i for i in range(8))
    # the admin view of groups
    from kafka.admin import KafkaAdminClient
    a = KafkaAdminClient(bootstrap_servers=b)
    names = [g[0] for g in a.list_consumer_groups()]
    assert "pg" in names and "kg" in names
    offs = a.list_consumer_group_offsets("pg")
    assert sum(o.offset for o in offs.values()) == 408
    a.close()
    assert srv.stop() == 0


def test_kill9_loses_no_acknowledged_message(tmp_path, launch):
    from confluent_kafka import Producer
    data = tmp_path / "data"
    srv = launch(data)
    create_topic(srv.bootstrap, "durable", partitions=2)
    acked = []
    p = Producer({"bootstrap.servers": srv.bootstrap, "acks": "all", "linger.ms": 2,
                  "message.timeout.ms": 5000})

    def cb(err, msg):
        if err is None:
            acked.append(msg.value())

    for i in range(3000):
        p.produce("durable", value=b"d%05d" % i, partition=i % 2, on_delivery=cb)
        if i == 2000:
            p.flush(10)
            srv.proc.send_signal(signal.SIGKILL)
            srv.proc.wait()
        p.poll(0)
    p.flush(10)
    assert len(acked) >= 2001
    srv = launch(data)
    out = set()
    for part in (0, 1):
        out |= set(kcat("-b", srv.bootstrap, "-C", "-t", "durable", "-p", str(part), "-o",
                        "beginning", "-e", "-q").split())
    assert set(acked) <= out
    assert srv.stop() == 0


def test_many_partitions_produce_while_the_buffer_destages(tmp_path, launch):
    """librdkafka puts every partition's batch in one Produce request and
    keeps many requests in flight: the broker stages a round of them while
    the last one syncs. With a write buffer bounded at 64 MiB, destage and
    back-pressure run all the time; every message is acknowledged once, in
    order per partition, and reads back."""
    from confluent_kafka import Producer
    cfg = tmp_path / "plenum.ini"
    cfg.write_text("[store]\nbuffer_max_mb=64\n")
    srv = launch(tmp_path / "data", extra=["--config", str(cfg)])
    create_topic(srv.bootstrap, "wide", partitions=6)
    done = {p: [] for p in range(6)}
    errors = []
    p = Producer({"bootstrap.servers": srv.bootstrap, "acks": "all", "linger.ms": 5,
                  "message.timeout.ms": 120000, "queue.buffering.max.kbytes": 65536})

    def cb(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            done[msg.partition()].append((msg.offset(), msg.value()[:8]))

    payload = bytes(range(256)) * 16
    n = 48000  # 4 KiB each: about 200 MB, three times the buffer bound
    for i in range(n):
        while True:
            try:
                p.produce("wide", value=b"%07d:" % i + payload, partition=i % 6, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(180) == 0, "messages still unacknowledged"
    assert errors == []
    for part in range(6):
        offs = [o for o, _ in done[part]]
        assert offs == list(range(n // 6)), part
        assert [v for _, v in done[part]] == [b"%07d:" % i for i in range(part, n, 6)]
    out = kcat("-b", srv.bootstrap, "-C", "-t", "wide", "-p", "5", "-o", "-3", "-e", "-q",
               "-f", "%o\n", timeout=120).splitlines()
    assert [int(l) for l in out] == [n // 6 - 3, n // 6 - 2, n // 6 - 1], out
    assert srv.stop() == 0


def test_produce_auto_creates_topics_only_when_configured(tmp_path, launch):
    """[kafka] auto_create=on: a Produce to an unknown topic's partition 0
    creates the topic, in a round together with a known topic's batch; off
    (the default): UNKNOWN_TOPIC_OR_PARTITION (3), nothing created."""
    def produce(port, topics):
        body = struct.pack(">h", -1) + struct.pack(">hi", -1, 10000)
        body += struct.pack(">i", len(topics))
        for t in topics:
            batch = make_batch([b"a1", b"a2"])
            body += kstr(t) + struct.pack(">i", 1) + struct.pack(">ii", 0, len(batch)) + batch
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(frame(0, 3, 7, body))
            r = recv_frame(s)
        out, at = {}, 8
        for _ in topics:
            tl = struct.unpack_from(">h", r, at)[0]
            name = r[at + 2:at + 2 + tl].decode()
            at += 2 + tl + 4
            part, err, base = struct.unpack_from(">ihq", r, at)
            at += 4 + 2 + 8 + 8  # v3: log append time
            out[name] = (err, base)
        return out

    off = launch(tmp_path / "off")
    create_topic(off.bootstrap, "known")
    assert produce(off.kport, ["known", "fresh"]) == {"known": (0, 0), "fresh": (3, -1)}
    assert b"fresh" not in kcat("-b", off.bootstrap, "-L")
    assert off.stop() == 0

    cfg = tmp_path / "plenum.ini"
    cfg.write_text("[kafka]\nauto_create=on\n")
    on = launch(tmp_path / "on", extra=["--config", str(cfg)])
    create_topic(on.bootstrap, "known")
    assert produce(on.kport, ["known", "fresh"]) == {"known": (0, 0), "fresh": (0, 0)}
    vals = kcat("-b", on.bootstrap, "-C", "-t", "fresh", "-o", "beginning", "-e", "-q").split()
    assert vals == [b"a1", b"a2"]
    assert on.stop() == 0


def test_producers_on_many_connections_share_partitions(kafka):
    """Four producers (each its own connection, many requests in flight) write
    to the same two partitions at once: appends from different connections
    commit in the order they were given offsets, so each partition's offsets
    run 0..n-1 with no gap or repeat, each producer's messages keep their
    order, and a consumer reads exactly what was acknowledged."""
    import threading
    from confluent_kafka import Producer
    create_topic(kafka.bootstrap, "shared", partitions=2)
    per, nprod = 6000, 4
    acked = {p: [] for p in range(2)}
    errors = []
    lock = threading.Lock()

    def run(w):
        p = Producer({"bootstrap.servers": kafka.bootstrap, "acks": "all", "linger.ms": 1,
                      "batch.num.messages": 200, "message.timeout.ms": 60000})

        def cb(err, msg):
            with lock:
                if err is not None:
                    errors.append(str(err))
                else:
                    acked[msg.partition()].append((msg.offset(), msg.value()))

        for i in range(per):
            while True:
                try:
                    p.produce("shared", value=b"w%d-%05d" % (w, i), partition=i % 2,
                              on_delivery=cb)
                    break
                except BufferError:
                    p.poll(0.01)
            p.poll(0)
        if p.flush(120):
            with lock:
                errors.append("unacknowledged at the end")

    threads = [threading.Thread(target=run, args=(w,)) for w in range(nprod)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for part in range(2):
        got = sorted(acked[part])
        assert [o for o, _ in got] == list(range(nprod * per // 2)), part
        for w in range(nprod):
            mine = [v for _, v in got if v.startswith(b"w%d-" % w)]
            assert mine == [b"w%d-%05d" % (w, i) for i in range(part, per, 2)]
        out = kcat("-b", kafka.bootstrap, "-C", "-t", "shared", "-p", str(part), "-o",
                   "beginning", "-e", "-q").split()
        assert out == [v for _, v in got]


def test_admin_clients(kafka):
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
    from kafka.admin import KafkaAdminClient
    from kafka.admin import NewTopic as KNewTopic
    a = AdminClient({"bootstrap.servers": kafka.bootstrap})
    fs = a.create_topics([NewTopic("adm", 3, 1, config={"retention.ms": "3600000"})])
    fs["adm"].result(timeout=30)
    with pytest.raises(Exception) as e:
        a.create_topics([NewTopic("adm", 1, 1)])["adm"].result(timeout=30)
    assert "TOPIC_ALREADY_EXISTS" in str(e.value)
    with pytest.raises(Exception):
        a.create_topics([NewTopic("bad/name", 1, 1)])["bad/name"].result(timeout=30)
    with pytest.raises(Exception):
        a.create_topics([NewTopic("r3", 1, 3)])["r3"].result(timeout=30)
    md = a.list_topics(timeout=10)
    assert len(md.topics["adm"].partitions) == 3
    res = a.describe_configs([ConfigResource("topic", "adm")])
    cfg = list(res.values())[0].result(timeout=30)
    assert cfg["retention.ms"].value == "3600000"
    a.delete_topics(["adm"])["adm"].result(timeout=30)
    assert "adm" not in a.list_topics(timeout=10).topics
    k = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    k.create_topics([KNewTopic("kadm", 2, 1)])
    assert "kadm" in k.list_topics()
    k.delete_topics(["kadm"])
    assert "kadm" not in k.list_topics()
    k.close()


def test_retention_by_bytes(kafka):
    create_topic(kafka.bootstrap, "ret", config={"segment.bytes": "65536",
                                                "retention.bytes": "200000"})
    for _ in range(10):
        kcat("-b", kafka.bootstrap, "-P", "-t", "ret", "-p", "0",
             input=b"".join(b"x" * 1000 + b"\n" for _ in range(100)))
    deadline = time.time() + 20
    while True:
        out = kcat("-b", kafka.bootstrap, "-Q", "-t", "ret:0:-2").decode()
        start_off = int(out.split()[-1])
        if start_off > 0 or time.time() > deadline:
            break
        time.sleep(0.5)
    assert start_off > 0, "retention.bytes never dropped a segment"
    lines = kcat("-b", kafka.bootstrap, "-C", "-t", "ret", "-p", "0", "-o", "beginning",
                 "-e", "-q").split()
    assert 0 < len(lines) < 1000


def test_bad_input(kafka):
    create_topic(kafka.bootstrap, "bad")
    port = kafka.kport
    with socket.create_connection(("127.0.0.1", port)) as s:
        # a wrong CRC: CORRUPT_MESSAGE (2), and the connection stays usable
        err, _ = raw_produce(s, "bad", make_batch([b"a", b"b"], bad_crc=True), corr=1)
        assert err == 2
        err, base = raw_produce(s, "bad", make_batch([b"a", b"b"]), corr=2)
        assert err == 0 and base == 0
        # a batch cut short: INVALID_RECORD (87)
        err, _ = raw_produce(s, "bad", make_batch([b"c"])[:-3], corr=3)
        assert err == 87
        # ApiVersions at a version we do not serve: error 35 with our versions
        s.sendall(frame(18, 9, 4, b""))
        r = recv_frame(s)
        assert struct.unpack_from(">ih", r, 0) == (4, 35)
    # unknown api key, a huge size, garbage: that connection closes, nothing else
    for junk in (frame(999, 0, 1, b""), struct.pack(">i", 1 << 30) + b"x" * 16,
                 b"\xff" * 64, frame(3, 1, 1, b"\x00\x00\x7f\xff")):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(junk)
            s.settimeout(10)
            try:
                assert s.recv(1 << 16) == b""
            except ConnectionResetError:
                pass
    # a flood of requests in one go is answered in order
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"".join(frame(18, 0, i, b"") for i in range(500)))
        for i in range(500):
            assert struct.unpack_from(">i", recv_frame(s), 0)[0] == i
    assert kcat("-b", kafka.bootstrap, "-C", "-t", "bad", "-p", "0", "-o", "beginning", "-e",
                "-q").split() == [b"a", b"b"]
    assert kafka.proc.poll() is None


def test_topic_and_group_cli(kafka, tmp_path):
    pl = Plenum(kafka.data)
    pl.ok("topic", "create", "clitopic", "--partitions", "3", "--config", "retention.ms=60000")
    out = pl.ok("topic", "list").stdout.decode()
    assert "clitopic" in out
    d = pl.json("topic", "describe", "clitopic")
    assert d["topic"]["partitions"] == 3 and d["topic"]["retention_ms"] == 60000
    kcat("-b", kafka.bootstrap, "-P", "-t", "clitopic", "-p", "1", input=b"x\ny\n")
    d = pl.json("topic", "describe", "clitopic")
    assert [p["next_offset"] for p in d["partitions"]] == [0, 2, 0]
    r = pl.run("topic", "create", "clitopic")
    assert r.returncode == 1 and b"exists" in r.stderr
    from kafka import KafkaConsumer
    c = KafkaConsumer("clitopic", bootstrap_servers=kafka.bootstrap, group_id="cg",
                      auto_offset_reset="earliest", consumer_timeout_ms=6000)
    assert len(list(c)) == 2
    c.commit()
    c.close()
    groups = pl.json("group", "list")["groups"]
    assert any(g["id"] == "cg" for g in groups)
    d = pl.json("group", "describe", "cg")
    assert {(o["partition"], o["offset"]) for o in d["offsets"] if o["topic"] == "clitopic"} >= {(1, 2)}
    pl.ok("group", "reset-offsets", "cg", "clitopic", "--to", "earliest")
    d = pl.json("group", "describe", "cg")
    assert all(o["offset"] == 0 for o in d["offsets"] if o["topic"] == "clitopic")
    pl.ok("topic", "delete", "clitopic")
    assert "clitopic" not in pl.ok("topic", "list").stdout.decode()


def test_sasl_plain_and_scram(tmp_path, launch):
    from confluent_kafka import Consumer
    from kafka import KafkaProducer
    from kafka.errors import KafkaError
    from conftest import ACCESS_KEY, SECRET_KEY
    cfg = tmp_path / "plenum.ini"
    cfg.write_text("[kafka]\nsasl = required\n")
    srv = launch(tmp_path / "data", extra=["--config", str(cfg)])
    b = srv.bootstrap
    Plenum(srv.data).ok("topic", "create", "sec")

    def kc(mech, password, *args, input=None):
        return subprocess.run(["kcat", "-b", b, "-X", "security.protocol=SASL_PLAINTEXT",
                               "-X", f"sasl.mechanisms={mech}", "-X", f"sasl.username={ACCESS_KEY}",
                               "-X", f"sasl.password={password}", *args],
                              input=input, capture_output=True, timeout=60)

    for mech in ("PLAIN", "SCRAM-SHA-256"):
        assert kc(mech, SECRET_KEY, "-P", "-t", "sec", input=f"{mech}\n".encode()).returncode == 0
        bad = kc(mech, "wrong-secret", "-C", "-t", "sec", "-o", "beginning", "-e", "-q")
        assert bad.returncode != 0 and bad.stdout == b""
    got = kc("SCRAM-SHA-256", SECRET_KEY, "-C", "-t", "sec", "-o", "beginning", "-e", "-q")
    assert got.stdout.split() == [b"PLAIN", b"SCRAM-SHA-256"]
    # kafka-python (SASL handshake v0: bare tokens) and confluent-kafka
    for mech in ("PLAIN", "SCRAM-SHA-256"):
        p = KafkaProducer(bootstrap_servers=b, security_protocol="SASL_PLAINTEXT",
                          sasl_mechanism=mech, sasl_plain_username=ACCESS_KEY,
                          sasl_plain_password=SECRET_KEY)
        p.send("sec", b"kp-" + mech.encode()).get(timeout=30)
        p.close()
        with pytest.raises(KafkaError):
            KafkaProducer(bootstrap_servers=b, security_protocol="SASL_PLAINTEXT",
                          sasl_mechanism=mech, sasl_plain_username=ACCESS_KEY,
                          sasl_plain_password="nope", request_timeout_ms=5000,
                          api_version_auto_timeout_ms=5000)
    c = Consumer({"bootstrap.servers": b, "security.protocol": "SASL_PLAINTEXT",
                  "sasl.mechanisms": "SCRAM-SHA-256", "sasl.username": ACCESS_KEY,
                  "sasl.password": SECRET_KEY, "group.id": "sg",
                  "auto.offset.reset": "earliest"})
    c.subscribe(["sec"])
    seen = []
    deadline = time.time() + 30
    while len(seen) < 4 and time.time() < deadline:
        m = c.poll(1)
        if m is not None and not m.error():
            seen.append(m.value())
    c.close()
    assert sorted(seen) == sorted([b"PLAIN", b"SCRAM-SHA-256", b"kp-PLAIN", b"kp-SCRAM-SHA-256"])
    # without credentials: nothing but the handshake is served
    p = subprocess.run(["kcat", "-b", b, "-L", "-m", "5"], capture_output=True, timeout=60)
    assert p.returncode != 0
    assert srv.stop() == 0


def test_pipelined_produces_are_written_together_and_answered_in_order(kafka):
    """Produce requests sent back to back (as librdkafka does) are read
    together and written in one go per partition; each still gets its own
    answer, in order, with its own offsets, and a bad one fails alone."""
    create_topic(kafka.bootstrap, "pipe", partitions=2)

    def produce_frame(corr, part, batch):
        body = struct.pack(">h", -1) + struct.pack(">hi", -1, 10000) + struct.pack(">i", 1)
        body += kstr("pipe") + struct.pack(">i", 1) + struct.pack(">ii", part, len(batch)) + batch
        return frame(0, 3, corr, body)

    frames = []
    for i in range(40):
        bad = i == 17
        frames.append(produce_frame(i, i % 2, make_batch([b"p%d" % i, b"q%d" % i], bad_crc=bad)))
    with socket.create_connection(("127.0.0.1", kafka.kport)) as s:
        s.sendall(b"".join(frames))
        next_off = {0: 0, 1: 0}
        for i in range(40):
            r = recv_frame(s)
            assert struct.unpack_from(">i", r, 0)[0] == i
            at = 4 + 4
            tl = struct.unpack_from(">h", r, at)[0]
            at += 2 + tl + 4
            part, err, base = struct.unpack_from(">ihq", r, at)
            assert part == i % 2
            if i == 17:
                assert err == 2 and base == -1
            else:
                assert err == 0 and base == next_off[part]
                next_off[part] += 2
    for part in (0, 1):
        vals = kcat("-b", kafka.bootstrap, "-C", "-t", "pipe", "-p", str(part), "-o", "beginning",
                    "-e", "-q").split()
        assert vals == [v for i in range(40) if i % 2 == part and i != 17
                        for v in (b"p%d" % i, b"q%d" % i)]


def test_fetch_waits_for_min_bytes(kafka):
    """A Fetch waits until min_bytes are there or max_wait passes."""
    create_topic(kafka.bootstrap, "mb")
    kcat("-b", kafka.bootstrap, "-P", "-t", "mb", "-p", "0", input=b"small\n")

    def fetch(min_bytes, max_wait):
        body = struct.pack(">iiiib", -1, max_wait, min_bytes, 1 << 20, 0) + struct.pack(">i", 1)
        body += kstr("mb") + struct.pack(">i", 1) + struct.pack(">iqi", 0, 0, 1 << 20)
        with socket.create_connection(("127.0.0.1", kafka.kport)) as s:
            t0 = time.time()
            s.sendall(frame(1, 4, 1, body))
            recv_frame(s)
            return time.time() - t0

    assert fetch(1, 30000) < 20        # data is there: answered without the 30 s wait
    assert fetch(100000, 1500) >= 1.4  # not enough: the full wait


def test_list_offsets_by_time_finds_the_record(kafka):
    """By timestamp, the answer is the first record at or after it, also in
    the middle of a batch."""
    create_topic(kafka.bootstrap, "times")
    t0 = 1_700_000_000_000
    with socket.create_connection(("127.0.0.1", kafka.kport)) as s:
        assert raw_produce(s, "times", make_batch([b"a", b"b", b"c", b"d"], base_ts=t0,
                                                  ts_step=10)) == (0, 0)
        assert raw_produce(s, "times", make_batch([b"e", b"f"], base_ts=t0 + 100,
                                                  ts_step=10), corr=2) == (0, 4)

    def list_offset(ts):
        body = struct.pack(">ib", -1, 0) + struct.pack(">i", 1) + kstr("times")
        body += struct.pack(">i", 1) + struct.pack(">iiq", 0, -1, ts)
        with socket.create_connection(("127.0.0.1", kafka.kport)) as s:
            s.sendall(frame(2, 4, 9, body))
            r = recv_frame(s)
        at = 4 + 4 + 4 + 2 + len("times") + 4
        part, err, found_ts, off, epoch = struct.unpack_from(">ihqqi", r, at)
        return err, off, found_ts

    assert list_offset(t0 + 15) == (0, 2, t0 + 20)
    assert list_offset(t0) == (0, 0, t0)
    assert list_offset(t0 + 105) == (0, 5, t0 + 110)
    assert list_offset(t0 + 1000)[1] == -1
    out = kcat("-b", kafka.bootstrap, "-C", "-t", "times", "-p", "0", "-o", f"s@{t0 + 25}",
               "-e", "-q").split()
    assert out == [b"d", b"e", b"f"]

#!/usr/bin/env python3
"""The metrics endpoint (--metrics ADDR:PORT, fs/metrics.h) of a real mount: every scrape is
parsed by a strict Prometheus text-format (0.0.4) parser written here (HELP/TYPE, label
escapes, one TYPE per family before its samples, counters ending in _total, histogram buckets
cumulative with +Inf equal to _count) and the counters are checked against what the test did:
blocks written and read through the file API, a miss, an unlink, side-channel lookups, pins
and commits, blocks fetched from another node of a cluster. Also /health, 404 and 405, and
the daemon refusing to start on a bad address or a port in use (one line "kvcachefs: ...").

Not covered: /health answering 503 while the daemon starts or stops (the window between the
endpoint listening and the mount being ready is a few milliseconds and nothing here can hold
the daemon in it)."""

import ctypes
import errno
import fcntl
import http.client
import math
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import unittest

import kvc
from kvc import KiB, MiB, Mount, wait_until

PREFIX = "kvcachefs_"


def free_port(family=socket.AF_INET, host="127.0.0.1"):
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# A Prometheus text exposition format (0.0.4) parser, strict about what this daemon promises.

class ParseError(AssertionError):
    pass


NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
FLOAT_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def parse_float(s, what):
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    if not FLOAT_RE.fullmatch(s):
        raise ParseError("%s: %r is not a number" % (what, s))
    return float(s)


def unescape_help(s, line):
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\":
            if i + 1 < len(s) and s[i + 1] in "\\n":
                out.append("\\" if s[i + 1] == "\\" else "\n")
                i += 2
                continue
            # other backslashes in HELP are literal in 0.0.4
        out.append(s[i])
        i += 1
    return "".join(out)


def parse_labels(line, i):
    """Parse {name="value",...} starting at line[i] == '{'; returns (dict, index after '}')."""
    labels = {}
    i += 1
    while True:
        if i < len(line) and line[i] == "}":
            return labels, i + 1
        m = LABEL_NAME_RE.match(line, i)
        if not m:
            raise ParseError("bad label name at column %d: %r" % (i, line))
        name = m.group(0)
        i = m.end()
        if line[i:i + 2] != '="':
            raise ParseError("expected =\" after label %s: %r" % (name, line))
        i += 2
        value = []
        while True:
            if i >= len(line):
                raise ParseError("unterminated label value: %r" % line)
            c = line[i]
            if c == "\\":
                nxt = line[i + 1:i + 2]
                if nxt == "\\":
                    value.append("\\")
                elif nxt == '"':
                    value.append('"')
                elif nxt == "n":
                    value.append("\n")
                else:
                    raise ParseError("bad escape \\%s in a label value: %r" % (nxt, line))
                i += 2
            elif c == '"':
                i += 1
                break
            elif c == "\n":
                raise ParseError("raw newline in a label value")
            else:
                value.append(c)
                i += 1
        if name in labels:
            raise ParseError("label %s twice: %r" % (name, line))
        labels[name] = "".join(value)
        if i < len(line) and line[i] == ",":
            i += 1
        elif i < len(line) and line[i] == "}":
            continue
        else:
            raise ParseError("expected , or } after label %s: %r" % (name, line))


class Family:
    def __init__(self, name):
        self.name = name
        self.type = None
        self.help = None
        self.samples = []  # (sample name, labels dict, value)


def family_of(families, sample):
    """The family a sample name belongs to (histogram samples carry a suffix)."""
    if sample in families and families[sample].type not in ("histogram", "summary"):
        return families[sample]
    for suffix in ("_bucket", "_sum", "_count"):
        base = sample[:-len(suffix)]
        if sample.endswith(suffix) and base in families and families[base].type == "histogram":
            return families[base]
    raise ParseError("sample %s has no # TYPE before it" % sample)


def parse(text):
    """Parse an exposition; returns {family name: Family}. Raises ParseError."""
    if not text.endswith("\n"):
        raise ParseError("the exposition does not end with a newline")
    families, order, series = {}, [], set()
    current = None
    for line in text[:-1].split("\n"):
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 2 and parts[1] in ("HELP", "TYPE"):
                if len(parts) < 3 or not NAME_RE.fullmatch(parts[2]):
                    raise ParseError("bad %s line: %r" % (parts[1], line))
                name = parts[2]
                f = families.get(name)
                if f is None:
                    f = families[name] = Family(name)
                    order.append(name)
                if f.samples:
                    raise ParseError("# %s %s after its samples" % (parts[1], name))
                if parts[1] == "HELP":
                    if f.help is not None:
                        raise ParseError("two # HELP for %s" % name)
                    f.help = unescape_help(parts[3] if len(parts) > 3 else "", line)
                else:
                    if f.type is not None:
                        raise ParseError("two # TYPE for %s" % name)
                    if len(parts) != 4 or parts[3] not in TYPES:
                        raise ParseError("bad # TYPE line: %r" % line)
                    f.type = parts[3]
            continue  # any other comment
        m = NAME_RE.match(line)
        if not m:
            raise ParseError("bad sample line: %r" % line)
        sname, i = m.group(0), m.end()
        labels = {}
        if i < len(line) and line[i] == "{":
            labels, i = parse_labels(line, i)
        if line[i:i + 1] != " ":
            raise ParseError("expected a space before the value: %r" % line)
        fields = line[i + 1:].split(" ")
        if len(fields) not in (1, 2):
            raise ParseError("expected value [timestamp]: %r" % line)
        value = parse_float(fields[0], sname)
        if len(fields) == 2 and not re.fullmatch(r"-?\d+", fields[1]):
            raise ParseError("bad timestamp: %r" % line)
        f = family_of(families, sname)
        if current is not f and f.samples:
            raise ParseError("samples of %s are not together" % f.name)
        current = f
        key = (sname, tuple(sorted(labels.items())))
        if key in series:
            raise ParseError("series %s%s twice" % key)
        series.add(key)
        f.samples.append((sname, labels, value))
    for f in families.values():
        check_family(f)
    return families


def check_family(f):
    if f.type is None:
        raise ParseError("%s has a HELP but no TYPE" % f.name)
    if f.help is None:
        raise ParseError("%s has no HELP" % f.name)
    if f.type == "counter":
        if not f.name.endswith("_total"):
            raise ParseError("counter %s does not end in _total" % f.name)
        for s, labels, v in f.samples:
            if not v >= 0:
                raise ParseError("counter %s%s is %r" % (s, labels, v))
    if f.type == "histogram":
        check_histogram(f)


def check_histogram(f):
    groups = {}
    for s, labels, v in f.samples:
        rest = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
        g = groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        if s == f.name + "_bucket":
            if "le" not in labels:
                raise ParseError("%s_bucket%s without le" % (f.name, labels))
            g["buckets"].append((parse_float(labels["le"], "le"), v))
        elif "le" in labels:
            raise ParseError("%s with an le label" % s)
        elif s == f.name + "_sum":
            g["sum"] = v
        elif s == f.name + "_count":
            g["count"] = v
        else:
            raise ParseError("%s is not a histogram sample of %s" % (s, f.name))
    for rest, g in groups.items():
        b = g["buckets"]
        if not b or b[-1][0] != math.inf:
            raise ParseError("%s%s: no +Inf bucket (last)" % (f.name, dict(rest)))
        if [le for le, _ in b] != sorted(le for le, _ in b) or len({le for le, _ in b}) != len(b):
            raise ParseError("%s%s: buckets not in increasing le order" % (f.name, dict(rest)))
        for (_, a), (_, c) in zip(b, b[1:]):
            if c < a:
                raise ParseError("%s%s: buckets not cumulative" % (f.name, dict(rest)))
        if g["count"] is None or g["sum"] is None:
            raise ParseError("%s%s: _sum or _count missing" % (f.name, dict(rest)))
        if b[-1][1] != g["count"]:
            raise ParseError("%s%s: +Inf bucket %r != _count %r" % (
                f.name, dict(rest), b[-1][1], g["count"]))
        if g["sum"] < 0:
            raise ParseError("%s%s: negative _sum" % (f.name, dict(rest)))


class Scrape:
    """One parsed /metrics page."""

    def __init__(self, text):
        self.text = text
        self.families = parse(text)

    def family(self, name):
        return self.families.get(PREFIX + name)

    def get(self, name, default=None, **labels):
        """The value of kvcachefs_<name> with exactly these labels."""
        f = self.families.get(PREFIX + name) or (
            self.families.get(PREFIX + name.rsplit("_", 1)[0]))
        for s, ls, v in f.samples if f else ():
            if s == PREFIX + name and ls == labels:
                return v
        if default is not None:
            return default
        raise AssertionError("no sample %s%s%s in:\n%s" % (PREFIX, name, labels, self.text))

    def counters(self):
        """{(sample, labels): value} of every counter and histogram sample."""
        out = {}
        for f in self.families.values():
            if f.type in ("counter", "histogram"):
                for s, ls, v in f.samples:
                    out[(s, tuple(sorted(ls.items())))] = v
        return out


# --------------------------------------------------------------------------------------------
# HTTP

def request(port, method="GET", path="/metrics", host="127.0.0.1", body=None, timeout=10):
    """(status, {header: value} lower-cased, body bytes)."""
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def scrape(port, host="127.0.0.1"):
    status, headers, body = request(port, host=host)
    if status != 200:
        raise AssertionError("GET /metrics: %d %r" % (status, body))
    ctype = headers.get("content-type", "")
    if not ctype.startswith("text/plain") or "version=0.0.4" not in ctype:
        raise AssertionError("GET /metrics: Content-Type %r" % ctype)
    return Scrape(body.decode("utf-8"))


def setUpModule():
    kvc.require_environment()


# --------------------------------------------------------------------------------------------

class Parser(unittest.TestCase):
    """The parser itself: what it accepts and what it must refuse."""

    GOOD = ('# HELP x_total Things.\n# TYPE x_total counter\nx_total{a="q\\"\\\\\\n"} 3\n'
            '# HELP h H.\n# TYPE h histogram\n'
            'h_bucket{le="0.1"} 1\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 2\n'
            'h_sum 0.3\nh_count 2\n')

    def test_accepts(self):
        fams = parse(self.GOOD)
        self.assertEqual(fams["x_total"].samples[0][1], {"a": 'q"\\\n'})
        self.assertEqual(fams["h"].type, "histogram")

    def test_refuses(self):
        bad = [
            self.GOOD[:-1],  # no final newline
            self.GOOD.replace('h_bucket{le="1"} 2', 'h_bucket{le="1"} 0'),  # not cumulative
            self.GOOD.replace("h_count 2", "h_count 3"),  # +Inf != count
            self.GOOD.replace('h_bucket{le="+Inf"} 2\n', ""),  # no +Inf
            self.GOOD.replace("h_sum 0.3\n", ""),
            self.GOOD.replace('\\"', '\\q'),  # bad escape
            self.GOOD.replace("# TYPE x_total counter\n", ""),  # untyped sample
            self.GOOD.replace("x_total", "x"),  # counter without _total
            self.GOOD + "x_total 4\n",  # samples apart
            self.GOOD + "# TYPE h gauge\n",  # second TYPE
            self.GOOD.replace(" 3\n", " three\n"),
            self.GOOD.replace('{a=', '{1a='),
            self.GOOD.replace(" 3\n", " -3\n"),  # negative counter
        ]
        for text in bad:
            with self.assertRaises(ParseError, msg=text):
                parse(text)


class Endpoint(kvc.TestCase):
    """One mount (on a directory whose name needs escaping in a label) with --metrics."""

    @classmethod
    def setUpClass(cls):
        cls.port = free_port()
        cls.parent = tempfile.mkdtemp(prefix="kvc-itest-metrics-")
        cls.addClassCleanup(shutil.rmtree, cls.parent, True)
        cls.mnt = os.path.join(cls.parent, 'mnt "q" \\b')
        os.mkdir(cls.mnt)
        cls.m = Mount.for_class(cls, "--metrics", "127.0.0.1:%d" % cls.port, mnt=cls.mnt)

    def setUp(self):
        self.d = self.m.path(self.id().rsplit(".", 1)[-1])

    def scrape(self):
        return scrape(self.port)

    def test_families(self):
        s = self.scrape()
        self.assertEqual(s.get("info", version=s.family("info").samples[0][1]["version"],
                               mountpoint=os.path.realpath(self.mnt), cluster="", node=""), 1)
        for name, typ in [("capacity_bytes", "gauge"), ("used_bytes", "gauge"),
                          ("blocks", "gauge"), ("blocks_writing", "gauge"),
                          ("directories", "gauge"), ("reads_total", "counter"),
                          ("read_bytes_total", "counter"), ("writes_total", "counter"),
                          ("write_bytes_total", "counter"), ("hits_total", "counter"),
                          ("misses_total", "counter"), ("evictions_total", "counter"),
                          ("demotions_total", "counter"), ("promotions_total", "counter"),
                          ("ssd_evictions_total", "counter"), ("side_pins", "gauge"),
                          ("side_reservations", "gauge"), ("side_lookups_total", "counter"),
                          ("recovered_blocks", "gauge"), ("recovery_dropped_records", "gauge"),
                          ("recovery_duration_seconds", "gauge"), ("cluster_members", "gauge"),
                          ("request_duration_seconds", "histogram")]:
            f = s.family(name)
            self.assertIsNotNone(f, name)
            self.assertEqual(f.type, typ, name)
        for tier in ("dram", "ssd"):
            s.get("capacity_bytes", tier=tier)
            s.get("used_bytes", tier=tier)
            s.get("blocks", tier=tier)
        self.assertEqual(s.get("capacity_bytes", tier="ssd"), 0)
        self.assertGreater(s.get("capacity_bytes", tier="dram"), 60 * MiB)
        for path in ("file", "side", "remote"):
            for n in ("reads_total", "read_bytes_total", "writes_total", "write_bytes_total"):
                s.get(n, path=path)
        for op in ("lookup", "read", "write"):
            s.get("request_duration_seconds_count", op=op)
        self.assertEqual(s.get("cluster_members"), 1)
        self.assertIsNone(s.family("etcd_connected"))  # single node
        self.assertIsNone(s.family("transfer_bytes_total"))

    def test_workload_counters(self):
        sizes = [1, 4096, 10000, 65536, MiB, MiB + 3]
        datas = [os.urandom(n) for n in sizes]
        s0 = self.scrape()
        os.mkdir(self.d)
        for i, data in enumerate(datas):
            kvc.write_block(os.path.join(self.d, "b%d" % i), data)
        # the kernel sends RELEASE (where a block is sealed and counted) after close()
        # returns: wait for the last seal before the scrape that is compared
        self.assertTrue(wait_until(lambda: self.scrape().get("blocks_writing") == 0),
                        "blocks still being written after their close()")
        s1 = self.scrape()
        self.assertEqual(s1.get("write_bytes_total", path="file") -
                         s0.get("write_bytes_total", path="file"), sum(sizes))
        writes = s1.get("writes_total", path="file") - s0.get("writes_total", path="file")
        self.assertGreaterEqual(writes, len(sizes))
        # every write request is timed once (right after its reply, so maybe after this scrape)
        self.assertTimed(s0, "write", writes)
        self.assertEqual(s1.get("blocks", tier="dram") - s0.get("blocks", tier="dram"),
                         len(sizes))
        self.assertEqual(s1.get("directories") - s0.get("directories"), 1)
        self.assertEqual(s1.get("blocks_writing"), 0)
        self.assertGreaterEqual(s1.get("used_bytes", tier="dram") -
                                s0.get("used_bytes", tier="dram"), sum(sizes))
        for path in ("side", "remote"):  # nothing went through the other paths
            self.assertEqual(s1.get("writes_total", path=path), s0.get("writes_total", path=path))

        read = [1, 3, 5]
        for i in read:
            self.assertEqual(kvc.read_block(os.path.join(self.d, "b%d" % i)), datas[i])
        s2 = self.scrape()
        self.assertEqual(s2.get("read_bytes_total", path="file") -
                         s1.get("read_bytes_total", path="file"), sum(sizes[i] for i in read))
        reads = s2.get("reads_total", path="file") - s1.get("reads_total", path="file")
        self.assertGreaterEqual(reads, len(read))
        self.assertTimed(s1, "read", reads)
        self.assertEqual(s2.get("hits_total") - s1.get("hits_total"), len(read))
        self.assertEqual(s2.get("reads_total", path="side"), s1.get("reads_total", path="side"))

        with self.assertRaises(FileNotFoundError):
            os.stat(os.path.join(self.d, "never-written"))
        s3 = self.scrape()
        self.assertEqual(s3.get("misses_total") - s2.get("misses_total"), 1)
        self.assertTrue(wait_until(
            lambda: self.scrape().get("request_duration_seconds_count", op="lookup") >
            s2.get("request_duration_seconds_count", op="lookup"), timeout=5))

        os.unlink(os.path.join(self.d, "b4"))
        s4 = self.scrape()
        self.assertEqual(s4.get("blocks", tier="dram") - s3.get("blocks", tier="dram"), -1)
        self.assertLessEqual(s4.get("used_bytes", tier="dram"),
                             s3.get("used_bytes", tier="dram") - MiB)
        for op in ("lookup", "read", "write"):
            self.assertGreater(s4.get("request_duration_seconds_count", op=op),
                               s0.get("request_duration_seconds_count", op=op), op)
            self.assertGreater(s4.get("request_duration_seconds_sum", op=op),
                               s0.get("request_duration_seconds_sum", op=op), op)
        self.assertMonotonic([s0, s1, s2, s3, s4])

    def assertTimed(self, before, op, n):
        """The histogram of op counts n more requests than in scrape before: a request is
        observed right after its reply, so the last ones may show a moment later."""
        def timed():
            return (self.scrape().get("request_duration_seconds_count", op=op) -
                    before.get("request_duration_seconds_count", op=op))
        wait_until(lambda: timed() >= n, timeout=5)
        self.assertEqual(timed(), n, op)

    def assertMonotonic(self, scrapes):
        """No counter or histogram sample ever goes down from one scrape to the next."""
        for a, b in zip(scrapes, scrapes[1:]):
            ca, cb = a.counters(), b.counters()
            for key, v in ca.items():
                self.assertIn(key, cb)
                self.assertGreaterEqual(cb[key], v, key)

    def test_scrapes_during_a_workload(self):
        """Scrapes while blocks are written and read all parse (histograms consistent) and
        see the counters only grow."""
        os.mkdir(self.d)
        stop = threading.Event()
        scrapes, errors = [], []

        def scraper():
            try:
                while not stop.is_set():
                    scrapes.append(self.scrape())
            except BaseException as e:  # reported below
                errors.append(e)

        t = threading.Thread(target=scraper)
        t.start()
        try:
            for i in range(40):
                p = os.path.join(self.d, "w%d" % i)
                kvc.write_block(p, os.urandom(16 * KiB + i))
                kvc.read_block(p)
        finally:
            stop.set()
            t.join(30)
        self.assertFalse(errors, errors)
        self.assertGreater(len(scrapes), 1)
        self.assertMonotonic(scrapes)

    def test_health(self):
        status, headers, body = request(self.port, path="/health")
        self.assertEqual((status, body), (200, b"ok\n"))
        self.assertTrue(headers["content-type"].startswith("text/plain"))
        status, _, body = request(self.port, "HEAD", "/health")
        self.assertEqual((status, body), (200, b""))
        status, _, body = request(self.port, "HEAD", "/metrics")
        self.assertEqual((status, body), (200, b""))
        # a query string is not part of the path
        self.assertEqual(request(self.port, path="/health?x=1")[0], 200)

    def test_curl(self):
        """What an operator does: curl the endpoints; the body parses as Prometheus text."""
        if not shutil.which("curl"):
            self.skipTest("curl is not installed")
        url = "http://127.0.0.1:%d" % self.port
        r = subprocess.run(["curl", "-sS", "-f", "--max-time", "10", url + "/metrics"],
                           capture_output=True, timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        s = Scrape(r.stdout.decode("utf-8"))
        self.assertGreaterEqual(s.get("capacity_bytes", tier="dram"), 1)
        r = subprocess.run(["curl", "-sS", "-f", "--max-time", "10", url + "/health"],
                           capture_output=True, timeout=20)
        self.assertEqual((r.returncode, r.stdout), (0, b"ok\n"), r.stderr)
        r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                            "--max-time", "10", url + "/nope"], capture_output=True, timeout=20)
        self.assertEqual(r.stdout, b"404")

    def test_not_found_and_not_allowed(self):
        for path in ("/", "/metrics/", "/metricsx", "/healthz", "/nope"):
            self.assertEqual(request(self.port, path=path)[0], 404, path)
        for method in ("POST", "PUT", "DELETE", "OPTIONS"):
            for path in ("/metrics", "/health"):
                status, headers, _ = request(self.port, method, path,
                                             body=b"x" if method in ("POST", "PUT") else None)
                self.assertEqual(status, 405, "%s %s" % (method, path))
                self.assertEqual(headers.get("allow"), "GET, HEAD")
        self.assertEqual(request(self.port, "POST", "/nope", body=b"x")[0], 404)
        scrape(self.port)  # still serving

    def test_side_channel(self):
        os.mkdir(self.d)
        blocks = {"s0": os.urandom(5000), "s1": os.urandom(70000)}
        for n, data in blocks.items():
            kvc.write_block(os.path.join(self.d, n), data)
        s0 = self.scrape()
        r = kvc.run_ctl("lookup", self.d, "s0", "s1", "s2")
        self.assertEqual(r.returncode, 0, r.stderr)
        s1 = self.scrape()
        self.assertEqual(s1.get("side_lookups_total") - s0.get("side_lookups_total"), 1)

        fd = os.open(self.d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            pin = pin_blocks(fd, list(blocks))
            self.assertEqual(pin.pinned, 2)
            s2 = self.scrape()
            self.assertEqual(s2.get("side_pins"), 2)
            self.assertEqual(s2.get("reads_total", path="side") -
                             s1.get("reads_total", path="side"), 2)
            self.assertEqual(s2.get("read_bytes_total", path="side") -
                             s1.get("read_bytes_total", path="side"),
                             sum(len(d) for d in blocks.values()))
            self.assertEqual(s2.get("hits_total") - s1.get("hits_total"), 2)
            self.assertEqual(s2.get("reads_total", path="file"),
                             s1.get("reads_total", path="file"))

            data = os.urandom(3000)
            rid = reserve(fd, "c0", len(data))
            s3 = self.scrape()
            self.assertEqual(s3.get("side_reservations"), 1)
            commit(fd, rid, data)
            s4 = self.scrape()
        finally:
            os.close(fd)
        self.assertEqual(s4.get("side_reservations"), 0)
        self.assertEqual(s4.get("writes_total", path="side") -
                         s3.get("writes_total", path="side"), 1)
        self.assertEqual(s4.get("write_bytes_total", path="side") -
                         s3.get("write_bytes_total", path="side"), len(data))
        self.assertEqual(s4.get("write_bytes_total", path="file"),
                         s3.get("write_bytes_total", path="file"))
        self.assertEqual(s4.get("blocks", tier="dram") - s3.get("blocks", tier="dram"), 1)
        self.assertEqual(kvc.read_block(os.path.join(self.d, "c0")), data)
        # pins go with the descriptor (released asynchronously)
        self.assertTrue(wait_until(lambda: self.scrape().get("side_pins") == 0, timeout=5))


# --------------------------------------------------------------------------------------------
# Side-channel ioctls (fs/uapi/kvcachefs.h)

u32, s32, u64 = ctypes.c_uint32, ctypes.c_int32, ctypes.c_uint64
ABI_VERSION, MAGIC = 1, 0xCF


class Pinned(ctypes.Structure):
    _fields_ = [("pin", u64), ("offset", u64), ("length", u64), ("generation", u64),
                ("checksum", u64), ("error", s32), ("pad", u32)]


class Pin(ctypes.Structure):
    _fields_ = [("version", u32), ("flags", u32), ("count", u32), ("pinned", u32),
                ("suffix", ctypes.c_char * 16), ("names", ctypes.c_uint8 * 8192),
                ("out", Pinned * 128)]


class Reserve(ctypes.Structure):
    _fields_ = [("version", u32), ("mode", u32), ("length", u64), ("id", u64),
                ("offset", u64), ("name", ctypes.c_char * 256)]


class Commit(ctypes.Structure):
    _fields_ = [("version", u32), ("flags", u32), ("id", u64), ("src_addr", u64),
                ("generation", u64), ("checksum", u64)]


def iowr(nr, size):
    return (3 << 30) | (size << 16) | (MAGIC << 8) | nr


def pin_blocks(fd, names):
    a = Pin(version=ABI_VERSION, count=len(names))
    packed = b"".join(bytes([len(n)]) + n.encode() for n in names)
    ctypes.memmove(ctypes.addressof(a) + Pin.names.offset, packed, len(packed))
    fcntl.ioctl(fd, iowr(4, ctypes.sizeof(Pin)), a, True)
    return a


def reserve(fd, name, length):
    a = Reserve(version=ABI_VERSION, length=length, name=name.encode())
    fcntl.ioctl(fd, iowr(6, ctypes.sizeof(Reserve)), a, True)
    return a.id


def commit(fd, rid, data):
    buf = ctypes.create_string_buffer(data, len(data))
    a = Commit(version=ABI_VERSION, id=rid, src_addr=ctypes.addressof(buf))
    fcntl.ioctl(fd, iowr(7, ctypes.sizeof(Commit)), a, True)
    return a


# --------------------------------------------------------------------------------------------

class Addresses(kvc.TestCase):
    """Which --metrics values start a daemon, and which are refused at start."""

    def refused(self, spec, foreground=False, expect=None):
        """Start a daemon with --metrics spec; it must fail with one line "kvcachefs: ...",
        leaving no mount and no pool object behind. Returns that line."""
        mnt = tempfile.mkdtemp(prefix="kvc-itest-mnt-")
        self.addCleanup(os.rmdir, mnt)
        pool = "/dev/shm/kvc-itest-metrics-%d-%d" % (os.getpid(), free_port())
        args = ["--pool-size", "16M", "--pool-path", pool, "--metrics", spec]
        if foreground:
            args.append("-f")
        try:
            r, reports = kvc.run_daemon(args + [mnt], timeout=60)
        finally:
            if kvc.is_mounted(mnt):
                kvc.unmount(mnt)
                self.fail("kvcachefs --metrics %s mounted %s" % (spec, mnt))
        self.assertFalse(reports, "\n".join(reports))
        err = r.stderr.decode(errors="replace")
        self.assertNotEqual(r.returncode, 0, "--metrics %s was accepted" % spec)
        lines = err.splitlines()
        self.assertEqual(len(lines), 1, "--metrics %s: stderr %r" % (spec, err))
        self.assertTrue(lines[0].startswith("kvcachefs: "), lines[0])
        self.assertIn("--metrics", lines[0])
        if expect:
            self.assertIn(expect, lines[0])
        self.assertFalse(os.path.exists(pool), "the pool object was left behind")
        return lines[0]

    def test_bad_values_refused(self):
        for spec, expect in [("localhost:9464", "not an IPv4 address"),
                             ("9464", "expected IPv4:PORT"),
                             ("127.0.0.1", "expected IPv4:PORT"),
                             ("127.0.0.1:0", "bad port"),
                             ("127.0.0.1:70000", "bad port"),
                             ("127.0.0.1:http", "bad port"),
                             ("::1:9464", "brackets"),
                             ("[::1]", "bad port"),
                             ("[fe80::zz]:9464", "not an IPv6 address"),
                             ("", "expected IPv4:PORT")]:
            self.refused(spec, expect=expect)

    def test_busy_port_refused(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            for fg in (False, True):
                line = self.refused("127.0.0.1:%d" % port, foreground=fg,
                                    expect=os.strerror(errno.EADDRINUSE))
                self.assertIn(":%d" % port, line)

    def test_foreign_address_refused(self):
        # 192.0.2.0/24 is TEST-NET-1: never an address of this host
        self.refused("192.0.2.1:%d" % free_port(), expect=os.strerror(errno.EADDRNOTAVAIL))

    def test_any_address(self):
        port = free_port()
        Mount.for_test(self, "--metrics", "0.0.0.0:%d" % port)
        self.assertEqual(request(port, path="/health")[:3:2], (200, b"ok\n"))
        scrape(port)

    def test_ipv6(self):
        try:
            port = free_port(socket.AF_INET6, "::1")
        except OSError as e:
            self.skipTest("no IPv6 loopback here: %s" % e)
        Mount.for_test(self, "--metrics", "[::1]:%d" % port)
        self.assertEqual(request(port, path="/health", host="::1")[0], 200)
        scrape(port, host="::1")

    def test_stops_with_the_daemon(self):
        """The endpoint goes with the daemon, and its port is free for the next one."""
        port = free_port()
        m = Mount.for_test(self, "--metrics", "127.0.0.1:%d" % port)
        self.assertEqual(request(port, path="/health")[0], 200)
        m.shutdown()  # asserts a clean exit (and no sanitizer report)
        with self.assertRaises(ConnectionRefusedError):
            request(port, path="/health")
        m.restart()
        self.assertEqual(request(port, path="/health")[0], 200)


# --------------------------------------------------------------------------------------------
# Cluster: members, etcd state, blocks fetched from another node, transfer counters.

try:
    import test_cluster as tc
except ImportError:  # pragma: no cover
    tc = None


@unittest.skipIf(tc is None or not tc.ETCD, "etcd is not installed (Debian package etcd-server)")
class ClusterMetrics(tc.ClusterBase if tc else kvc.TestCase):
    def test_members_transfers_and_etcd(self):
        pa, pb = free_port(), free_port()
        a = self.join("--metrics", "127.0.0.1:%d" % pa)
        b = self.join("--metrics", "127.0.0.1:%d" % pb)
        self.wait_total(a, 2, timeout=5)
        self.wait_total(b, 2, timeout=5)
        ids = {}
        for m, port in ((a, pa), (b, pb)):
            s = scrape(port)
            self.assertEqual(s.get("cluster_members"), 2)
            self.assertEqual(s.get("etcd_connected"), 1)
            info = s.family("info").samples[0][1]
            self.assertEqual(info["cluster"], self.cluster)
            self.assertRegex(info["node"], r"^[0-9a-f]{16}$")
            ids[m] = info["node"]
            self.assertEqual(request(port, path="/health")[2], b"ok\n")
            for t in ("tcp", "rdma"):
                s.get("transfer_failures_total", transport=t)
                for d in ("read", "write"):
                    s.get("transfer_bytes_total", transport=t, direction=d)
            self.assertGreaterEqual(s.get("cluster_capacity_bytes"), 2 * 30 * MiB)
        self.assertNotEqual(ids[a], ids[b])

        data = os.urandom(256 * KiB + 5)
        kvc.write_block(a.path("blk"), data)
        sa0, sb0 = scrape(pa), scrape(pb)
        self.assertEqual(kvc.read_block(b.path("blk")), data)
        sa1, sb1 = scrape(pa), scrape(pb)
        self.assertEqual(sb1.get("reads_total", path="remote") -
                         sb0.get("reads_total", path="remote"), 1)
        self.assertEqual(sb1.get("read_bytes_total", path="remote") -
                         sb0.get("read_bytes_total", path="remote"), len(data))
        self.assertGreaterEqual(sb1.get("transfer_bytes_total", transport="tcp",
                                        direction="read") -
                                sb0.get("transfer_bytes_total", transport="tcp",
                                        direction="read"), len(data))
        self.assertGreaterEqual(sb1.get("peer_transfer_bytes_total", peer=ids[a],
                                        direction="read"), len(data))
        self.assertEqual(sb1.get("peer_transfer_transport", peer=ids[a], transport="tcp"), 1)
        self.assertGreaterEqual(sa1.get("transfer_served_bytes_total", transport="tcp") -
                                sa0.get("transfer_served_bytes_total", transport="tcp"),
                                len(data))
        self.assertEqual(sb1.get("transfer_bytes_total", transport="rdma", direction="read"),
                         0)  # no RDMA device on these machines

        # etcd down: the node goes on serving, /health says degraded (200), the gauge drops
        self.etcd.stop()
        try:
            self.assertTrue(wait_until(lambda: scrape(pa).get("etcd_connected") == 0,
                                       timeout=tc.TTL + 5, interval=0.2))
            status, _, body = request(pa, path="/health")
            self.assertEqual(status, 200)
            self.assertTrue(body.startswith(b"degraded: etcd unreachable"), body)
            self.assertEqual(scrape(pa).get("cluster_members"), 2)  # the last known
        finally:
            self.etcd.start()
        self.assertTrue(wait_until(lambda: scrape(pa).get("etcd_connected") == 1,
                                   timeout=tc.TTL + 5, interval=0.2))
        self.assertEqual(request(pa, path="/health")[2], b"ok\n")


if __name__ == "__main__":
    kvc.main()

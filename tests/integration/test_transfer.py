#!/usr/bin/env python3
"""The transfer engine end to end over loopback, through kvcache-xfer: transfers of every
size in both directions with their content checked, several clients at once, a server
killed or frozen in the middle of a long transfer (the client fails within its timeout and,
under the sanitizers, leaks nothing), authentication (a wrong secret is refused, bad secret
files are usage errors), a HELLO of another protocol version and garbage on the wire (the
connection is dropped, the server keeps serving), and transport detection (RDMA tests skip,
saying why, where there is no device).

kvcache-xfer's pattern is a function of (seed, offset): `write --pattern S` at [off, off+len)
followed by `read --verify --pattern S` of that range checks the bytes that went both ways;
the server starts out filled with its own --pattern, which a verified read of an untouched
range checks. No FUSE mount and no root needed.
"""

import atexit
import errno
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest

import kvc

XFER = os.path.join(kvc.BIN_DIR, "kvcache-xfer")
KiB, MiB = kvc.KiB, kvc.MiB

# Tests of one class share its server: they write only below PRISTINE, and what lies above
# keeps the server's pattern for the tests that read it.
SERVER_SIZE = 192 * MiB
PRISTINE = 96 * MiB
SERVER_SEED = 0x5EED
SECRET = b"kvcachefs-transfer-test-secret-0123456789"

# Sanitized programs run a few times slower: every bound on time scales with this.
SLOW = 3 if kvc.SANITIZE else 1
RUN_TIMEOUT = 120 * SLOW  # for one kvcache-xfer client run that should succeed
FAIL_TIMEOUT_MS = 2000  # the engine's request timeout in the failure tests
# kvcache-xfer gives up on the engine 5 s after the engine's own timeout; beyond that, slack
# for process start-up and exit (and the sanitizers' leak check at exit).
FAIL_BOUND = FAIL_TIMEOUT_MS / 1000 + 5 + 5 * SLOW

# engine/wire.h: the 32-byte frame header, little-endian.
WIRE_MAGIC = 0x4658564B
WIRE_VERSION = 1
WIRE_HELLO, WIRE_REJECT, WIRE_READ = 1, 5, 6
WIRE_HELLO_SIZE = 48
HDR = struct.Struct("<IHHIIQQ")  # magic, version, type, flags, body_len, req_id, arg

LISTENING = re.compile(r"^listening (\S+) segment (\d+) size (\d+)$")


def require_xfer():
    if not os.access(XFER, os.X_OK):
        raise RuntimeError("%s not found or not executable (set KVC_BIN_DIR)" % XFER)


def write_secret(path, data, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        kvc.write_all(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, mode)
    return path


def parse_addr(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def recv_exact(sock, n):
    """n bytes from sock, or fewer when the peer closed first."""
    out = b""
    while len(out) < n:
        b = sock.recv(n - len(out))
        if not b:
            break
        out += b
    return out


def closed_by_peer(sock, timeout):
    """True when the peer closes sock (EOF or reset) within timeout seconds; whatever bytes
    arrive before that are read and dropped."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


_live_servers = set()


@atexit.register
def _stop_leftover_servers():
    # a run interrupted before its cleanups ran: no server or directory stays behind
    for s in list(_live_servers):
        s.kill()
        s.remove_logdir()


class Server:
    """kvcache-xfer serve on 127.0.0.1, port chosen by the kernel, its stderr and sanitizer
    reports in a private directory."""

    def __init__(self, secret_file, size=SERVER_SIZE, seed=SERVER_SEED, args=()):
        self.cmd = [XFER, "serve", "--listen", "127.0.0.1:0", "--secret-file", secret_file,
                    "--size", str(size), "--pattern", str(seed)] + [str(a) for a in args]
        self.size = size
        self.seed = seed
        self.proc = None
        self.logdir = tempfile.mkdtemp(prefix="kvc-itest-xfer-")
        self.errpath = os.path.join(self.logdir, "stderr")
        self.addr = self.segment = None
        _live_servers.add(self)

    def remove_logdir(self):
        shutil.rmtree(self.logdir, ignore_errors=True)
        _live_servers.discard(self)

    def start(self, timeout=30 * SLOW):
        with open(self.errpath, "wb") as err:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=err,
                                         env=kvc.sanitizer_env(self.logdir))
        line = b""
        deadline = time.monotonic() + timeout
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                b = os.read(self.proc.stdout.fileno(), 1)
                if not b:
                    break
                line += b
        m = LISTENING.match(line.decode(errors="replace").strip())
        if not m:
            self.kill()
            self.proc.stdout.close()
            self.proc = None  # nothing left for stop()
            err = "\n".join([self.stderr()] + kvc.sanitizer_reports(self.logdir))
            self.remove_logdir()
            raise AssertionError("kvcache-xfer serve printed %r, not 'listening ADDR segment ID "
                                 "size SIZE'; stderr: %s" % (line, err))
        self.addr, self.segment = m.group(1), int(m.group(2))
        if int(m.group(3)) != self.size:
            raise AssertionError("serve reports size %s, asked for %d" % (m.group(3), self.size))
        return self

    def stderr(self):
        try:
            with open(self.errpath, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            self.proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
                self.proc.wait(timeout=30 * SLOW)

    def stop(self, expect_clean=True):
        """SIGTERM; it must exit 0 promptly, with no sanitizer report, unless the test killed
        it (expect_clean=False)."""
        problems = []
        try:
            if self.proc is None:
                return
            if self.alive():
                self.proc.send_signal(signal.SIGCONT)  # in case a test froze it
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10 * SLOW)
                except subprocess.TimeoutExpired:
                    problems.append("did not exit within %d s of SIGTERM" % (10 * SLOW))
                    self.proc.kill()
                    self.proc.wait()
                if expect_clean and self.proc.returncode != 0:
                    problems.append("exited %d after SIGTERM" % self.proc.returncode)
            elif expect_clean:
                problems.append("died during the test (status %s)" % self.proc.returncode)
            self.proc.stdout.close()
            if expect_clean:
                problems += ["sanitizer report:\n" + r for r in kvc.sanitizer_reports(self.logdir)]
            if problems:
                raise AssertionError("kvcache-xfer serve (%s): %s; stderr: %s"
                                     % (self.addr, "; ".join(problems), self.stderr()))
        finally:
            self.remove_logdir()


class XferTestCase(kvc.TestCase):
    """One server (SERVER_SIZE bytes of SERVER_SEED's pattern) shared by the class, secret
    files in a private directory, and helpers that run kvcache-xfer under the sanitizer
    options and check for reports after every run."""

    @classmethod
    def setUpClass(cls):
        require_xfer()
        cls.dir = tempfile.mkdtemp(prefix="kvc-itest-xfer-")
        cls.addClassCleanup(shutil.rmtree, cls.dir, True)
        cls.secret = write_secret(os.path.join(cls.dir, "secret"), SECRET + b"\n")
        cls.server = Server(cls.secret)
        cls.addClassCleanup(cls.server.stop)
        cls.server.start()

    def setUp(self):
        self.logdir = tempfile.mkdtemp(prefix="kvc-itest-xfer-log-")
        self.addCleanup(shutil.rmtree, self.logdir, True)

    def xfer_env(self):
        return kvc.sanitizer_env(self.logdir)

    def run_xfer(self, *args, timeout=RUN_TIMEOUT):
        """Run kvcache-xfer; the CompletedProcess (text). A sanitizer report fails the
        test."""
        r = subprocess.run([XFER] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout,
                           env=self.xfer_env())
        self.assertNoReports("kvcache-xfer %s" % " ".join(str(a) for a in args))
        return r

    def assertNoReports(self, what):
        reports = kvc.sanitizer_reports(self.logdir)
        if reports:
            self.fail("%s left sanitizer reports:\n%s" % (what, "\n".join(reports)))

    def client_args(self, op, offset, length, seed=None, verify=True, server=None,
                    secret=None, extra=()):
        s = server or self.server
        args = [op, "--peer", s.addr, "--secret-file", secret or self.secret,
                "--segment", s.segment, "--offset", offset, "--length", length]
        if seed is not None:
            args += ["--pattern", seed]
        if verify:
            args.append("--verify")
        return args + list(extra)

    def client(self, op, offset, length, **kw):
        timeout = kw.pop("timeout", RUN_TIMEOUT)
        return self.run_xfer(*self.client_args(op, offset, length, **kw), timeout=timeout)

    def assertOk(self, r, what=""):
        self.assertEqual(r.returncode, 0, "%s: exit %d\nstdout: %s\nstderr: %s"
                         % (what or " ".join(map(str, r.args[1:])), r.returncode, r.stdout,
                            r.stderr))
        self.assertEqual(len(r.stdout.splitlines()), 1, "one result line: %r" % r.stdout)

    def assertServes(self, server=None):
        """The server still answers a verified read of its own pattern."""
        s = server or self.server
        self.assertTrue(s.alive(), "kvcache-xfer serve died; stderr: %s" % s.stderr())
        r = self.client("read", s.size - 64 * KiB, 64 * KiB, seed=s.seed, server=s)
        self.assertOk(r, "a read after that")


class TestTransfers(XferTestCase):
    """Content through both directions, every size, one and many requests, many clients."""

    SIZES = (1, 64 * KiB, 2 * MiB, 16 * MiB, 64 * MiB + 1)

    def test_sizes_write_then_read(self):
        off = 4097  # unaligned on purpose; regions laid out one after the other
        for i, size in enumerate(self.SIZES):
            with self.subTest(size=size):
                seed = 1000 + i
                self.assertOk(self.client("write", off, size, seed=seed, verify=False))
                self.assertOk(self.client("read", off, size, seed=seed))
                # both ends of the range, on their own: the offsets are the remote ones
                self.assertOk(self.client("read", off, 1, seed=seed))
                self.assertOk(self.client("read", off + size - 1, 1, seed=seed))
            off += size + 4097
        self.assertLessEqual(off, PRISTINE)

    def test_sizes_read_pristine(self):
        # READ of the server's own content, no WRITE involved: its pattern from offset 0
        top = SERVER_SIZE - (64 * MiB + 1) - 3
        for size in self.SIZES:
            with self.subTest(size=size):
                self.assertOk(self.client("read", top, size, seed=SERVER_SEED))
        self.assertOk(self.client("read", PRISTINE, 64 * KiB, seed=SERVER_SEED))

    def test_verify_detects_other_content(self):
        # --verify is not a no-op: another seed's pattern differs, and says where
        r = self.client("read", PRISTINE, 64 * KiB, seed=SERVER_SEED + 1)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("differs", r.stderr)
        self.assertIn(str(PRISTINE), r.stderr)

    def test_write_verify_reads_back(self):
        r = self.client("write", 84 * MiB + 12345, 2 * MiB + 3, seed=77)
        self.assertOk(r)
        self.assertIn("verified", r.stdout)

    def test_batches(self):
        # one range cut into several requests submitted at once, sizes uneven
        base = 64 * MiB
        for size, batch in ((16 * MiB, 32), (2 * MiB + 3, 7), (64 * KiB, 64)):
            with self.subTest(size=size, batch=batch):
                seed = 5000 + batch
                self.assertOk(self.client("write", base, size, seed=seed, verify=False,
                                          extra=("--batch", batch)))
                self.assertOk(self.client("read", base, size, seed=seed,
                                          extra=("--batch", batch)))
                # the same bytes read as one request: the requests landed where they should
                self.assertOk(self.client("read", base, size, seed=seed))

    def test_repeat(self):
        r = self.client("read", PRISTINE, 2 * MiB, seed=SERVER_SEED, extra=("--repeat", 20))
        self.assertOk(r)
        self.assertIn("x 20", r.stdout)

    def test_concurrent_clients(self):
        # several client processes, each its own engine, against one server at once: each
        # writes its own region (with its own seed, in a batch) while others read the
        # server's pattern, then all check their region together.
        n, size = 6, 8 * MiB
        base = 20 * MiB

        def start(args):
            return subprocess.Popen([XFER] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=self.xfer_env())

        def finish(procs):
            for p in procs:
                try:
                    out, err = p.communicate(timeout=RUN_TIMEOUT)
                except subprocess.TimeoutExpired:
                    for q in procs:
                        q.kill()
                    self.fail("a client hangs: %s" % " ".join(map(str, p.args)))
                self.assertEqual(p.returncode, 0, "%s: exit %d: %s"
                                 % (" ".join(map(str, p.args[1:])), p.returncode, err))

        writers = [start(self.client_args("write", base + i * size, size, seed=7000 + i,
                                          verify=False, extra=("--batch", 8, "--repeat", 3)))
                   for i in range(n)]
        readers = [start(self.client_args("read", SERVER_SIZE - 16 * MiB, 16 * MiB,
                                          seed=SERVER_SEED, extra=("--repeat", 3)))
                   for _ in range(2)]
        finish(writers + readers)
        finish([start(self.client_args("read", base + i * size, size, seed=7000 + i,
                                       extra=("--batch", 4)))
                for i in range(n)])
        self.assertNoReports("concurrent clients")

    def test_outside_the_segment(self):
        r = self.client("read", SERVER_SIZE - 10, 100, verify=False)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("ERANGE", r.stderr)
        r = self.client("write", SERVER_SIZE, 1, verify=False)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("ERANGE", r.stderr)
        r = self.run_xfer("read", "--peer", self.server.addr, "--secret-file", self.secret,
                          "--segment", self.server.segment + 1000, "--length", 10)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("ENOENT", r.stderr)
        self.assertServes()


class TestAuthentication(XferTestCase):

    def test_wrong_secret_refused(self):
        other = write_secret(os.path.join(self.dir, "other"), b"not-the-cluster-secret-at-all")
        r = self.client("read", 0, 64 * KiB, verify=False, secret=other)
        self.assertEqual(r.returncode, 1, "stdout: %s stderr: %s" % (r.stdout, r.stderr))
        self.assertRegex(r.stderr, r"refused|EACCES")
        self.assertEqual(r.stdout, "")
        self.assertServes()

    def test_secret_trailing_newline_ignored(self):
        # the class secret file ends in "\n"; the same bytes without it are the same secret
        bare = write_secret(os.path.join(self.dir, "bare"), SECRET)
        self.assertOk(self.client("read", PRISTINE, 64 * KiB, seed=SERVER_SEED, secret=bare))

    def test_bad_secret_files(self):
        d = self.dir
        cases = {
            "too short": write_secret(os.path.join(d, "short"), b"0123456789abcde\n"),
            "world-readable": write_secret(os.path.join(d, "readable"), SECRET, mode=0o644),
            "empty": write_secret(os.path.join(d, "empty"), b""),
            "missing": os.path.join(d, "no-such-file"),
            "a directory": d,
        }
        for what, path in cases.items():
            with self.subTest(what, command="read"):
                r = self.client("read", 0, 1, verify=False, secret=path)
                self.assertEqual(r.returncode, 2, "%s: %s" % (what, r.stderr))
                self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
                self.assertIn(path, r.stderr)
            with self.subTest(what, command="serve"):
                r = self.run_xfer("serve", "--listen", "127.0.0.1:0", "--secret-file", path,
                                  "--size", "1M", timeout=30 * SLOW)
                self.assertEqual(r.returncode, 2, "%s: %s" % (what, r.stderr))
                self.assertNotIn("listening", r.stdout)
        r = self.client("read", 0, 1, verify=False, secret=cases["world-readable"])
        self.assertIn("readable", r.stderr)
        r = self.client("read", 0, 1, verify=False, secret=cases["too short"])
        self.assertIn("15 bytes", r.stderr)


class TestWire(XferTestCase):
    """Raw sockets against the server: it answers what it must, drops what it must, and
    serves others all along."""

    def connect(self):
        s = socket.create_connection(parse_addr(self.server.addr), timeout=10 * SLOW)
        self.addCleanup(s.close)
        return s

    def test_version_mismatch_rejected(self):
        s = self.connect()
        body = struct.pack("<Q32sII", 0x1234, os.urandom(32), 1, 0)
        self.assertEqual(len(body), WIRE_HELLO_SIZE)
        s.sendall(HDR.pack(WIRE_MAGIC, 2, WIRE_HELLO, 0, len(body), 0, 0) + body)
        reply = recv_exact(s, HDR.size)
        self.assertEqual(len(reply), HDR.size, "no REJECT before the close: %r" % reply)
        magic, version, typ, flags, body_len, _, arg = HDR.unpack(reply)
        self.assertEqual(magic, WIRE_MAGIC)
        self.assertEqual(typ, WIRE_REJECT, "frame type %d, expected REJECT" % typ)
        self.assertEqual(arg, errno.EPROTO)
        self.assertEqual((flags, body_len), (0, 0))
        self.assertTrue(closed_by_peer(s, 10 * SLOW), "still open after the REJECT")
        self.assertServes()

    def test_garbage_disconnected(self):
        frames = {
            "random bytes": os.urandom(4096),
            "bad magic": HDR.pack(0xDEADBEEF, WIRE_VERSION, WIRE_HELLO, 0, 48, 0, 0) + bytes(48),
            "unknown type": HDR.pack(WIRE_MAGIC, WIRE_VERSION, 200, 0, 0, 0, 0),
            "flags set": HDR.pack(WIRE_MAGIC, WIRE_VERSION, WIRE_HELLO, 1, 48, 0, 0) + bytes(48),
            "oversized HELLO": HDR.pack(WIRE_MAGIC, WIRE_VERSION, WIRE_HELLO, 0, 1 << 30, 0, 0),
            # a well-formed READ of the server's segment before any handshake
            "READ unauthenticated": HDR.pack(WIRE_MAGIC, WIRE_VERSION, WIRE_READ, 0, 24, 1, 0)
            + struct.pack("<IIQQ", self.server.segment, 0, 0, 4096),
        }
        for what, data in frames.items():
            with self.subTest(what):
                s = self.connect()
                s.sendall(data)
                # nothing of the segment may come back: at most a REJECT header
                got = b""
                s.settimeout(10 * SLOW)
                try:
                    while True:
                        b = s.recv(65536)
                        if not b:
                            break
                        got += b
                except (ConnectionResetError, BrokenPipeError):
                    pass
                except socket.timeout:
                    self.fail("%s: the connection is still open after %d s"
                              % (what, 10 * SLOW))
                self.assertLessEqual(len(got), HDR.size, "%s: %d bytes came back"
                                     % (what, len(got)))
                s.close()
                self.assertServes()

    def test_silent_connection_blocks_nobody(self):
        # a peer that connects and says nothing must not hold up the others
        silent = [self.connect() for _ in range(4)]
        self.assertServes()
        half = self.connect()
        half.sendall(HDR.pack(WIRE_MAGIC, WIRE_VERSION, WIRE_HELLO, 0, 48, 0, 0)[:20])
        self.assertServes()
        del silent

    def test_silent_connection_dropped(self):
        # one that never finishes its handshake does not hold a connection forever (a
        # server with a 1 s timeout: it must be gone well within 15 s)
        s = Server(self.secret, size=1 * MiB, args=("--timeout-ms", 1000))
        self.addCleanup(s.stop)
        s.start()
        for what, data in (("nothing", b""), ("half a HELLO", HDR.pack(
                WIRE_MAGIC, WIRE_VERSION, WIRE_HELLO, 0, 48, 0, 0) + bytes(10))):
            with self.subTest(what):
                c = socket.create_connection(parse_addr(s.addr), timeout=10)
                self.addCleanup(c.close)
                c.sendall(data)
                self.assertTrue(closed_by_peer(c, 15 * SLOW), "%s: still open" % what)
        self.assertServes(s)


class TestFailures(XferTestCase):
    """A peer that dies or stops answering in the middle of a long transfer fails the
    client's requests within the timeout: exit 1 with the reason, never a hang; under the
    sanitizers the client exits normally after the failure, so LeakSanitizer checks it."""

    def long_transfer(self, op, server):
        # far more than can finish before the test stops the server: 512 MiB per
        # thousand repetitions of a 16 MiB request, a million of them
        args = self.client_args(op, 0, 16 * MiB, verify=False, server=server,
                                extra=("--repeat", 1000000, "--timeout-ms", FAIL_TIMEOUT_MS))
        p = subprocess.Popen([XFER] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=self.xfer_env())
        self.addCleanup(self.reap, p)
        # let it get going: it must still be transferring a moment later
        time.sleep(1.0 * SLOW)
        if p.poll() is not None:
            out, err = p.communicate()
            self.fail("the client ended before the server was stopped (exit %d): %s %s"
                      % (p.returncode, out, err))
        return p

    @staticmethod
    def reap(p):
        if p.poll() is None:
            p.kill()
        p.communicate()

    def expect_failure(self, p, pattern):
        t0 = time.monotonic()
        try:
            out, err = p.communicate(timeout=FAIL_BOUND)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            self.fail("the client hangs: still running %.0f s after the server went away; "
                      "stderr: %s" % (FAIL_BOUND, err))
        took = time.monotonic() - t0
        self.assertEqual(p.returncode, 1, "exit %d (a signal is negative); stderr: %s"
                         % (p.returncode, err))
        self.assertRegex(err, pattern)
        self.assertEqual(out, "")
        self.assertNoReports("the client of a server that went away")
        return took

    def own_server(self):
        s = Server(self.secret, size=64 * MiB)
        self.addCleanup(s.stop, False)
        return s.start()

    def test_server_killed_during_reads(self):
        s = self.own_server()
        p = self.long_transfer("read", s)
        s.kill(signal.SIGKILL)
        self.expect_failure(p, r"(?i)failed|timed out|cancel|reset|refused")

    def test_server_killed_during_writes(self):
        s = self.own_server()
        p = self.long_transfer("write", s)
        s.kill(signal.SIGKILL)
        self.expect_failure(p, r"(?i)failed|timed out|cancel|reset|refused")

    def test_server_frozen_times_out(self):
        # SIGSTOP: its sockets stay open and nothing answers, so only the timeout can end
        # the client's requests
        s = self.own_server()
        p = self.long_transfer("read", s)
        s.kill(signal.SIGSTOP)
        try:
            took = self.expect_failure(p, r"(?i)timed out|XFER_TIMEDOUT")
        finally:
            s.kill(signal.SIGKILL)
        self.assertGreaterEqual(took, FAIL_TIMEOUT_MS / 1000 * 0.5,
                                "failed before its timeout could have passed")

    def test_client_killed_server_serves_on(self):
        # the other way round: clients vanishing mid-read and mid-write leave the server
        # with half-sent and half-received frames, and it must go on serving
        s = self.own_server()
        for op in ("read", "write"):
            with self.subTest(op):
                p = self.long_transfer(op, s)
                self.reap(p)
                self.assertServes(s)

    def test_nothing_listening(self):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        r = self.run_xfer("read", "--peer", "127.0.0.1:%d" % port, "--secret-file",
                          self.secret, "--segment", 1, "--length", 1)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("ECONNREFUSED", r.stderr)

    def test_sigterm_and_sigint_stop_cleanly(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with self.subTest(signal=sig.name):
                s = Server(self.secret, size=1 * MiB)
                try:
                    s.start()
                    self.assertServes(s)
                    s.proc.send_signal(sig)
                    s.proc.wait(timeout=10 * SLOW)
                    self.assertEqual(s.proc.returncode, 0, s.stderr())
                finally:
                    s.stop(expect_clean=False)


class TestCommandLine(XferTestCase):

    def test_usage_errors(self):
        base = ["--peer", self.server.addr, "--secret-file", self.secret]
        cases = {
            "no command": [],
            "unknown command": ["fetch"],
            "no length": ["read"] + base + ["--segment", 1],
            "no segment": ["read"] + base + ["--length", 1],
            "no peer": ["read", "--secret-file", self.secret, "--segment", 1, "--length", 1],
            "zero length": ["read"] + base + ["--segment", 1, "--length", 0],
            "bad size": ["read"] + base + ["--segment", 1, "--length", "12Q"],
            "batch above length": ["write"] + base + ["--segment", 1, "--length", 4,
                                                      "--batch", 5],
            "serve without size": ["serve", "--listen", "127.0.0.1:0", "--secret-file",
                                   self.secret],
            "unknown option": ["probe", "--frobnicate"],
            "stray argument": ["probe", "extra"],
            "bad transports": ["probe", "--transports", "carrier-pigeon"],
            "peer without port": ["read", "--peer", "127.0.0.1", "--secret-file", self.secret,
                                  "--segment", 1, "--length", 1],
            "peer port 0": ["read", "--peer", "127.0.0.1:0", "--secret-file", self.secret,
                            "--segment", 1, "--length", 1],
            "listen port too big": ["serve", "--listen", "127.0.0.1:65536", "--secret-file",
                                    self.secret, "--size", "1M"],
            "probe with a congestion control": ["probe", "--tcp-congestion", "reno"],
        }
        for what, args in cases.items():
            with self.subTest(what):
                r = self.run_xfer(*args)
                self.assertEqual(r.returncode, 2, "%s: exit %d: %s" % (what, r.returncode,
                                                                       r.stderr))
                self.assertTrue(r.stderr.strip(), "%s: no message" % what)

    def test_help_and_version(self):
        r = self.run_xfer("--help")
        self.assertEqual(r.returncode, 0)
        for word in ("serve", "read", "write", "probe", "--secret-file", "Exit status"):
            self.assertIn(word, r.stdout)
        r = self.run_xfer("read", "--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("usage", r.stdout)
        r = self.run_xfer("--version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^kvcache-xfer \d+\.\d+\.\d+ \(wire protocol version %d\)"
                         % WIRE_VERSION)


class TestTransports(XferTestCase):

    def probe(self):
        r = self.run_xfer("probe")
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.splitlines()

    def test_probe_lists_tcp(self):
        lines = self.probe()
        self.assertIn("tcp", lines)
        self.assertTrue(any(l == "rdma" or l.startswith("rdma: unavailable: ") for l in lines),
                        lines)

    def test_rdma_transfer(self):
        lines = self.probe()
        if "rdma" not in lines:
            why = next((l for l in lines if l.startswith("rdma")), "rdma: no answer")
            raise unittest.SkipTest("no RDMA device here (kvcache-xfer probe: %s)" % why)
        s = Server(self.secret, size=64 * MiB, args=("--transports", "rdma,tcp"))
        self.addCleanup(s.stop)
        s.start()
        for size in (1, 64 * KiB, 2 * MiB, 16 * MiB + 1):
            with self.subTest(size=size):
                rdma = ("--transports", "rdma")
                self.assertOk(self.client("write", 4097, size, seed=size, verify=False,
                                          server=s, extra=rdma))
                self.assertOk(self.client("read", 4097, size, seed=size, server=s, extra=rdma))

    def test_tcp_congestion(self):
        """--tcp-congestion: a transfer with reno on both ends (always built in and allowed);
        a congestion control this host does not have is refused with a message, exit 1."""
        s = Server(self.secret, size=4 * MiB, args=("--tcp-congestion", "reno"))
        self.addCleanup(s.stop)
        s.start()
        self.assertOk(self.client("write", 0, 2 * MiB, seed=7, server=s,
                                  extra=("--tcp-congestion", "reno")))
        self.assertOk(self.client("read", 0, 2 * MiB, seed=7, server=s,
                                  extra=("--tcp-congestion", "reno")))
        for args in (["serve", "--listen", "127.0.0.1:0", "--secret-file", self.secret,
                      "--size", "1M", "--tcp-congestion", "no_such_cc"],
                     self.client_args("read", 0, 4096, seed=SERVER_SEED,
                                      extra=("--tcp-congestion", "no_such_cc"))):
            with self.subTest(args[0]):
                r = self.run_xfer(*args)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertIn("--tcp-congestion no_such_cc: not available on this host",
                              r.stderr)

    def test_tcp_only(self):
        self.assertOk(self.client("read", PRISTINE, 2 * MiB, seed=SERVER_SEED,
                                  extra=("--transports", "tcp")))


if __name__ == "__main__":
    kvc.main()

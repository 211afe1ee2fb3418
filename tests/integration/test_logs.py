#!/usr/bin/env python3
"""The daemon's log (--log-level, --log-target): one line per notable event, "kvcachefs: LEVEL:
message" on stderr or "LEVEL: message" in syslog.

Daemons run with -f and their stderr in a file, at each level: the start (mount, recovery),
the stop with its reason (unmount, SIGTERM) and "stopped" last, nothing per block at info,
debug lines (side-channel ioctls, refused requests) only at debug, recovery warnings and a
corrupt block's error at warning level without the info lines; bad values refused at start
with one line; syslog through a datagram socket bound at /dev/log for the test (when no
syslog daemon owns it), for --log-target syslog and for auto after the daemon detached; an
eviction burst with a small pool; -o max_read=N honoured (it used to end the session right
after the mount). With a real etcd: members joining and leaving, etcd lost and back, a peer's
transfer connections lost (kill -9) and back (restart on the same address)."""

import errno
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import unittest

import kvc
from kvc import KiB, MiB, Mount, det_bytes, wait_until

LINE = re.compile(r"^kvcachefs: (error|warning|info|debug): \S")


def setUpModule():
    kvc.require_environment()


class FgDaemon:
    """kvcachefs -f on a fresh mountpoint (or mnt), its stderr in a file; a pool object of its
    own under /dev/shm. start() waits for the mount; stop() unmounts (or signals) and waits
    for the exit; kill9() crashes it; start() again runs a new daemon with the same
    arguments (its stderr in a new file). cleanup() removes everything."""

    def __init__(self, *args, mnt=None, pool_size="16M"):
        self.args = list(args)
        if pool_size and "--pool-size" not in self.args:
            self.args = ["--pool-size", pool_size] + self.args
        self.dir = tempfile.mkdtemp(prefix="kvc-itest-logs-")
        self.mnt = mnt or os.path.realpath(tempfile.mkdtemp(prefix="kvc-itest-mnt-"))
        self.own_mnt = mnt is None
        self.pool = "/dev/shm/kvc-itest-logs-%d-%s" % (os.getpid(), os.path.basename(self.dir))
        self.proc = None
        self.log = None
        self.runs = 0

    def start(self, *extra, wait=True, timeout=60):
        self.runs += 1
        self.log = os.path.join(self.dir, "stderr.%d" % self.runs)
        cmd = ([kvc.KVCACHEFS, "-f", "--pool-path", self.pool] + self.args + list(extra) +
               [self.mnt])
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err,
                                         env=kvc.sanitizer_env(self.dir))
        if wait and not wait_until(lambda: kvc.is_mounted(self.mnt) or
                                   self.proc.poll() is not None, timeout=timeout):
            raise AssertionError("kvcachefs -f did not mount within %d s: %r"
                                 % (timeout, self.text()))
        if wait and self.proc.poll() is not None:
            raise AssertionError("kvcachefs -f exited %d: %r" % (self.proc.returncode,
                                                                 self.text()))
        if wait:
            # the start lines follow the mount
            wait_until(lambda: "recovered " in self.text(), timeout=10)
        return self

    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def text(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode(errors="replace")
        except (TypeError, FileNotFoundError):
            return ""

    def lines(self):
        return self.text().splitlines()

    def wait_for(self, pattern, timeout=10):
        """The first line matching pattern (a regex) once there is one; AssertionError after
        timeout seconds."""
        rx = re.compile(pattern)

        def find():
            return next((ln for ln in self.lines() if rx.search(ln)), None)
        ln = wait_until(find, timeout=timeout, interval=0.1)
        if not ln:
            raise AssertionError("no line matching %r within %d s in:\n%s"
                                 % (pattern, timeout, self.text()))
        return ln

    def stop(self, sig=None, timeout=30):
        """Unmount (or send sig) and wait for the daemon to exit; returns its exit status."""
        if sig is None:
            kvc.unmount(self.mnt)
        else:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("kvcachefs -f did not exit: %r" % self.text())
        kvc.lazy_unmount(self.mnt)
        return rc

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        wait_until(lambda: kvc.process_gone(self.proc.pid), timeout=20)
        kvc.lazy_unmount(self.mnt)

    def sanitizer_reports(self):
        return kvc.sanitizer_reports(self.dir)

    def cleanup(self):
        if os.environ.get("KVC_TEST_SHOW_LOGS"):  # to read what the daemons said
            for k in range(1, self.runs + 1):
                with open(os.path.join(self.dir, "stderr.%d" % k), errors="replace") as f:
                    sys.stderr.write("\n--- %s, run %d:\n%s" % (self.mnt, k, f.read()))
        if self.proc and self.proc.poll() is None:
            kvc.unmount(self.mnt)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        kvc.lazy_unmount(self.mnt)
        kvc.remove_regular_file(self.pool)
        if self.own_mnt:
            try:
                os.rmdir(self.mnt)
            except OSError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


class LogCase(kvc.TestCase):
    def daemon(self, *args, **kw):
        d = FgDaemon(*args, **kw)
        self.addCleanup(d.cleanup)
        return d

    def assertWellFormed(self, lines):
        for ln in lines:
            self.assertRegex(ln, LINE, "not a log line")

    def assertClean(self, d):
        self.assertEqual(d.sanitizer_reports(), [])

    def workload(self, d, n=40):
        """Blocks written, read, listed and stat'ed; kvcachectl status."""
        for i in range(n):
            kvc.write_block(d.path("b%03d" % i), det_bytes("b%d" % i, 20 * KiB))
        for i in range(n):
            self.assertEqual(kvc.read_block(d.path("b%03d" % i)), det_bytes("b%d" % i, 20 * KiB))
        self.assertEqual(len(os.listdir(d.mnt)), n)
        r = kvc.run_ctl("status", d.mnt)
        self.assertEqual(r.returncode, 0, r.stderr)


class Levels(LogCase):
    def test_info_start_and_stop_and_nothing_per_block(self):
        d = self.daemon().start()
        self.workload(d)
        self.assertEqual(d.stop(), 0)
        lines = d.lines()
        self.assertWellFormed(lines)
        self.assertRegex(lines[0], r"^kvcachefs: info: mounted on %s: pool %s "
                         % (re.escape(d.mnt), re.escape(d.pool)))
        rec = [i for i, ln in enumerate(lines) if "info: recovered 0 blocks" in ln]
        stop = [i for i, ln in enumerate(lines) if "info: unmounting " + d.mnt in ln]
        self.assertEqual(len(rec), 1, lines)
        self.assertEqual(len(stop), 1, lines)
        # nothing while serving: no line per block, request or ioctl at info
        self.assertEqual(stop[0], rec[0] + 1, "lines while serving at info level: %s"
                         % lines[rec[0] + 1:stop[0]])
        self.assertIn("unmount requested", lines[stop[0]])
        self.assertEqual(lines[-1], "kvcachefs: info: stopped")
        self.assertFalse([ln for ln in lines if ": debug: " in ln], lines)
        self.assertClean(d)

    def test_sigterm_is_the_reason(self):
        d = self.daemon().start()
        self.assertEqual(d.stop(signal.SIGTERM), 0)
        lines = d.lines()
        self.assertWellFormed(lines)
        self.assertIn("kvcachefs: info: unmounting %s: SIGTERM received" % d.mnt, lines)
        self.assertEqual(lines[-1], "kvcachefs: info: stopped")
        self.assertFalse(kvc.is_mounted(d.mnt))

    def test_restart_reports_what_it_recovered(self):
        d = self.daemon().start()
        for i in range(5):
            kvc.write_block(d.path("r%d" % i), b"x" * 5000)
        self.assertEqual(d.stop(), 0)
        d.start()
        self.assertEqual(d.stop(signal.SIGINT), 0)
        self.assertRegex(d.text(), r"info: recovered 5 blocks \([^)]*\), 0 directories, "
                         r"0 dropped, in [\d.]+ ms")
        self.assertIn("SIGINT received", d.text())

    def test_debug_shows_ioctls_and_refused_requests(self):
        d = self.daemon("--log-level", "debug").start()
        kvc.write_block(d.path("blk"), b"y" * 4096)
        r = kvc.run_ctl("status", d.mnt)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertErrno(errno.EPERM, os.symlink, "blk", d.path("link"))
        self.assertErrno(errno.EPERM, os.open, d.path("blk"), os.O_WRONLY)
        d.wait_for(r"debug: ioctl STATUS on inode 1: ok")
        d.wait_for(r"debug: symlink link refused \(pid \d+, uid 0\): %s"
                   % re.escape(os.strerror(errno.EPERM)))
        d.wait_for(r"debug: open for writing of a sealed block refused")
        self.assertEqual(d.stop(), 0)
        lines = d.lines()
        self.assertWellFormed(lines)
        self.assertIn("kvcachefs: debug: FUSE mount options: fsname=kvcachefs,"
                      "subtype=kvcachefs,default_permissions", lines)
        self.assertIn("kvcachefs: info: stopped", lines)  # info lines too

    def test_info_hides_debug_lines(self):
        d = self.daemon().start()
        kvc.write_block(d.path("blk"), b"y" * 4096)
        kvc.run_ctl("status", d.mnt)
        self.assertErrno(errno.EPERM, os.symlink, "blk", d.path("link"))
        self.assertErrno(errno.EPERM, os.open, d.path("blk"), os.O_WRONLY)
        self.assertEqual(d.stop(), 0)
        self.assertNotIn("debug", d.text())
        self.assertNotIn("ioctl", d.text())

    def test_warning_level_keeps_recovery_warnings_and_errors_only(self):
        d = self.daemon().start()
        tag = det_bytes("tag", 6).hex()
        rec_victim, pay_victim = "record-victim-" + tag, "payload-victim-" + tag
        kvc.write_block(d.path(rec_victim), det_bytes(rec_victim, 50000))
        payload = det_bytes(pay_victim, 256 * KiB)
        kvc.write_block(d.path(pay_victim), payload)
        kvc.write_block(d.path("fine"), b"f" * 10000)
        self.assertEqual(d.stop(), 0)
        with open(d.pool, "r+b") as f:
            data = bytearray(f.read())
            at = data.find(rec_victim.encode())
            self.assertGreaterEqual(at, 0, "the record is not in the pool object")
            while at >= 0:  # a bit of the name in every copy: the record fails its check
                data[at + 3] ^= 0x01
                at = data.find(rec_victim.encode(), at + 1)
            at = data.find(payload[100000:100064])
            self.assertGreaterEqual(at, 0, "the payload is not in the pool object")
            data[at + 32] ^= 0xFF
            f.seek(0)
            f.write(data)
        d.start("--log-level", "warning")
        self.assertErrno(errno.EIO, kvc.read_block, d.path(pay_victim))
        self.assertEqual(kvc.read_block(d.path("fine")), b"f" * 10000)
        d.wait_for(r"^kvcachefs: error: block %s: its bytes in the pool do not match its "
                   r"checksum: dropped$" % pay_victim)
        self.assertEqual(d.stop(), 0)
        lines = d.lines()
        self.assertWellFormed(lines)
        warnings = [ln for ln in lines if ln.startswith("kvcachefs: warning: recovery: ")]
        errors = [ln for ln in lines if ln.startswith("kvcachefs: error: ")]
        self.assertGreaterEqual(len(warnings), 1, lines)
        self.assertEqual(len(errors), 1, lines)
        self.assertEqual(len(lines), len(warnings) + len(errors), lines)  # no info

    def test_error_level_is_silent_on_a_clean_run(self):
        d = self.daemon("--log-level", "error").start(wait=False)
        self.assertTrue(wait_until(lambda: kvc.is_mounted(d.mnt), timeout=30))
        self.workload(d, n=5)
        self.assertEqual(d.stop(), 0)
        self.assertEqual(d.text(), "")

    def test_bad_values_refused_with_one_line(self):
        mnt = tempfile.mkdtemp(prefix="kvc-itest-mnt-")
        self.addCleanup(os.rmdir, mnt)
        for args, words in ((["--log-level", "loud"], "--log-level: expected error, "
                             "warning, info or debug, got 'loud'"),
                            (["--log-level", "INFO"], "got 'INFO'"),
                            (["--log-target", "file"], "--log-target: expected auto, "
                             "stderr or syslog, got 'file'"),
                            (["--log-level"], "needs a value")):
            for fg in ([], ["-f"]):
                r, san = kvc.run_daemon(fg + args + ([mnt] if len(args) > 1 else []))
                err = r.stderr.decode(errors="replace")
                self.assertEqual(r.returncode, 2, err)
                self.assertEqual(len(err.splitlines()), 1, err)
                self.assertTrue(err.startswith("kvcachefs: error: "), err)
                self.assertIn(words, err)
                self.assertFalse(kvc.is_mounted(mnt))
                self.assertEqual(san, [])

    def test_help(self):
        r, _ = kvc.run_daemon(["--help"])
        out = r.stdout.decode()
        self.assertEqual(r.returncode, 0)
        self.assertRegex(out, r"--log-level LEVEL +error, warning, info \(default\) or debug")
        self.assertRegex(out, r"--log-target TARGET +auto \(default\), stderr or syslog")
        self.assertIn("max_read=BYTES", out)

    def test_daemonized_start_prints_nothing(self):
        m = Mount.for_test(self, "--log-level", "debug")
        r = m.try_restart()  # the first start's output is not kept: start again
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")


class Eviction(LogCase):
    def test_burst_is_one_line(self):
        d = self.daemon("--evict-high", "90", "--evict-low", "50").start()
        t0 = time.monotonic()
        for i in range(400):  # 25 MiB through a 16 MiB pool
            kvc.write_block(d.path("e%03d" % i), b"e" * (64 * KiB))
        line = d.wait_for(r"info: eviction burst in [\d.]+ ms: \d+ blocks evicted from DRAM "
                          r"\([\d.]+ MiB, \d+% of the pool\); pool \d+% used")
        n = int(re.search(r": (\d+) blocks", line).group(1))
        self.assertGreater(n, 64, line)  # 90% -> 50% of 16 MiB in 64 KiB blocks
        self.assertEqual(d.stop(), 0)
        bursts = [ln for ln in d.lines() if "eviction burst" in ln]
        # at most one line per 10 s
        self.assertLessEqual(len(bursts), 1 + int((time.monotonic() - t0) / 10), bursts)
        others = [ln for ln in d.lines() if "eviction" not in ln and
                  not re.search(r"info: (mounted on|recovered|unmounting|stopped)", ln)]
        self.assertEqual(others, [], "lines per block?")

    def test_burst_with_an_ssd_tier_says_what_was_demoted(self):
        ssd = os.path.join(kvc.disk_tempdir(self), "ssd.img")
        d = self.daemon("--evict-high", "90", "--evict-low", "50", "--ssd", ssd + ":64M").start()
        for i in range(400):
            kvc.write_block(d.path("s%03d" % i), b"s" * (64 * KiB))
        line = d.wait_for(r"info: eviction burst in [\d.]+ ms: \d+ blocks evicted from DRAM "
                          r"\(.*\), \d+ of them demoted to SSD, \d+ SSD copies dropped; pool "
                          r"\d+% used", timeout=20)
        self.assertGreater(int(re.search(r"(\d+) of them demoted", line).group(1)), 0, line)
        self.assertEqual(d.stop(), 0)
        self.assertRegex(d.text(), r"info: SSD tier: %s \([\d.]+ MiB\)" % re.escape(ssd))


class MaxRead(LogCase):
    """-o max_read=N: libfuse ends the session at INIT unless init() announces the same N;
    the daemon used to say "mounted" and exit at once."""

    def test_daemonized(self):
        m = Mount.for_test(self, "-o", "max_read=65536")
        self.assertIn("max_read=65536", kvc.mount_entry(m.mnt)[3])
        data = os.urandom(MiB + 123)
        kvc.write_block(m.path("big"), data)
        self.assertEqual(kvc.read_block(m.path("big")), data)
        with open(m.path("big"), "rb") as f:  # one large read, cut by the kernel
            self.assertEqual(f.read(), data)
        self.assertTrue(kvc.pid_alive(m.pid))
        self.assertTrue(kvc.is_mounted(m.mnt))

    def test_foreground_says_so(self):
        d = self.daemon("-o", "allow_other,max_read=131072").start()
        kvc.write_block(d.path("a"), b"a" * 300000)
        self.assertEqual(kvc.read_block(d.path("a")), b"a" * 300000)
        self.assertEqual(d.stop(), 0)
        self.assertIn("kvcachefs: info: FUSE reads of at most 131072 bytes (-o max_read)",
                      d.lines())
        self.assertNotIn("fuse:", d.text())
        self.assertIn("unmount requested", d.text())

    def test_bad_value_refused(self):
        mnt = tempfile.mkdtemp(prefix="kvc-itest-mnt-")
        self.addCleanup(os.rmdir, mnt)
        r, san = kvc.run_daemon(["-o", "max_read=64K", mnt])
        err = r.stderr.decode(errors="replace")
        self.assertEqual(r.returncode, 2, err)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn("kvcachefs: error: -o max_read: expected a number of bytes", err)
        self.assertEqual(san, [])


class SyslogSink:
    """A datagram socket bound at /dev/log (where syslog(3) sends) for the test's duration."""

    PATH = "/dev/log"

    def __init__(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.PATH)
        self.sock.setblocking(False)
        self.msgs = []

    def read(self):
        while True:
            try:
                self.msgs.append(self.sock.recv(65536).decode(errors="replace"))
            except BlockingIOError:
                return self.msgs

    def wait_for(self, pattern, timeout=10):
        rx = re.compile(pattern)
        found = wait_until(lambda: next((m for m in self.read() if rx.search(m)), None),
                           timeout=timeout, interval=0.1)
        if not found:
            raise AssertionError("no syslog message matching %r within %d s; got:\n%s"
                                 % (pattern, timeout, "\n".join(self.msgs[-30:])))
        return found

    def close(self):
        self.sock.close()
        try:
            os.unlink(self.PATH)
        except FileNotFoundError:
            pass


def stale_socket(path):
    """True when path is a socket nobody listens on (left by a test that was killed)."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(path)
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


class Syslog(LogCase):
    def setUp(self):
        if stale_socket(SyslogSink.PATH):
            os.unlink(SyslogSink.PATH)
        if os.path.exists(SyslogSink.PATH):
            self.skipTest("%s exists (a syslog daemon?): the test cannot read what the "
                          "daemon sends there" % SyslogSink.PATH)
        self.sink = SyslogSink()
        self.addCleanup(self.sink.close)

    def test_syslog_target_in_the_foreground(self):
        d = self.daemon("--log-target", "syslog").start(wait=False)
        self.assertTrue(wait_until(lambda: kvc.is_mounted(d.mnt), timeout=30))
        pid = d.proc.pid
        # facility daemon (3), level info (6): <30>
        self.sink.wait_for(r"^<30>.*kvcachefs\[%d\]: info: mounted on %s" % (pid, d.mnt))
        self.sink.wait_for(r"kvcachefs\[%d\]: info: recovered 0 blocks" % pid)
        self.assertEqual(d.stop(signal.SIGTERM), 0)
        self.sink.wait_for(r"kvcachefs\[%d\]: info: unmounting %s: SIGTERM received"
                           % (pid, d.mnt))
        self.sink.wait_for(r"kvcachefs\[%d\]: info: stopped" % pid)
        self.assertEqual(d.text(), "", "lines on stderr with --log-target syslog")

    def test_auto_goes_to_syslog_once_detached(self):
        m = Mount.for_test(self)
        self.assertTrue(m.pid)
        self.sink.wait_for(r"kvcachefs\[%d\]: info: mounted on %s" % (m.pid, m.mnt))
        pid = m.pid
        m.shutdown()
        self.sink.wait_for(r"kvcachefs\[%d\]: info: unmounting %s: unmount requested"
                           % (pid, m.mnt))
        self.sink.wait_for(r"kvcachefs\[%d\]: info: stopped" % pid)

    def test_refused_start_still_says_why_on_stderr(self):
        mnt = tempfile.mkdtemp(prefix="kvc-itest-mnt-")
        self.addCleanup(os.rmdir, mnt)
        r, san = kvc.run_daemon(["--log-target", "syslog", "--pool-size", "1T", mnt])
        err = r.stderr.decode(errors="replace")
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertRegex(err, r"^kvcachefs: error: --pool-size .* larger than physical memory")
        # error (3) of facility daemon: <27>
        self.sink.wait_for(r"^<27>.*kvcachefs\[\d+\]: error: --pool-size .* larger than "
                           r"physical memory")
        self.assertEqual(san, [])


# ---- a cluster ---------------------------------------------------------------------------

try:
    import test_cluster as tc
except ImportError:  # pragma: no cover
    tc = None


@unittest.skipUnless(tc and tc.ETCD, "etcd is not installed (Debian package etcd-server)")
class ClusterLogs(LogCase):
    @classmethod
    def setUpClass(cls):
        cls.etcd = tc.Etcd()
        cls.addClassCleanup(cls.etcd.cleanup)
        cls.etcd.start()
        cls.tmp = tempfile.mkdtemp(prefix="kvc-itest-logs-cluster-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cls.secret = os.path.join(cls.tmp, "secret")
        with open(cls.secret, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(cls.secret, 0o600)

    def setUp(self):
        self.cluster = "l%d" % (time.monotonic_ns() % 10**9)

    def node(self, node_id, port=None, extra=()):
        self.port = port or tc.free_port()
        return self.daemon("--etcd", self.etcd.url, "--cluster", self.cluster,
                           "--listen", "127.0.0.1:%d" % self.port, "--secret-file",
                           self.secret, "--node-id", node_id, *extra, pool_size="32M")

    def test_congestion_control_in_the_join_line(self):
        a = self.node("0xc1", extra=("--tcp-congestion", "reno")).start()
        a.wait_for(r"info: joined cluster %s as node 00000000000000c1, transfers on "
                   r"127\.0\.0\.1:\d+ \(TCP; TCP congestion control reno\), 1 member$"
                   % self.cluster)

    def test_members_join_and_leave(self):
        a = self.node("0xa1").start()
        a.wait_for(r"info: joined cluster %s as node 00000000000000a1, transfers on "
                   r"127\.0\.0\.1:\d+ \(TCP[^)]*\), 1 member$" % self.cluster)
        b = self.node("0xb2").start()
        baddr = "127.0.0.1:%d" % self.port
        b.wait_for(r"info: joined cluster %s as node 00000000000000b2, .*, 2 members$"
                   % self.cluster)
        a.wait_for(r"info: member 00000000000000b2 \(%s\) joined cluster %s$"
                   % (re.escape(baddr), self.cluster))
        self.assertEqual(b.stop(), 0)
        a.wait_for(r"info: member 00000000000000b2 \(%s\) left cluster %s$"
                   % (re.escape(baddr), self.cluster), timeout=5)
        self.assertEqual(a.stop(), 0)
        for d in (a, b):
            self.assertWellFormed(d.lines())
            self.assertClean(d)
        # b never saw a join or a leave: a was there before it
        self.assertFalse([ln for ln in b.lines() if "member 00000000000000a1" in ln],
                         b.lines())

    def test_etcd_lost_and_back(self):
        a = self.node("0xa3").start()
        a.wait_for(r"joined cluster")
        self.etcd.stop()
        try:
            a.wait_for(r"^kvcachefs: warning: etcd unreachable: the membership of cluster "
                       r"%s may be out of date \(1 member known\)" % self.cluster,
                       timeout=tc.TTL + 5)
            time.sleep(3)  # the keepalive and the watch keep failing: still one line
            self.assertEqual(len([ln for ln in a.lines() if "etcd unreachable" in ln]), 1,
                             a.lines())
        finally:
            self.etcd.start()
        a.wait_for(r"^kvcachefs: info: etcd reachable again: cluster %s has 1 member$"
                   % self.cluster, timeout=tc.TTL + 5)
        self.assertEqual(a.stop(), 0)
        self.assertWellFormed(a.lines())
        self.assertClean(a)

    def test_peer_lost_and_back(self):
        a = self.node("0xa5").start()
        b = self.node("0xb6").start()
        bport = self.port
        baddr = "127.0.0.1:%d" % bport
        a.wait_for(r"member 00000000000000b6 .* joined")
        # a reads a block that b holds: a opens its transfer connections to b
        data = os.urandom(200 * KiB)
        kvc.write_block(b.path("held-by-b"), data)
        self.assertTrue(wait_until(lambda: kvc.exists(a.path("held-by-b")), timeout=10))
        self.assertEqual(kvc.read_block(a.path("held-by-b")), data)
        b.kill9()
        a.wait_for(r"^kvcachefs: warning: node 00000000000000b6 \(%s\): transfer connection "
                   r"lost \(.*\), reconnecting$" % re.escape(baddr))
        a.wait_for(r"info: member 00000000000000b6 \(%s\) left cluster" % re.escape(baddr),
                   timeout=tc.TTL + 5)
        # b again on the same address: a's connections come back
        b.start(timeout=60)
        a.wait_for(r"^kvcachefs: info: node 00000000000000b6 \(%s\): transfer connections "
                   r"back$" % re.escape(baddr), timeout=20)
        a.wait_for(r"info: member 00000000000000b6 \(%s\) joined cluster" % re.escape(baddr))
        lost = [ln for ln in a.lines() if "transfer connection lost" in ln]
        self.assertEqual(len(lost), 1, "once per peer, not per connection: %s" % lost)
        self.assertEqual(b.stop(), 0)
        self.assertEqual(a.stop(), 0)
        self.assertWellFormed(a.lines())
        self.assertClean(a)


if __name__ == "__main__":
    kvc.main()

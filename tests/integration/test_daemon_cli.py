#!/usr/bin/env python3
"""kvcachefs command line: options, start-up errors, daemonizing, signals, unmount."""

import errno
import os
import shutil
import signal
import subprocess
import tempfile
import time

import kvc
from kvc import KiB, MiB, Mount, wait_until


def setUpModule():
    kvc.require_environment()


class HelpVersion(kvc.TestCase):
    def test_help(self):
        r, san = kvc.run_daemon(["--help"])
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout.decode()
        self.assertIn("usage", out.lower())
        for opt in ("--pool-size", "--max-block-size", "--evict-high", "--evict-low",
                    "--foreground", "MOUNTPOINT"):
            self.assertIn(opt, out)
        self.assertEqual(san, [])

    def test_short_help(self):
        r, _ = kvc.run_daemon(["-h"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("--pool-size", r.stdout.decode())

    def test_version(self):
        r, san = kvc.run_daemon(["--version"])
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout.decode()
        self.assertIn("kvcachefs", out)
        self.assertRegex(out, r"\d+\.\d+")
        self.assertEqual(san, [])


class StartupErrors(kvc.TestCase):
    """Every bad start: non-zero exit, one line on stderr starting with "kvcachefs: ",
    nothing mounted, no daemon left, no pool object left in /dev/shm."""

    def setUp(self):
        self.mnt = os.path.realpath(tempfile.mkdtemp(prefix="kvc-itest-cli-"))
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        if kvc.is_mounted(self.mnt):
            kvc.unmount(self.mnt)
        pid = kvc.find_daemon(self.mnt)
        if pid:
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.mnt, ignore_errors=True)

    def check_refused(self, args, mnt=None):
        mnt = self.mnt if mnt is None else mnt
        t0 = time.monotonic()
        r, san = kvc.run_daemon(list(args) + ([mnt] if mnt else []), timeout=60)
        elapsed = time.monotonic() - t0
        err = r.stderr.decode(errors="replace")
        self.assertNotEqual(r.returncode, 0, "kvcachefs %s succeeded; stderr: %s" % (
            " ".join(args), err))
        lines = err.strip().splitlines()
        self.assertEqual(len(lines), 1, "expected exactly one line on stderr, got: %r" % err)
        self.assertTrue(lines[0].startswith("kvcachefs: "),
                        "the error must start with 'kvcachefs: ': %r" % lines[0])
        self.assertLess(elapsed, 30)
        if mnt:
            self.assertFalse(kvc.is_mounted(mnt), "%s is mounted after a failed start" % mnt)
            self.assertIsNone(kvc.find_daemon(mnt), "a daemon is left running")
            self.assertEqual(kvc.shm_leftovers(mnt), [], "pool object left in /dev/shm")
        self.assertEqual(san, [], "sanitizer report:\n" + "\n".join(san))
        return lines[0]

    def test_unknown_option(self):
        self.check_refused(["--no-such-option"])

    def test_unknown_short_option(self):
        self.check_refused(["-Z"])

    def test_bad_pool_size(self):
        self.check_refused(["--pool-size", "12Q"])

    def test_bad_pool_size_junk(self):
        self.check_refused(["--pool-size", "lots"])

    def test_bad_max_block_size(self):
        self.check_refused(["--max-block-size", "12Q"])

    def test_missing_option_value(self):
        # the mountpoint would be taken as the value: give it as the last word anyway
        r, _ = kvc.run_daemon([self.mnt, "--pool-size"])
        self.assertNotEqual(r.returncode, 0)
        self.assertTrue(r.stderr.decode().startswith("kvcachefs: "), r.stderr)
        self.assertFalse(kvc.is_mounted(self.mnt))

    def test_evict_low_equal_high(self):
        self.check_refused(["--evict-high", "80", "--evict-low", "80"])

    def test_evict_low_above_high(self):
        self.check_refused(["--evict-high", "70", "--evict-low", "90"])

    def test_evict_low_above_default_high(self):
        # default --evict-high is 90
        self.check_refused(["--evict-low", "95"])

    def test_evict_high_not_a_percentage(self):
        self.check_refused(["--evict-high", "101"])

    def test_evict_high_junk(self):
        self.check_refused(["--evict-high", "ninety"])

    def test_missing_mountpoint_dir(self):
        missing = os.path.join(self.mnt, "does", "not", "exist")
        self.check_refused(["--pool-size", "16M"], mnt=missing)
        self.assertFalse(os.path.exists(missing), "the daemon must not create the mountpoint")
        self.assertFalse(kvc.is_mounted(self.mnt))

    def test_mountpoint_is_a_file(self):
        f = os.path.join(self.mnt, "file")
        with open(f, "w") as fh:
            fh.write("x")
        self.check_refused(["--pool-size", "16M"], mnt=f)
        self.assertFalse(kvc.is_mounted(f))

    def test_no_mountpoint_argument(self):
        self.check_refused(["--pool-size", "16M"], mnt="")

    def test_pool_larger_than_memory(self):
        self.check_refused(["--pool-size", "100T"])

    def test_bad_fuse_option(self):
        self.check_refused(["--pool-size", "16M", "-o", "no_such_fuse_option_kvc"])

    def test_second_daemon_on_same_mountpoint_is_refused(self):
        with Mount("--pool-size", "16M") as m:
            kvc.write_block(m.path("a"), b"first daemon")
            r, san = kvc.run_daemon(["--pool-size", "16M", m.mnt])
            self.assertNotEqual(r.returncode, 0, "a second daemon mounted over the first")
            lines = r.stderr.decode().strip().splitlines()
            self.assertEqual(len(lines), 1, r.stderr)
            self.assertTrue(lines[0].startswith("kvcachefs: "), lines[0])
            self.assertEqual(san, [])
            # exactly one kvcachefs mount there, and it still works
            n = sum(1 for e in kvc.mount_entries() if e[1] == m.mnt)
            self.assertEqual(n, 1)
            self.assertEqual(kvc.read_block(m.path("a")), b"first daemon")

    def test_second_daemon_with_its_own_pool_is_refused(self):
        """Another pool object does not make a second mount over a live one acceptable."""
        with Mount("--pool-size", "16M") as m:
            kvc.write_block(m.path("a"), b"first daemon")
            pool = "/dev/shm/kvc-itest-second-%d" % os.getpid()
            try:
                r, san = kvc.run_daemon(["--pool-size", "16M", "--pool-path", pool, m.mnt])
                self.assertNotEqual(r.returncode, 0, "a second daemon mounted over the first")
                lines = r.stderr.decode().strip().splitlines()
                self.assertEqual(len(lines), 1, r.stderr)
                self.assertIn("already mounted", lines[0])
                self.assertEqual(san, [])
                self.assertFalse(os.path.exists(pool), "the refused daemon made a pool")
            finally:
                if os.path.exists(pool):
                    os.unlink(pool)
            n = sum(1 for e in kvc.mount_entries() if e[1] == m.mnt)
            self.assertEqual(n, 1)
            self.assertEqual(kvc.read_block(m.path("a")), b"first daemon")


class MountLifecycle(kvc.TestCase):
    def assertPoolKept(self, mnt):
        """A stopped daemon leaves its pool object (the next start recovers the blocks):
        exactly one, removed here."""
        left = kvc.shm_leftovers(mnt)
        self.assertEqual(len(left), 1, "pool objects in /dev/shm: %s" % left)
        os.unlink(os.path.join("/dev/shm", left[0]))

    def test_mount_is_ready_when_command_returns(self):
        m = Mount.for_test(self, "--pool-size", "16M")
        # Mount.start already checked /proc/mounts right after the exit; the fs must answer
        e = kvc.mount_entry(m.mnt)
        self.assertIn("fuse", e[2])
        self.assertEqual(os.listdir(m.mnt), [])
        st = os.statvfs(m.mnt)
        self.assertGreater(st.f_blocks, 0)

    def test_fusermount_u_stops_daemon(self):
        m = Mount.for_test(self, "--pool-size", "16M")
        kvc.write_block(m.path("x"), b"x" * 5000)
        pid = m.pid
        r = subprocess.run(["fusermount3", "-u", m.mnt], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(kvc.is_mounted(m.mnt))
        self.assertTrue(wait_until(lambda: not kvc.pid_alive(pid), timeout=10),
                        "the daemon did not exit after fusermount3 -u")
        self.assertPoolKept(m.mnt)
        m.pid = None  # it exited on purpose
        m.stop()

    def _signal_test(self, sig):
        m = Mount.for_test(self, "--pool-size", "16M")
        kvc.write_block(m.path("x"), b"y" * 100)
        pid = m.pid
        os.kill(pid, sig)
        self.assertTrue(wait_until(lambda: not kvc.is_mounted(m.mnt), timeout=5),
                        "still mounted 5 s after signal %d" % sig)
        self.assertTrue(wait_until(lambda: not kvc.pid_alive(pid), timeout=10),
                        "the daemon did not exit after signal %d" % sig)
        self.assertPoolKept(m.mnt)
        m.pid = None
        m.stop()

    def test_sigterm_unmounts(self):
        self._signal_test(signal.SIGTERM)

    def test_sigint_unmounts(self):
        self._signal_test(signal.SIGINT)

    def _foreground(self, stop):
        mnt = os.path.realpath(tempfile.mkdtemp(prefix="kvc-itest-fg-"))
        logdir = tempfile.mkdtemp(prefix="kvc-itest-log-")
        out = tempfile.TemporaryFile()
        proc = subprocess.Popen([kvc.KVCACHEFS, "-f", "--pool-size", "16M", mnt],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env=kvc.sanitizer_env(logdir))

        def cleanup():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if kvc.is_mounted(mnt):
                kvc.unmount(mnt)
            for name in kvc.shm_leftovers(mnt):
                os.unlink(os.path.join("/dev/shm", name))
            shutil.rmtree(mnt, ignore_errors=True)
            shutil.rmtree(logdir, ignore_errors=True)
            out.close()
        self.addCleanup(cleanup)

        def log():
            out.seek(0)
            return out.read().decode(errors="replace")

        self.assertTrue(wait_until(lambda: kvc.is_mounted(mnt) or proc.poll() is not None,
                                   timeout=20), "not mounted after 20 s")
        self.assertIsNone(proc.poll(), "kvcachefs -f exited (%s): %s" % (proc.returncode,
                                                                         log()))
        self.assertTrue(kvc.is_mounted(mnt))
        kvc.write_block(os.path.join(mnt, "blk"), b"foreground")
        self.assertEqual(kvc.read_block(os.path.join(mnt, "blk")), b"foreground")
        # still our child: it did not daemonize
        self.assertIsNone(proc.poll())
        stop(proc, mnt)
        try:
            rc = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.fail("kvcachefs -f did not exit: %s" % log())
        self.assertEqual(rc, 0, "exit status %d; output: %s" % (rc, log()))
        self.assertTrue(wait_until(lambda: not kvc.is_mounted(mnt), timeout=5))
        self.assertPoolKept(mnt)
        san = kvc.sanitizer_reports(logdir)
        self.assertEqual(san, [], "\n".join(san))

    def test_foreground_sigterm(self):
        self._foreground(lambda proc, mnt: proc.send_signal(signal.SIGTERM))

    def test_foreground_sigint(self):
        self._foreground(lambda proc, mnt: proc.send_signal(signal.SIGINT))

    def test_foreground_fusermount(self):
        def stop(proc, mnt):
            r = subprocess.run(["fusermount3", "-u", mnt], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
        self._foreground(stop)

    def test_fuse_option_is_passed(self):
        m = Mount.for_test(self, "--pool-size", "16M", "-o", "allow_other")
        e = kvc.mount_entry(m.mnt)
        self.assertIn("allow_other", e[3].split(","), e)


class Sizes(kvc.TestCase):
    def _capacity_ok(self, m, size):
        st = m.status()
        self.assertLessEqual(st["capacity"], size)
        self.assertGreaterEqual(st["capacity"], size * 0.95, st)
        vfs = os.statvfs(m.mnt)
        self.assertAlmostEqual(vfs.f_blocks * vfs.f_frsize, size, delta=size * 0.05)

    def test_default_pool_and_block_size(self):
        m = Mount.for_test(self, pool_size=None)
        self._capacity_ok(m, 1 << 30)
        p = m.path("big")
        fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            self.assertEqual(os.pwrite(fd, b"z", 64 * MiB - 1), 1)
            self.assertErrno(errno.EFBIG, os.pwrite, fd, b"z", 64 * MiB)
        finally:
            os.close(fd)
        self.assertEqual(os.stat(p).st_size, 64 * MiB)
        st = m.status()
        if "evict_high_pct" in st:
            self.assertEqual((st["evict_high_pct"], st["evict_low_pct"]), (90, 80))
        if "max_block_size" in st:
            self.assertEqual(st["max_block_size"], 64 * MiB)

    def test_size_suffixes(self):
        m = Mount.for_test(self, "--pool-size", "32768K", "--max-block-size", "512K")
        self._capacity_ok(m, 32 * MiB)
        p = m.path("b")
        fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            self.assertEqual(kvc.write_all(fd, b"q" * (512 * KiB)), 512 * KiB)
            self.assertErrno(errno.EFBIG, os.pwrite, fd, b"q", 512 * KiB)
        finally:
            os.close(fd)
        self.assertEqual(os.stat(p).st_size, 512 * KiB)

    def test_size_with_g_suffix(self):
        m = Mount.for_test(self, "--pool-size", "1G", "--max-block-size", "2M")
        self._capacity_ok(m, 1 << 30)


if __name__ == "__main__":
    kvc.main()

#!/usr/bin/env python3
"""Inspection: stat sizes and times, statvfs/df, user.kvcachefs.* xattrs, refused operations
(xattr changes, links), and kvcachectl status."""

import errno
import json
import os
import subprocess
import time

import kvc
from kvc import KiB, MiB, Mount, wait_until


def setUpModule():
    kvc.require_environment()


class StatTimes(kvc.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.m = Mount.for_class(cls, "--pool-size", "32M")

    def test_exact_sizes(self):
        for n in (0, 1, 4095, 4096, 4097, 123457):
            p = self.m.path("size%d" % n)
            kvc.write_block(p, os.urandom(n))
            st = os.stat(p)
            self.assertEqual(st.st_size, n)
            self.assertTrue(st.st_mode & 0o170000 == 0o100000)
        self.assertEqual({e.name: e.stat().st_size for e in os.scandir(self.m.mnt)
                          if e.name.startswith("size")},
                         {"size%d" % n: n for n in (0, 1, 4095, 4096, 4097, 123457)})

    def test_mtime_is_seal_time(self):
        p = self.m.path("mt")
        fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"x" * 100)
            time.sleep(1.5)
            t0 = time.time()
        finally:
            os.close(fd)
        t1 = time.time()
        mtime = os.stat(p).st_mtime
        # the seal (close), not the create or the last write (1.5 s earlier)
        self.assertGreaterEqual(mtime, t0 - 0.5, "mtime %.3f is before the seal %.3f" % (mtime, t0))
        self.assertLessEqual(mtime, t1 + 0.5)

    def test_atime_updated_by_read(self):
        p = self.m.path("at")
        kvc.write_block(p, b"z" * 10000)
        before = os.stat(p).st_atime
        la_before = kvc.xattr(p, "last_access")
        time.sleep(1.1)
        t0 = time.time()
        fd = os.open(p, os.O_RDONLY)
        try:
            self.assertEqual(len(os.read(fd, 20000)), 10000)
        finally:
            os.close(fd)
        # xattrs are not cached by the kernel: at once
        la = float(kvc.xattr(p, "last_access").decode())
        self.assertGreater(la, float(la_before.decode()))
        self.assertGreaterEqual(la, t0 - 1)
        # attributes may be cached by the kernel for up to a second
        ok = wait_until(lambda: os.stat(p).st_atime > before, timeout=3)
        self.assertTrue(ok, "st_atime %.3f not later than %.3f after a read"
                        % (os.stat(p).st_atime, before))
        self.assertGreaterEqual(os.stat(p).st_atime, t0 - 1)
        self.assertLessEqual(os.stat(p).st_atime, time.time() + 1)

    def test_atime_not_before_mtime(self):
        p = self.m.path("am")
        kvc.write_block(p, b"q")
        st = os.stat(p)
        self.assertGreaterEqual(st.st_atime + 1, st.st_mtime)


class Statvfs(kvc.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.m = Mount.for_class(cls, "--pool-size", "32M")

    def test_capacity(self):
        st = os.statvfs(self.m.mnt)
        total = st.f_blocks * st.f_frsize
        self.assertAlmostEqual(total, 32 * MiB, delta=32 * MiB * 0.05)
        self.assertLessEqual(st.f_bfree, st.f_blocks)
        self.assertLessEqual(st.f_bavail, st.f_bfree)
        self.assertGreaterEqual(st.f_namemax, 255)

    def test_used_and_free_follow_writes(self):
        def free():
            st = os.statvfs(self.m.mnt)
            return st.f_bfree * st.f_frsize, st.f_bavail * st.f_frsize
        f0, a0 = free()
        kvc.write_block(self.m.path("df1"), os.urandom(4 * MiB))
        f1, a1 = free()
        self.assertLessEqual(f1, f0 - 4 * MiB)
        self.assertLessEqual(a1, a0 - 4 * MiB)
        self.assertGreater(f1, f0 - 5 * MiB)
        os.unlink(self.m.path("df1"))
        self.assertTrue(wait_until(lambda: free()[0] >= f0, timeout=5),
                        "free space did not come back after unlink")

    def test_df(self):
        r = subprocess.run(["df", "-B1", self.m.mnt], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        line = r.stdout.strip().splitlines()[-1].split()
        total = int(line[1])
        self.assertAlmostEqual(total, 32 * MiB, delta=32 * MiB * 0.05)

    def test_statvfs_matches_status(self):
        st = self.m.status()
        vfs = os.statvfs(self.m.mnt)
        self.assertAlmostEqual(vfs.f_blocks * vfs.f_frsize, st["capacity"], delta=64 * KiB)
        self.assertAlmostEqual(vfs.f_bfree * vfs.f_frsize, st["free"], delta=64 * KiB)


class Xattrs(kvc.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.m = Mount.for_class(cls, "--pool-size", "32M")
        cls.f = cls.m.path("blk")
        kvc.write_block(cls.f, b"xattr block" * 100)

    def test_list(self):
        names = os.listxattr(self.f)
        for n in kvc.XATTR_NAMES:
            self.assertIn(n, names)

    def test_values_of_a_closed_block(self):
        x = kvc.xattrs(self.f)
        self.assertEqual(x["user.kvcachefs.tier"], b"dram")
        self.assertEqual(x["user.kvcachefs.state"], b"sealed")
        self.assertEqual(x["user.kvcachefs.refs"], b"0")
        la = x["user.kvcachefs.last_access"].decode()
        self.assertRegex(la, r"^\d+\.\d{9}$")
        self.assertLess(abs(float(la) - time.time()), 600)

    def test_refs_counts_open_handles(self):
        self.assertEqual(kvc.xattr(self.f, "refs"), b"0")
        fd1 = os.open(self.f, os.O_RDONLY)
        try:
            self.assertEqual(kvc.xattr(self.f, "refs"), b"1")
            fd2 = os.open(self.f, os.O_RDONLY)
            try:
                self.assertEqual(kvc.xattr(self.f, "refs"), b"2")
            finally:
                os.close(fd2)
            self.assertTrue(wait_until(lambda: kvc.xattr(self.f, "refs") == b"1", timeout=2))
        finally:
            os.close(fd1)
        # release is asynchronous in FUSE: allow a moment
        self.assertTrue(wait_until(lambda: kvc.xattr(self.f, "refs") == b"0", timeout=2),
                        "refs is %r after the last close" % kvc.xattr(self.f, "refs"))

    def test_state_while_writing(self):
        p = self.m.path("w")
        fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"abc")
            x = kvc.xattrs(p)
            self.assertEqual(x["user.kvcachefs.state"], b"writing")
            self.assertEqual(x["user.kvcachefs.tier"], b"dram")
        finally:
            os.close(fd)
        self.assertEqual(kvc.xattr(p, "state"), b"sealed")

    def test_getfattr(self):
        r = subprocess.run(["getfattr", "-d", "-m", "user.kvcachefs", self.f],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('user.kvcachefs.tier="dram"', r.stdout)
        self.assertIn('user.kvcachefs.state="sealed"', r.stdout)
        self.assertRegex(r.stdout, r'user\.kvcachefs\.refs="\d+"')
        self.assertRegex(r.stdout, r'user\.kvcachefs\.last_access="\d+\.\d+"')

    def test_setxattr_of_kvcachefs_names_eperm(self):
        for n in kvc.XATTR_NAMES:
            with self.subTest(name=n):
                self.assertErrno(errno.EPERM, os.setxattr, self.f, n, b"1")
                self.assertErrno(errno.EPERM, os.setxattr, self.f, n, b"dram",
                                 os.XATTR_REPLACE)
        self.assertEqual(kvc.xattr(self.f, "tier"), b"dram")
        self.assertEqual(kvc.xattr(self.f, "state"), b"sealed")

    def test_setxattr_other_name_refused(self):
        self.assertErrno((errno.ENOTSUP, errno.EPERM), os.setxattr, self.f, "user.other",
                         b"v")
        self.assertErrno((errno.ENOTSUP, errno.EPERM), os.setxattr, self.f,
                         "user.kvcachefs.newname", b"v")
        self.assertNotIn("user.other", os.listxattr(self.f))

    def test_getxattr_unknown_name(self):
        self.assertErrno((errno.ENODATA, errno.ENOTSUP), os.getxattr, self.f, "user.other")
        self.assertErrno((errno.ENODATA, errno.ENOTSUP), os.getxattr, self.f,
                         "user.kvcachefs.nope")

    def test_removexattr_eperm(self):
        for n in kvc.XATTR_NAMES:
            with self.subTest(name=n):
                self.assertErrno(errno.EPERM, os.removexattr, self.f, n)
        self.assertEqual(set(kvc.XATTR_NAMES) - set(os.listxattr(self.f)), set())

    def test_symlink_eperm(self):
        self.assertErrno(errno.EPERM, os.symlink, "blk", self.m.path("sym"))
        self.assertErrno(errno.EPERM, os.symlink, "/etc/passwd", self.m.path("sym2"))
        self.assertFalse(os.path.lexists(self.m.path("sym")))

    def test_hard_link_eperm(self):
        self.assertErrno(errno.EPERM, os.link, self.f, self.m.path("hard"))
        self.assertFalse(os.path.lexists(self.m.path("hard")))
        self.assertEqual(os.stat(self.f).st_nlink, 1)

    def test_mknod_eperm(self):
        self.assertErrno(errno.EPERM, os.mkfifo, self.m.path("fifo"))
        self.assertFalse(os.path.lexists(self.m.path("fifo")))


class Nodes(kvc.TestCase):
    """kvcachectl nodes on a single-node daemon: itself only, and clear errors."""

    @classmethod
    def setUpClass(cls):
        cls.m = Mount.for_class(cls, "--pool-size", "32M")

    def test_single_node(self):
        kvc.write_block(self.m.path("n1"), b"x" * 10000)
        r = kvc.run_ctl("nodes", "--json", self.m.mnt)
        self.assertEqual(r.returncode, 0, r.stderr)
        j = json.loads(r.stdout)
        self.assertEqual((j["cluster"], j["total"], len(j["nodes"])), ("", 1, 1))
        n = j["nodes"][0]
        self.assertTrue(n["self"])
        self.assertEqual(n["state"], "up")
        st = kvc.ctl_status_json(self.m.mnt)
        self.assertEqual(n["pool_size"], st["capacity"])
        self.assertEqual(n["pool_used"], st["used"])
        self.assertFalse(st["cluster"])
        self.assertEqual((st["members"], st["cluster_capacity"]), (1, st["capacity"]))
        r = kvc.run_ctl("nodes", self.m.mnt)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("single node", r.stdout)
        self.assertIn("(this node)", r.stdout)

    def test_errors(self):
        r = kvc.run_ctl("nodes")
        self.assertEqual(r.returncode, 2)
        self.assertIn("missing MOUNTPOINT", r.stderr)
        r = kvc.run_ctl("nodes", "/")
        self.assertEqual(r.returncode, 1)
        self.assertIn("not a kvcachefs mount", r.stderr)
        r = kvc.run_ctl("nodes", "--bogus", self.m.mnt)
        self.assertEqual(r.returncode, 2)


class Status(kvc.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.m = Mount.for_class(cls, "--pool-size", "32M")

    KEYS = ("capacity", "used", "free", "blocks", "directories", "reads", "writes", "hits",
            "misses", "evictions")

    def test_json_keys(self):
        st = self.m.status()
        self.assertIsInstance(st, dict)
        for k in self.KEYS:
            self.assertIn(k, st)
            self.assertIsInstance(st[k], int, k)
            self.assertGreaterEqual(st[k], 0, k)
        self.assertEqual(st["capacity"], st["used"] + st["free"])
        self.assertAlmostEqual(st["capacity"], 32 * MiB, delta=32 * MiB * 0.05)

    def test_json_is_one_object(self):
        r = kvc.run_ctl("status", "--json", self.m.mnt)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(r.stdout.strip().splitlines()), 1, r.stdout)
        self.assertIsInstance(json.loads(r.stdout), dict)

    def test_text(self):
        r = kvc.run_ctl("status", self.m.mnt)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.strip())
        self.assertRegex(r.stdout, r"\d")
        with self.assertRaises(ValueError):
            json.loads(r.stdout)

    def test_counts_match(self):
        base = self.m.status()
        os.makedirs(self.m.path("cnt", "a", "b"))
        os.mkdir(self.m.path("cnt", "c"))
        for n in ("x", "y"):
            kvc.write_block(self.m.path("cnt", n), b"1")
        kvc.write_block(self.m.path("cnt", "a", "b", "z"), b"22")
        kvc.write_block(self.m.path("cnt", "c", "w"), b"")
        st = self.m.status()
        self.assertEqual(st["directories"] - base["directories"], 4)
        self.assertEqual(st["blocks"] - base["blocks"], 4)
        # a block being written is not a (sealed) block
        fd = os.open(self.m.path("cnt", "open"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"w")
            st2 = self.m.status()
            self.assertEqual(st2["blocks"], st["blocks"])
            if "writing" in st2:
                self.assertEqual(st2["writing"] - base.get("writing", 0), 1)
        finally:
            os.close(fd)
        self.assertEqual(self.m.status()["blocks"], st["blocks"] + 1)
        os.unlink(self.m.path("cnt", "a", "b", "z"))
        os.rmdir(self.m.path("cnt", "a", "b"))
        st3 = self.m.status()
        self.assertEqual(st3["directories"] - base["directories"], 3)
        self.assertEqual(st3["blocks"], st["blocks"])

    def test_counts_on_fresh_mount(self):
        with Mount("--pool-size", "16M") as m:
            st = m.status()
            self.assertEqual((st["blocks"], st["directories"], st["used"], st["evictions"]),
                             (0, 0, 0, 0))
            os.makedirs(m.path("d1", "d2", "d3"))
            for i in range(5):
                kvc.write_block(m.path("d1", "b%d" % i), os.urandom(100))
            st = m.status()
            self.assertEqual(st["directories"], 3)
            self.assertEqual(st["blocks"], 5)
            self.assertGreaterEqual(st["used"], 5 * 100)

    def test_activity_counters(self):
        st0 = self.m.status()
        data = os.urandom(300 * KiB)
        kvc.write_block(self.m.path("act"), data)
        st1 = self.m.status()
        self.assertGreater(st1["writes"], st0["writes"])
        self.assertGreater(st1["used"], st0["used"])
        self.assertEqual(kvc.read_block(self.m.path("act")), data)
        st2 = self.m.status()
        self.assertGreater(st2["reads"], st1["reads"])
        self.assertGreater(st2["hits"], st1["hits"])
        if "bytes_written" in st2:
            self.assertGreaterEqual(st2["bytes_written"] - st0["bytes_written"], len(data))
            self.assertGreaterEqual(st2["bytes_read"] - st1["bytes_read"], len(data))
        # a lookup of a name that does not exist is a miss
        self.assertFalse(os.path.exists(self.m.path("never-seen-%d" % time.monotonic_ns())))
        self.assertGreater(self.m.status()["misses"], st2["misses"])

    def test_not_a_kvcachefs_mount(self):
        for path in ("/tmp", "/", "/proc"):
            with self.subTest(path=path):
                r = kvc.run_ctl("status", path)
                self.assertNotEqual(r.returncode, 0, r.stdout)
                self.assertTrue(r.stderr.strip(), "no message")
                r = kvc.run_ctl("status", "--json", path)
                self.assertNotEqual(r.returncode, 0, r.stdout)
                self.assertTrue(r.stderr.strip(), "no message")

    def test_missing_path(self):
        r = kvc.run_ctl("status", "/nonexistent/kvcachefs/mount")
        self.assertNotEqual(r.returncode, 0)
        self.assertTrue(r.stderr.strip())

    def test_usage_errors(self):
        r = kvc.run_ctl("status")
        self.assertNotEqual(r.returncode, 0)
        self.assertTrue(r.stderr.strip())
        r = kvc.run_ctl("no-such-command")
        self.assertNotEqual(r.returncode, 0)
        self.assertTrue(r.stderr.strip())
        r = kvc.run_ctl("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("status", r.stdout)


if __name__ == "__main__":
    kvc.main()

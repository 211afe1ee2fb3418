#!/usr/bin/env python3
"""Blocks shared across a cluster, with a real etcd on free loopback ports and several daemons
with their own mountpoints: a block written on one node read on every other, stat/ls/xattrs
the same everywhere, a directory listed across nodes, rename-publish and replace, unlink from
another node, concurrent writers of one name on two nodes, replicas and what survives a
kill -9 of a holder, etcd stopped under reads and writes, a restarted node, and a node with
the wrong cluster secret getting nothing."""

import errno
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import kvc
from kvc import wait_until
import test_cluster as tc
from test_cluster import ETCD, TTL, nodes


def setUpModule():
    kvc.require_environment()
    if not ETCD:
        raise unittest.SkipTest("etcd is not installed (Debian package etcd-server)")


def read(path):
    with open(path, "rb") as f:
        return f.read()


def read_or_none(path):
    """read(path), or None for a miss (ENOENT) or an entry no holder vouches for (EIO)."""
    try:
        return read(path)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.EIO):
            raise
        return None


def xattr(path, name):
    return os.getxattr(path, "user.kvcachefs." + name).decode()


def node_id(m):
    return [n["node_id"] for n in nodes(m.mnt)["nodes"] if n["self"]][0]


class Blocks(tc.ClusterBase):
    def three(self):
        ms = [self.join() for _ in range(3)]
        for m in ms:
            self.wait_total(m, 3, timeout=5)
        return ms

    def test_written_on_one_read_on_all(self):
        a, b, c = self.three()
        data = {("blk%d" % i): os.urandom(n) for i, n in
                enumerate([0, 1, 4095, 4096, 65536, 1 << 20, (2 << 20) + 17])}
        for name, d in data.items():
            kvc.write_block(a.path(name), d)
        for m in (b, c):
            for name, d in data.items():
                self.assertEqual(os.stat(m.path(name)).st_size, len(d), name)
                self.assertEqual(read(m.path(name)), d, "%s on %s" % (name, m.mnt))
        # the same attributes everywhere
        for name, d in data.items():
            sa, sb = os.stat(a.path(name)), os.stat(c.path(name))
            self.assertEqual((sa.st_size, sa.st_mode, int(sa.st_mtime)),
                             (sb.st_size, sb.st_mode, int(sb.st_mtime)))
        self.assertEqual(xattr(b.path("blk5"), "holders"), node_id(a))
        self.assertEqual(xattr(c.path("blk5"), "holders"), node_id(a))
        self.assertEqual(xattr(b.path("blk5"), "replicas"), "1")
        # a name nobody has
        for m in (a, b, c):
            with self.assertRaises(FileNotFoundError):
                os.stat(m.path("nope"))

    def test_owner_is_the_same_everywhere(self):
        """A block written by an unprivileged user is that user's on every node."""
        python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
        nobody = 65534

        def as_nobody(code, *args):
            return subprocess.run(
                [python, "-c", code] + list(args), capture_output=True, text=True, timeout=60,
                preexec_fn=lambda: (os.setgroups([]), os.setgid(nobody), os.setuid(nobody),
                                    os.umask(0o077)))
        a = self.join("-o", "allow_other")
        b = self.join("-o", "allow_other")
        self.wait_total(a, 2, timeout=5)
        os.mkdir(a.path("pub"))
        os.chmod(a.path("pub"), 0o777)
        self.assertTrue(wait_until(lambda: os.path.isdir(b.path("pub")), timeout=2))
        r = as_nobody("import sys; open(sys.argv[1], 'wb').write(b'n' * 5000)",
                      a.path("pub", "mine"))
        self.assertEqual(r.returncode, 0, r.stderr)
        for m in (a, b):
            st = os.stat(m.path("pub", "mine"))
            self.assertEqual((st.st_uid, st.st_gid, st.st_mode & 0o777),
                             (nobody, nobody, 0o600), m.mnt)
        r = as_nobody("import sys; sys.stdout.write(str(len(open(sys.argv[1], 'rb').read())))",
                      b.path("pub", "mine"))
        self.assertEqual((r.returncode, r.stdout), (0, "5000"), r.stderr)

    def test_side_channel_lookup_fetches_remote_blocks(self):
        a, b = self.join(), self.join()
        self.wait_total(a, 2, timeout=5)
        names = ["%032x" % i for i in range(1, 151)]
        for n in names[:137]:  # more than one parallel batch (64)
            kvc.write_block(a.path(n), n.encode() * (1000 + int(n, 16)))
        kvc.write_block(a.path("empty"), b"")
        r = kvc.run_ctl("lookup", b.mnt, *names)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split()[0], "137", r.stdout)
        # they are local copies on b now
        self.assertEqual(kvc.ctl_status_json(b.mnt)["blocks"], 137)
        for n in names[:137]:
            self.assertEqual(read(b.path(n)), n.encode() * (1000 + int(n, 16)))
        r = kvc.run_ctl("lookup", b.mnt, "empty", names[140])
        self.assertEqual(r.stdout.split()[0], "1", r.stdout)

    def test_side_channel_lookups_beyond_the_pool(self):
        """Sets of remote blocks looked up one after the other on a node whose pool holds
        about one and a half of them, each more than one parallel fetch (64 blocks): a
        lookup evicts the copies of the sets before it, never those it has just fetched
        (which it would fetch again, evicting others of its own, again and again)."""
        a, b = self.join("--pool-size", "160M"), self.join()  # b: 32M
        self.wait_total(a, 2, timeout=5)
        size, n = 200 << 10, 100  # 20 MiB a set
        sets = [["s%d-%03d" % (k, i) for i in range(n)] for k in range(3)]
        for names in sets:
            for name in names:
                kvc.write_block(a.path(name), name.encode() * (size // len(name)))
        for k, names in enumerate(sets):
            t0 = time.monotonic()
            r = kvc.run_ctl("lookup", b.mnt, *names, timeout=120)
            self.assertEqual((r.returncode, r.stdout.split()[:1]), (0, [str(n)]),
                             (k, r.stdout, r.stderr))
            self.assertLess(time.monotonic() - t0, 10, "lookup of set %d" % k)
        st = kvc.ctl_status_json(b.mnt)
        # the earlier sets' copies went, at most a set's worth each time: not a churn
        self.assertLessEqual(st["evictions"], 3 * n, st)
        for name in sets[-1]:
            self.assertEqual(read(b.path(name)), name.encode() * (size // len(name)))

    def test_listing_across_nodes(self):
        a, b, c = self.three()
        os.mkdir(a.path("d"))
        self.assertTrue(wait_until(lambda: all(os.path.isdir(m.path("d")) for m in (b, c)),
                                   timeout=2, interval=0.02))
        names = set()
        for i, m in enumerate((a, b, c)):
            for j in range(400):
                n = "n%d-%03d" % (i, j)
                kvc.write_block(m.path("d", n), b"%d" % j)
                names.add(n)
        os.mkdir(b.path("d", "sub"))
        self.assertTrue(wait_until(lambda: os.path.isdir(c.path("d", "sub")), timeout=2))
        for m in (a, b, c):
            got = os.listdir(m.path("d"))
            self.assertEqual(len(got), len(set(got)), "duplicates on %s" % m.mnt)
            self.assertEqual(set(got), names | {"sub"}, m.mnt)
        # ls -l works (stat of every entry)
        r = subprocess.run(["ls", "-l", c.path("d")], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(r.stdout.strip().splitlines()), len(names) + 2)  # + total, sub
        # a directory with blocks on other nodes is not empty anywhere
        with self.assertRaises(OSError) as cm:
            os.rmdir(c.path("d"))
        self.assertEqual(cm.exception.errno, errno.ENOTEMPTY)

    def test_listing_in_pages(self):
        """A directory larger than one LIST page (1024 names) on its owners."""
        a, b = self.join(), self.join()
        self.wait_total(a, 2, timeout=5)
        os.mkdir(a.path("big"))
        self.assertTrue(wait_until(lambda: os.path.isdir(b.path("big")), timeout=2))
        names = {"%032x" % i for i in range(2600)}
        for n in names:
            kvc.write_block(a.path("big", n), b"v")
        got = os.listdir(b.path("big"))
        self.assertEqual(len(got), len(names))
        self.assertEqual(set(got), names)

    def test_eviction_updates_entries(self):
        a, b = self.join(), self.join()
        self.wait_total(a, 2, timeout=5)
        blocks = ["e%02d" % i for i in range(48)]  # 48 MiB into a 32 MiB pool
        for n in blocks:
            kvc.write_block(a.path(n), n.encode() * (1 << 19))
        self.assertGreater(kvc.ctl_status_json(a.mnt)["evictions"], 0)
        present = [n for n in blocks if os.path.exists(a.path(n))]
        gone = [n for n in blocks if n not in present]
        self.assertTrue(present and gone)
        for n in gone:
            with self.assertRaises(FileNotFoundError):
                read(b.path(n))
        for n in present[-4:]:
            self.assertEqual(read(b.path(n)), n.encode() * (1 << 19))

    def test_streamed_reads(self):
        """The first read of another node's block streams it (no local copy: tier stays
        remote), whatever the reader's buffer size and order; the second read keeps a copy."""
        a, b = self.join(), self.join()
        self.wait_total(b, 2, timeout=5)
        sizes = {"s0": 1, "s1": 300000, "s2": (3 << 20) + 4097, "s3": 5 << 20,
                 "s4": (2 << 20) - 17}
        data = {n: os.urandom(z) for n, z in sizes.items()}
        for n, d in data.items():
            kvc.write_block(a.path(n), d)
        # whole reads with a large buffer (the chunks are requested ahead)
        for n, d in data.items():
            self.assertEqual(read(b.path(n)), d, n)
            self.assertEqual(xattr(b.path(n), "tier"), "remote", n)
        # read again: fetched into a copy kept on b
        for n, d in data.items():
            self.assertEqual(read(b.path(n)), d, n)
            self.assertEqual(xattr(b.path(n), "tier"), "dram", n)
            self.assertEqual(xattr(a.path(n), "tier"), "dram", n)

        # small reads, reads out of order, reads past the end: fresh names each
        big = os.urandom((4 << 20) + 123)
        for k in range(3):
            kvc.write_block(a.path("o%d" % k), big)
        fd = os.open(b.path("o0"), os.O_RDONLY)
        try:
            got = b"".join(iter(lambda: os.read(fd, 65536), b""))
        finally:
            os.close(fd)
        self.assertEqual(got, big)
        fd = os.open(b.path("o1"), os.O_RDONLY)
        try:
            for off, n in [(3 << 20, 1 << 20), (17, 4096), (0, 1 << 20), (len(big) - 5, 100),
                           (len(big) + 10, 10), (1 << 20, 3 << 20)]:
                self.assertEqual(os.pread(fd, n, off), big[off:off + n], (off, n))
        finally:
            os.close(fd)
        # a reader that stops after its first read, then one that reads it all
        fd = os.open(b.path("o2"), os.O_RDONLY)
        self.assertEqual(os.read(fd, 1 << 20), big[:1 << 20])
        os.close(fd)
        self.assertEqual(read(b.path("o2")), big)

    def test_streamed_read_of_a_replaced_block(self):
        """A block replaced on its holder while another node streams it: the reader gets
        the old bytes whole or an error, never a mix; the next open reads the new one."""
        a, b = self.join(), self.join()
        self.wait_total(b, 2, timeout=5)
        old, new = b"o" * (6 << 20), b"n" * (6 << 20)
        kvc.write_block(a.path("blk"), old)
        self.assertEqual(os.stat(b.path("blk")).st_size, len(old))
        fd = os.open(b.path("blk"), os.O_RDONLY)
        try:
            first = os.read(fd, 1 << 20)
            self.assertEqual(first, old[:1 << 20])
            kvc.write_block(a.path("blk.tmp"), new)
            os.rename(a.path("blk.tmp"), a.path("blk"))
            rest = b""
            try:
                rest = b"".join(iter(lambda: os.read(fd, 1 << 20), b""))
            except OSError as e:
                self.assertIn(e.errno, (errno.ENOENT, errno.EIO), e)
            self.assertEqual(rest, old[1 << 20:1 << 20 + len(rest)])
        finally:
            os.close(fd)
        # until the new version's entry reaches its owners, an open may still find the old
        # one, which no holder vouches for any more: a miss then (never the old bytes mixed
        # with the new ones), and the new version soon after
        self.assertTrue(wait_until(lambda: read_or_none(b.path("blk")) == new, timeout=3,
                                   interval=0.1))

    def test_streamed_reads_of_other_sizes(self):
        """READ requests of other sizes than the default (-o max_read): a 1 MiB reply may not
        fit a pipe this process can make (then it is copied), a small one needs many."""
        a = self.join()
        bs = [self.join("-o", "max_read=%d" % n) for n in (1 << 20, 65536)]
        for b in bs:
            self.wait_total(b, 3, timeout=5)
        d = os.urandom((3 << 20) + 999)
        for k, b in enumerate(bs):
            kvc.write_block(a.path("m%d" % k), d)
            self.assertEqual(read(b.path("m%d" % k)), d)
            self.assertEqual(xattr(b.path("m%d" % k), "tier"), "remote")

    def test_open_of_a_dead_holders_block(self):
        """The holder killed: an open on another node of its block (the name still known
        there) is a clean miss at the open itself, quickly, before and after the lease."""
        a, b = self.join(), self.join()
        self.wait_total(b, 2, timeout=5)
        d = os.urandom(3 << 20)
        for n in ("k0", "k1", "k2"):
            kvc.write_block(a.path(n), d)
        self.assertEqual(read(b.path("k0")), d)  # b has streamed from a
        os.stat(b.path("k1"))
        a.kill9()
        t0 = time.monotonic()
        with self.assertRaises(FileNotFoundError):
            os.open(b.path("k1"), os.O_RDONLY)
        self.assertLess(time.monotonic() - t0, 5)
        self.wait_total(b, 1, timeout=TTL + 5)
        with self.assertRaises(FileNotFoundError):
            os.open(b.path("k2"), os.O_RDONLY)

    def test_reads_without_splice(self):
        """KVC_NO_SPLICE=1: no streamed reads, a remote block is fetched into a copy at its
        first open (the behaviour before streams)."""
        a = self.join()
        os.environ["KVC_NO_SPLICE"] = "1"
        try:
            b = self.join()
        finally:
            del os.environ["KVC_NO_SPLICE"]
        self.wait_total(b, 2, timeout=5)
        d = os.urandom((2 << 20) + 5)
        kvc.write_block(a.path("x"), d)
        self.assertEqual(read(b.path("x")), d)
        self.assertEqual(xattr(b.path("x"), "tier"), "dram")

    def test_rename_publish_and_replace(self):
        a, b, c = self.three()
        kvc.write_block(a.path("final"), b"old" * 1000)
        self.assertEqual(read(b.path("final")), b"old" * 1000)
        kvc.write_block(a.path("final.tmp"), b"new" * 2000)
        os.rename(a.path("final.tmp"), a.path("final"))
        # the kernel may keep its entry for up to the entry timeout (1 s)
        self.assertTrue(wait_until(lambda: read(b.path("final")) == b"new" * 2000,
                                   timeout=3, interval=0.1))
        self.assertEqual(read(c.path("final")), b"new" * 2000)
        self.assertTrue(wait_until(lambda: not os.path.exists(c.path("final.tmp")), timeout=3))
        self.assertNotIn("final.tmp", os.listdir(c.mnt))
        # renaming a block held elsewhere is a cross-device move (mv copies it)
        with self.assertRaises(OSError) as cm:
            os.rename(b.path("final"), b.path("moved"))
        self.assertEqual(cm.exception.errno, errno.EXDEV)
        # a directory holding blocks is not renamed in a cluster (mv copies it instead)
        os.mkdir(a.path("dd"))
        kvc.write_block(a.path("dd", "k"), b"k")
        self.assertTrue(wait_until(lambda: os.path.isdir(b.path("dd")), timeout=2))
        with self.assertRaises(OSError) as cm:
            os.rename(b.path("dd"), b.path("ee"))
        self.assertEqual(cm.exception.errno, errno.EXDEV)
        os.mkdir(a.path("empty"))
        os.rename(a.path("empty"), a.path("empty2"))
        self.assertTrue(wait_until(lambda: os.path.isdir(c.path("empty2")), timeout=2))
        # unlink on another node removes it everywhere
        os.unlink(c.path("final"))
        for m in (a, b, c):
            self.assertTrue(wait_until(lambda: not os.path.exists(m.path("final")), timeout=3),
                            m.mnt)
        with self.assertRaises(FileNotFoundError):
            os.unlink(b.path("final"))

    def test_same_name_on_two_nodes(self):
        a, b, c = self.three()
        def write(path, data):
            try:
                kvc.write_block(path, data)
            except OSError as e:  # the other node's version got there first
                self.assertIn(e.errno, (errno.EPERM, errno.EEXIST, errno.EBUSY))

        for rnd in range(5):
            name = "race%d" % rnd
            va, vb = bytes([65 + rnd]) * 300000, bytes([97 + rnd]) * 200000
            t = threading.Thread(target=write, args=(a.path(name), va))
            t.start()
            write(b.path(name), vb)
            t.join()

            def converged():
                try:  # a reader of a version being replaced may get ENOENT, then retries
                    got = [read(m.path(name)) for m in (a, b, c)]
                except FileNotFoundError:
                    return False
                return all(g == got[0] for g in got) and got[0] in (va, vb)
            self.assertTrue(wait_until(converged, timeout=5, interval=0.1),
                            "nodes disagree on %s" % name)

    def test_replicas_survive_kill(self):
        a, b, c = self.three()
        os.mkdir(a.path("r2"))
        os.setxattr(a.path("r2"), "user.kvcachefs.replicas", b"2")
        self.assertTrue(wait_until(lambda: os.path.isdir(c.path("r2")) and
                                   xattr(c.path("r2"), "replicas") == "2", timeout=2))
        os.mkdir(a.path("r1"))
        self.assertTrue(wait_until(lambda: os.path.isdir(c.path("r1")), timeout=2))
        blocks = {"b%d" % i: os.urandom(100000 + i) for i in range(20)}
        for n, d in blocks.items():
            kvc.write_block(b.path("r2", n), d)
            kvc.write_block(b.path("r1", n), d)
        self.assertTrue(wait_until(lambda: all(
            len(xattr(c.path("r2", n), "holders").split(",")) == 2 for n in blocks),
            timeout=10, interval=0.2), "replicas were not made")
        os.kill(b.pid, signal.SIGKILL)
        self.assertTrue(wait_until(lambda: not kvc.pid_alive(b.pid), timeout=5))
        b.pid = None
        kvc.unmount(b.mnt)
        # before its lease runs out, the dead node is still a member: reads go around it
        t0 = time.monotonic()
        for n, d in blocks.items():
            self.assertEqual(read(a.path("r2", n)), d, n)
        self.assertLess(time.monotonic() - t0, 10)
        self.wait_total(a, 2, timeout=TTL + 5)
        for m in (a, c):
            for n, d in blocks.items():
                self.assertEqual(read(m.path("r2", n)), d, n)
                # the only copy was on b: a clean miss
                t0 = time.monotonic()
                with self.assertRaises(FileNotFoundError):
                    read(m.path("r1", n))
                self.assertLess(time.monotonic() - t0, 5)
            # listings agree: what is lost is not listed
            self.assertEqual(sorted(os.listdir(m.path("r2"))), sorted(blocks))
            self.assertEqual(os.listdir(m.path("r1")), [])
        # the count is restored on the survivors
        self.assertTrue(wait_until(lambda: all(
            len(xattr(a.path("r2", n), "holders").split(",")) == 2 for n in blocks),
            timeout=15, interval=0.5), "replicas were not restored after the kill")

    def test_restarted_replica_holder_is_replaced(self):
        """A holder restarted with an empty pool is dropped from the entries when a read finds
        its copy gone, and the replica count comes back."""
        ms = {nid: self.join("--node-id", nid) for nid in ("0xa1", "0xa2", "0xa3")}
        for m in ms.values():
            self.wait_total(m, 3, timeout=5)
        w = ms["0xa1"]
        os.mkdir(w.path("r2"))
        os.setxattr(w.path("r2"), "user.kvcachefs.replicas", b"2")
        self.assertTrue(wait_until(lambda: all(xattr(m.path("r2"), "replicas") == "2"
                                               for m in ms.values()), timeout=2))
        blocks = {"b%d" % i: os.urandom(50000 + i) for i in range(8)}
        for n, d in blocks.items():
            kvc.write_block(w.path("r2", n), d)
        self.assertTrue(wait_until(lambda: all(
            len(xattr(w.path("r2", n), "holders").split(",")) == 2 for n in blocks),
            timeout=10, interval=0.2))
        # restart one replica holder (not the writer): its pool comes back empty
        holders = xattr(w.path("r2", "b0"), "holders").split(",")
        other = [h for h in holders if h != "00000000000000a1"][0]
        victim = "0x" + other.lstrip("0")
        ms[victim].stop()
        self.wait_total(w, 2, timeout=5)
        ms[victim] = self.join("--node-id", victim)
        self.wait_total(w, 3, timeout=5)
        reader = [m for nid, m in ms.items() if nid not in ("0xa1", victim)][0]
        for n, d in blocks.items():
            self.assertEqual(read(reader.path("r2", n)), d)
        by_id = {"%016x" % int(nid, 16): m for nid, m in ms.items()}

        def really_held():  # two holders, each with the bytes (not a stub of the block)
            for n in blocks:
                hs = xattr(w.path("r2", n), "holders").split(",")
                if len(hs) != 2 or any(xattr(by_id[h].path("r2", n), "tier") == "remote"
                                       for h in hs):
                    return False
            return True
        self.assertTrue(wait_until(really_held, timeout=15, interval=0.5),
                        "replicas not restored after a holder's restart")

    def test_etcd_outage_keeps_blocks_flowing(self):
        a, b = self.join(), self.join()
        self.wait_total(a, 2, timeout=5)
        kvc.write_block(a.path("before"), b"1" * 70000)
        self.etcd.stop()
        try:
            kvc.write_block(a.path("during"), b"2" * 70000)
            self.assertEqual(read(b.path("before")), b"1" * 70000)
            self.assertEqual(read(b.path("during")), b"2" * 70000)
        finally:
            self.etcd.start()
        for m in (a, b):
            self.assertTrue(wait_until(lambda: not nodes(m.mnt)["stale"] and
                                       nodes(m.mnt)["total"] == 2, timeout=TTL + 5))
        kvc.write_block(b.path("after"), b"3" * 70000)
        self.assertEqual(read(a.path("after")), b"3" * 70000)

    def test_restarted_node_rejoins(self):
        a = self.join()
        b = self.join("--node-id", "0xb1")
        self.wait_total(a, 2, timeout=5)
        kvc.write_block(a.path("x"), b"x" * 5000)
        self.assertEqual(read(b.path("x")), b"x" * 5000)
        b.stop()
        self.wait_total(a, 1, timeout=5)
        b2 = self.join("--node-id", "0xb1")
        self.wait_total(a, 2, timeout=5)
        self.assertEqual(read(b2.path("x")), b"x" * 5000)
        kvc.write_block(b2.path("y"), b"y" * 5000)
        self.assertEqual(read(a.path("y")), b"y" * 5000)

    def test_wrong_secret_refused(self):
        a = self.join()
        kvc.write_block(a.path("secret-block"), b"s" * 5000)
        bad = os.path.join(self.tmp, "bad-secret")
        with open(bad, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(bad, 0o600)
        args = self.cluster_args()
        args[args.index("--secret-file") + 1] = bad
        mnt = os.path.realpath(tempfile.mkdtemp(prefix="kvc-itest-mnt-"))
        self.addCleanup(os.rmdir, mnt)
        r, reports = kvc.run_daemon(args + [mnt], timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"secret", r.stderr)
        self.assertFalse(kvc.is_mounted(mnt))
        self.assertEqual(reports, [])
        # the cluster is untouched
        self.assertEqual(nodes(a.mnt)["total"], 1)
        self.assertEqual(read(a.path("secret-block")), b"s" * 5000)


if __name__ == "__main__":
    unittest.main()

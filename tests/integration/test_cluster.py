#!/usr/bin/env python3
"""Cluster membership with a real etcd (Debian's etcd-server) on free loopback ports and
several daemons with their own mountpoints: joining, `kvcachectl nodes`, refusals (same node
id, unreachable etcd, bad secret file), a member killed with SIGKILL leaving within the lease
TTL, a restarted node rejoining, etcd stopped and restarted, and the daemon's transfer engine
serving only holders of the cluster secret."""

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import kvc
from kvc import Mount, wait_until

ETCD = shutil.which("etcd")
XFER = os.path.join(kvc.BIN_DIR, "kvcache-xfer")
TTL = 10  # the daemon's member lease (meta/members.h default)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Etcd:
    """A single-member etcd on free loopback ports, in a temporary data directory; stop()
    keeps the data so start() brings the same cluster back on the same ports."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="kvc-itest-etcd-")
        self.client, self.peer = free_port(), free_port()
        self.url = "http://127.0.0.1:%d" % self.client
        self.proc = None

    def start(self):
        peer = "http://127.0.0.1:%d" % self.peer
        self.log = open(os.path.join(self.dir, "log"), "ab")
        self.proc = subprocess.Popen(
            [ETCD, "--name", "t", "--data-dir", os.path.join(self.dir, "data"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", "t=" + peer], stdout=self.log, stderr=self.log,
            stdin=subprocess.DEVNULL)
        if not wait_until(self.healthy, timeout=20, interval=0.1):
            self.stop()
            raise RuntimeError("etcd did not become healthy; see %s/log" % self.dir)

    def healthy(self):
        try:
            with socket.create_connection(("127.0.0.1", self.client), timeout=1) as s:
                s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
                return b'"health":"true"' in s.recv(4096)
        except OSError:
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()
            self.log = None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def nodes(mnt):
    r = kvc.run_ctl("nodes", "--json", mnt)
    if r.returncode != 0:
        raise AssertionError("kvcachectl nodes %s: %s" % (mnt, r.stderr))
    return json.loads(r.stdout)


def proc_ipv4(name):
    with open("/proc/sys/net/ipv4/" + name) as f:
        return f.read().strip()


def tcp_congestion_of(ports):
    """[(local, peer, congestion control)] of the established TCP connections with one of
    ports at either end, as ss(8) shows them."""
    r = subprocess.run(["ss", "-Htin", "state", "established"], capture_output=True,
                       text=True, timeout=30)
    if r.returncode != 0:
        raise AssertionError("ss: %s" % r.stderr)
    known = set(proc_ipv4("tcp_available_congestion_control").split())
    out, lines = [], r.stdout.splitlines()
    for head, info in zip(lines[0::2], lines[1::2]):
        fields = head.split()
        local, peer = fields[-2], fields[-1]
        if {int(local.rsplit(":", 1)[1]), int(peer.rsplit(":", 1)[1])} & set(ports):
            cc = [w for w in info.split() if w in known]
            out.append((local, peer, cc[0] if cc else "?"))
    return out


def setUpModule():
    kvc.require_environment()
    if not ETCD:
        raise unittest.SkipTest("etcd is not installed (Debian package etcd-server)")


class ClusterBase(kvc.TestCase):
    """One etcd and a secret file per class; daemons per test (also used by
    test_cluster_blocks.py)."""

    @classmethod
    def setUpClass(cls):
        cls.etcd = Etcd()
        cls.addClassCleanup(cls.etcd.cleanup)
        cls.etcd.start()
        cls.tmp = tempfile.mkdtemp(prefix="kvc-itest-cluster-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cls.secret = os.path.join(cls.tmp, "secret")
        with open(cls.secret, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(cls.secret, 0o600)

    def setUp(self):
        self.cluster = "c%d" % (time.monotonic_ns() % 10**9)

    def cluster_args(self, *extra, cluster=None):
        return ["--pool-size", "32M", "--etcd", self.etcd.url, "--cluster",
                cluster or self.cluster, "--listen", "127.0.0.1:0", "--secret-file",
                self.secret] + list(extra)

    def join(self, *extra):
        return Mount.for_test(self, *self.cluster_args(*extra), pool_size=None)

    def wait_total(self, m, n, timeout):
        ok = wait_until(lambda: nodes(m.mnt)["total"] == n, timeout=timeout, interval=0.2)
        self.assertTrue(ok, "%s sees %d members, expected %d" % (
            m.mnt, nodes(m.mnt)["total"], n))


class Cluster(ClusterBase):
    def test_three_nodes_see_each_other(self):
        ms = [self.join() for _ in range(3)]
        for m in ms:
            self.wait_total(m, 3, timeout=3)
        views = [nodes(m.mnt) for m in ms]
        ids = {n["node_id"] for n in views[0]["nodes"]}
        self.assertEqual(len(ids), 3)
        for v in views:
            self.assertEqual(v["cluster"], self.cluster)
            self.assertFalse(v["stale"])
            self.assertEqual({n["node_id"] for n in v["nodes"]}, ids)
            self.assertEqual(sum(n["self"] for n in v["nodes"]), 1)
            for n in v["nodes"]:
                self.assertEqual(n["state"], "up")
                self.assertRegex(n["addr"], r"^127\.0\.0\.1:\d+$")
                self.assertEqual(n["pool_size"], views[0]["nodes"][0]["pool_size"])
        # status gains the cluster totals
        st = kvc.ctl_status_json(ms[1].mnt)
        self.assertTrue(st["cluster"])
        self.assertEqual(st["members"], 3)
        self.assertEqual(st["cluster_capacity"], 3 * st["capacity"])
        kvc.write_block(ms[1].path("totals"), b"t" * 100000)
        st = kvc.ctl_status_json(ms[1].mnt)
        self.assertGreaterEqual(st["cluster_used"], st["used"])
        self.assertGreater(st["used"], 0)
        # the text form names the cluster and marks this node
        r = kvc.run_ctl("nodes", ms[0].mnt)
        self.assertIn("cluster %s: 3 members" % self.cluster, r.stdout)
        self.assertEqual(r.stdout.count("(this node)"), 1)

    def test_pool_use_reaches_the_others(self):
        a = self.join()
        b = self.join()
        self.wait_total(b, 2, timeout=3)
        kvc.write_block(a.path("big"), os.urandom(4 << 20))
        used = kvc.ctl_status_json(a.mnt)["used"]
        a_id = [n["node_id"] for n in nodes(a.mnt)["nodes"] if n["self"]][0]

        def seen():
            return [n["pool_used"] for n in nodes(b.mnt)["nodes"]
                    if n["node_id"] == a_id] == [used]
        self.assertTrue(wait_until(seen, timeout=8, interval=0.2),
                        "node B does not see node A's pool use (%d bytes)" % used)

    def test_directories_are_shared(self):
        a, b, c = self.join(), self.join(), self.join()
        self.wait_total(c, 3, timeout=3)
        os.makedirs(a.path("llama", "rank_0", "bf16"))
        t0 = time.monotonic()
        for m in (b, c):
            self.assertTrue(wait_until(lambda: os.path.isdir(m.path("llama", "rank_0", "bf16")),
                                       timeout=1, interval=0.02),
                            "mkdir on one node not seen on %s within 1 s" % m.mnt)
        self.assertLess(time.monotonic() - t0, 1.5)
        # rename and rmdir follow too
        os.rename(b.path("llama", "rank_0"), b.path("llama", "rank_1"))
        for m in (a, c):
            self.assertTrue(wait_until(lambda: os.path.isdir(m.path("llama", "rank_1", "bf16"))
                                       and not os.path.exists(m.path("llama", "rank_0")),
                                       timeout=2, interval=0.02))
        os.rmdir(c.path("llama", "rank_1", "bf16"))
        for m in (a, b):
            self.assertTrue(wait_until(lambda: not os.path.exists(
                m.path("llama", "rank_1", "bf16")), timeout=2, interval=0.02))
        # a node joining later finds them
        d = self.join()
        self.assertTrue(os.path.isdir(d.path("llama", "rank_1")))
        self.assertEqual(sorted(os.listdir(d.path("llama"))), ["rank_1"])
        # another cluster does not
        e = Mount.for_test(self, *self.cluster_args(cluster=self.cluster + "y"), pool_size=None)
        self.assertEqual(os.listdir(e.mnt), [])

    def test_mkdir_needs_etcd(self):
        a = self.join()
        os.mkdir(a.path("before"))
        self.etcd.stop()
        try:
            self.assertErrno(errno.EIO, os.mkdir, a.path("during"))
            self.assertFalse(os.path.exists(a.path("during")))
            kvc.write_block(a.path("before", "blk"), b"q" * 100)  # existing ones work
            self.assertEqual(kvc.read_block(a.path("before", "blk")), b"q" * 100)
        finally:
            self.etcd.start()
        self.assertTrue(wait_until(lambda: not nodes(a.mnt)["stale"], timeout=TTL + 5,
                                   interval=0.2))
        os.mkdir(a.path("after"))

    def test_clusters_are_separate(self):
        a = self.join()
        b = Mount.for_test(self, *self.cluster_args(cluster=self.cluster + "x"),
                           pool_size=None)
        time.sleep(1)
        self.assertEqual(nodes(a.mnt)["total"], 1)
        self.assertEqual(nodes(b.mnt)["total"], 1)

    def refused(self, args, message):
        mnt = tempfile.mkdtemp(dir=self.tmp)
        r, reports = kvc.run_daemon(args + [mnt])
        err = r.stderr.decode(errors="replace")
        self.assertEqual(r.returncode, 1, err)
        self.assertIn(message, err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertFalse(kvc.is_mounted(mnt))
        self.assertEqual(reports, [])

    def test_same_node_id_refused(self):
        self.join("--node-id", "0x1234")
        self.refused(self.cluster_args("--node-id", "0x1234"), "already a live member")

    def test_unreachable_etcd_refused(self):
        args = self.cluster_args()
        args[args.index("--etcd") + 1] = "http://127.0.0.1:%d" % free_port()
        self.refused(args, "cannot join cluster")

    def test_bad_secret_files_refused(self):
        loose = os.path.join(self.tmp, "loose")
        with open(loose, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(loose, 0o644)
        short = os.path.join(self.tmp, "short")
        with open(short, "wb") as f:
            f.write(b"tooshort")
        os.chmod(short, 0o600)
        for path, msg in ((loose, "readable by everyone"), (short, "at least 16"),
                          (os.path.join(self.tmp, "missing"), "No such file")):
            args = self.cluster_args()
            args[args.index("--secret-file") + 1] = path
            self.refused(args, msg)

    def test_tcp_congestion(self):
        """--tcp-congestion NAME: every transfer connection between the nodes uses it; a
        name this host lacks, or (without CAP_NET_ADMIN) one it does not allow, is refused
        at the start with the names that would do."""
        self.refused(self.cluster_args("--tcp-congestion", "no_such_cc"),
                     "--tcp-congestion no_such_cc: not available on this host (available: ")
        default = proc_ipv4("tcp_congestion_control")
        available = proc_ipv4("tcp_available_congestion_control").split()
        allowed = proc_ipv4("tcp_allowed_congestion_control").split()
        locked = [n for n in available if n not in allowed]
        drop = ["setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin"]
        if locked and os.geteuid() == 0 and shutil.which("setpriv") and subprocess.run(
                drop + ["true"], capture_output=True, timeout=30).returncode == 0:
            mnt = tempfile.mkdtemp(dir=self.tmp)
            r = subprocess.run(
                drop + [kvc.KVCACHEFS] + self.cluster_args("--tcp-congestion", locked[0]) +
                [mnt],
                stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
            err = r.stderr.decode(errors="replace")
            self.assertEqual(r.returncode, 1, err)
            self.assertIn("--tcp-congestion %s: not allowed without CAP_NET_ADMIN (allowed: %s)"
                          % (locked[0], " ".join(allowed)), err)
            self.assertFalse(kvc.is_mounted(mnt))
        else:
            print("\n    (not checked: a congestion control refused without CAP_NET_ADMIN; "
                  "none is available but not allowed here, or not root, or setpriv cannot "
                  "drop it)")

        other = next((n for n in allowed if n != default), None)
        if other is None:
            self.skipTest("no congestion control other than the system's (%s) is allowed "
                          "here: the connections' check could not tell them apart" % default)
        if not shutil.which("ss"):
            self.skipTest("ss is not installed (Debian package iproute2)")
        a = self.join("--tcp-congestion", other)
        b = self.join("--tcp-congestion", other)
        self.wait_total(a, 2, timeout=3)
        data = os.urandom((3 << 20) + 5)
        kvc.write_block(a.path("blk"), data)
        with open(b.path("blk"), "rb") as f:  # streamed from A
            self.assertEqual(f.read(), data)
        ports = {int(n["addr"].rsplit(":", 1)[1]) for n in nodes(a.mnt)["nodes"]}
        conns = tcp_congestion_of(ports)
        # each node's paths to the other and B's stream, seen from both ends
        self.assertGreaterEqual(len(conns), 4, conns)
        for local, peer, cc in conns:
            self.assertEqual(cc, other, "%s -> %s uses %s" % (local, peer, cc))

    def test_killed_member_leaves(self):
        a = self.join()
        b = self.join()
        self.wait_total(a, 2, timeout=3)
        os.kill(b.pid, signal.SIGKILL)
        self.assertTrue(wait_until(lambda: not kvc.pid_alive(b.pid), timeout=5))
        b.pid = None  # killed on purpose: not a crash for b's cleanup to report
        t0 = time.monotonic()
        self.wait_total(a, 1, timeout=TTL + 5)
        self.assertLess(time.monotonic() - t0, TTL + 5)

    def test_restart_right_after_a_kill_rejoins(self):
        """A node killed and restarted at once (its old registration still live) waits for
        that registration to expire instead of being refused as a duplicate."""
        a = self.join()
        b = self.join("--node-id", "0xb0b")
        self.wait_total(a, 2, timeout=3)
        os.kill(b.pid, signal.SIGKILL)
        # every thread gone (they hold the pool's lock until then), not only the main one
        self.assertTrue(wait_until(lambda: kvc.process_gone(b.pid), timeout=20))
        b.pid = None
        kvc.unmount(b.mnt)
        r, reports = kvc.run_daemon(self.cluster_args("--node-id", "0xb0b") + [b.mnt],
                                    timeout=TTL + 30)
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace"))
        self.assertEqual(reports, [])
        b.pid = wait_until(lambda: kvc.find_daemon(b.mnt), timeout=5)  # b's cleanup stops it
        self.wait_total(a, 2, timeout=5)
        self.assertIn("0000000000000b0b", {n["node_id"] for n in nodes(a.mnt)["nodes"]})

    def test_unmount_leaves_at_once(self):
        a = self.join()
        b = self.join()
        self.wait_total(a, 2, timeout=3)
        b.stop()
        self.wait_total(a, 1, timeout=3)  # the lease is revoked, not left to expire

    def test_etcd_outage(self):
        a = self.join()
        b = self.join()
        self.wait_total(a, 2, timeout=3)
        os.mkdir(a.path("during-outage"))
        self.etcd.stop()
        try:
            # the last known membership stays, marked stale; existing directories work
            self.assertTrue(wait_until(lambda: nodes(a.mnt)["stale"], timeout=TTL,
                                       interval=0.2))
            self.assertEqual(nodes(a.mnt)["total"], 2)
            kvc.write_block(a.path("during-outage", "blk"), b"y" * 5000)
            self.assertEqual(kvc.read_block(a.path("during-outage", "blk")), b"y" * 5000)
        finally:
            self.etcd.start()
        self.assertTrue(wait_until(lambda: not nodes(a.mnt)["stale"], timeout=TTL + 5,
                                   interval=0.2))
        self.wait_total(a, 2, timeout=TTL + 5)
        self.wait_total(b, 2, timeout=TTL + 5)

    def test_transfer_engine_needs_the_secret(self):
        a = self.join()
        addr = [n["addr"] for n in nodes(a.mnt)["nodes"] if n["self"]][0]
        kvc.write_block(a.path("blk"), b"z" * 4096)
        ok = subprocess.run([XFER, "read", "--peer", addr, "--secret-file", self.secret,
                             "--segment", "1", "--offset", "0", "--length", "4096"],
                            capture_output=True, text=True, timeout=60)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        wrong = os.path.join(self.tmp, "wrong")
        with open(wrong, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(wrong, 0o600)
        r = subprocess.run([XFER, "read", "--peer", addr, "--secret-file", wrong,
                            "--segment", "1", "--offset", "0", "--length", "4096"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 1)
        self.assertIn("EACCES", r.stderr + r.stdout)


if __name__ == "__main__":
    kvc.main()

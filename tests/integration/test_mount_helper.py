#!/usr/bin/env python3
"""mount(8) and systemd integration: tools/mount.kvcachefs and tools/kvcachefs@.service.

OptionMapping and Install need neither root nor FUSE: they run the helper with
KVCACHEFS_MOUNT_PRINT=1 (it prints the daemon's argument vector instead of running it) or
with a stand-in daemon. ThroughMount mounts the real daemon with mount -t fuse.kvcachefs,
mount -t kvcachefs and mount -T TMPFSTAB; UnitFile checks the systemd unit.

mount(8) looks for its helpers in /sbin only (util-linux's compiled-in /sbin:/sbin/fs.d:/sbin/fs,
no environment variable changes it). Rather than putting files into the machine's /sbin, the
root tests move this process into a private mount namespace (unshare(CLONE_NEWNS), mounts
made private) and there lay a directory holding mount.fuse.kvcachefs and mount.kvcachefs
(symlinks to tools/mount.kvcachefs) over /sbin with a read-only overlayfs (or, without
overlayfs, a bind-mounted directory of symlinks). Nothing outside this process sees it, two
runs at once do not meet, and it is gone when the process ends, however it ends. The FUSE
mounts made here live in that namespace too (the pool objects and SSD files, on shared
filesystems, are removed by the cleanups).
"""

import ctypes
import errno
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import unittest

import kvc
from kvc import MiB, wait_until

HELPER = os.path.join(kvc.SOURCE_DIR, "tools", "mount.kvcachefs")
UNIT = os.path.join(kvc.SOURCE_DIR, "tools", "kvcachefs@.service")
BUILD_DIR = os.path.dirname(kvc.BIN_DIR)

# A stand-in daemon: writes its arguments (one a line) to $FAKE_ARGS and exits $FAKE_RC.
FAKE_DAEMON = """#!/bin/sh
printf '%s\\n' "$@" > "$FAKE_ARGS"
exit "${FAKE_RC:-0}"
"""


def run_helper(args, env=None, helper=HELPER):
    """Run the helper with args; the CompletedProcess (text)."""
    return subprocess.run([helper] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, env=env, timeout=30)


def write_fake_daemon(path):
    with open(path, "w") as f:
        f.write(FAKE_DAEMON)
    os.chmod(path, 0o755)


# --------------------------------------------------------------------------------------------
# The private mount namespace (root tests)

CLONE_NEWNS = 0x00020000
_namespace = {"state": None}  # None: not set up; "ok"; or the reason to skip


def _run(cmd):
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60)


def shadow_directory(directory, links):
    """Make links ({name: target}) appear as symlinks in directory, in this mount namespace
    only: a read-only overlayfs of a temporary directory over it, or a bind mount of a copy
    made of symlinks when overlayfs is missing. Returns None, or why it could not."""
    real = os.path.realpath(directory)
    layer = tempfile.mkdtemp(prefix="kvc-itest-shadow-")
    unittest.addModuleCleanup(shutil.rmtree, layer, True)
    for name, target in links.items():
        os.symlink(target, os.path.join(layer, name))
    r = _run(["mount", "-t", "overlay", "overlay", "-o",
              "lowerdir=%s:%s" % (layer, real), real])
    if r.returncode == 0:
        unittest.addModuleCleanup(_run, ["umount", "-l", real])
        return None
    orig = tempfile.mkdtemp(prefix="kvc-itest-orig-")
    unittest.addModuleCleanup(shutil.rmtree, orig, True)
    r = _run(["mount", "--bind", real, orig])
    if r.returncode != 0:
        return "cannot bind-mount %s: %s" % (real, r.stderr.strip())
    unittest.addModuleCleanup(_run, ["umount", "-l", orig])
    for name in os.listdir(orig):
        if name not in links:
            os.symlink(os.path.join(orig, name), os.path.join(layer, name))
    r = _run(["mount", "--bind", layer, real])
    if r.returncode != 0:
        return "cannot bind-mount over %s: %s" % (real, r.stderr.strip())
    unittest.addModuleCleanup(_run, ["umount", "-l", real])
    return None


def private_namespace():
    """Enter a private mount namespace with the helper installed in /sbin (once per process).
    SkipTest when the tests cannot run here."""
    if _namespace["state"] is None:
        _namespace["state"] = _setup_namespace()
    if _namespace["state"] != "ok":
        raise unittest.SkipTest(_namespace["state"])


def _setup_namespace():
    kvc.require_environment()
    if not shutil.which("mount") or not shutil.which("umount"):
        return "mount(8) is not installed"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        return "unshare(CLONE_NEWNS): %s" % os.strerror(ctypes.get_errno())
    r = _run(["mount", "--make-rprivate", "/"])
    if r.returncode != 0:
        return "mount --make-rprivate /: %s" % r.stderr.strip()
    why = shadow_directory("/sbin", {"mount.fuse.kvcachefs": HELPER, "mount.kvcachefs": HELPER})
    return why or "ok"


# --------------------------------------------------------------------------------------------
# Option mapping (no root, no FUSE)

class OptionMapping(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not shutil.which("bash"):
            raise unittest.SkipTest("bash is not installed")
        cls.tmp = tempfile.mkdtemp(prefix="kvc-itest-mh-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cls.fake = os.path.join(cls.tmp, "kvcachefs")
        write_fake_daemon(cls.fake)
        cls.args_file = os.path.join(cls.tmp, "args")

    def env(self, **kw):
        env = dict(os.environ, KVCACHEFS_BIN=self.fake, FAKE_ARGS=self.args_file)
        env.pop("KVCACHEFS_MOUNT_PRINT", None)
        env.update(kw)
        return env

    def mapped(self, opts, *extra):
        """The daemon's argv (without the program) for -o opts."""
        args = ["kvcachefs", "/mnt/kv"] + (["-o", opts] if opts is not None else []) + list(extra)
        r = run_helper(args, env=self.env(KVCACHEFS_MOUNT_PRINT="1"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        argv = r.stdout.split("\n")
        self.assertEqual(argv[-1], "")
        self.assertEqual(argv[0], self.fake)
        self.assertEqual(argv[-3:-1], ["--", "/mnt/kv"], "the mountpoint comes last, after --")
        return argv[1:-3]

    def refused(self, opts, *words):
        """-o opts must fail with status 1 and one line on stderr holding each of words."""
        r = run_helper(["kvcachefs", "/mnt/kv", "-o", opts],
                       env=self.env(KVCACHEFS_MOUNT_PRINT="1"))
        self.assertEqual(r.returncode, 1, "%r: %s" % (opts, r.stdout))
        self.assertEqual(r.stdout, "")
        lines = r.stderr.splitlines()
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertTrue(lines[0].startswith("mount.kvcachefs: "), lines[0])
        for w in words:
            self.assertIn(w, lines[0])

    def test_key_value(self):
        self.assertEqual(
            self.mapped("pool_size=1G,evict_high=90,evict_low=70,max_block_size=16M,"
                        "pool_path=/dev/shm/kv,pool_mode=0640,pool_group=kvcache,"
                        "ssd_queue_depth=64"),
            ["--pool-size=1G", "--evict-high=90", "--evict-low=70", "--max-block-size=16M",
             "--pool-path=/dev/shm/kv", "--pool-mode=0640", "--pool-group=kvcache",
             "--ssd-queue-depth=64"])

    def test_dashes_accepted_too(self):
        self.assertEqual(self.mapped("pool-size=1G"), ["--pool-size=1G"])

    def test_flag_without_value(self):
        self.assertEqual(self.mapped("fresh"), ["--fresh"])

    def test_repeated_key(self):
        self.assertEqual(self.mapped("ssd=/data/a.img:100G,pool_size=1G,ssd=/dev/nvme1n1"),
                         ["--ssd=/data/a.img:100G", "--pool-size=1G", "--ssd=/dev/nvme1n1"])

    def test_cluster_and_quoted_commas(self):
        self.assertEqual(
            self.mapped('etcd="http://10.0.0.1:2379,http://10.0.0.2:2379",cluster=prod,'
                        'node_id=7,listen=10.0.0.1:7000,secret_file=/etc/kvcachefs/secret'),
            ["--etcd=http://10.0.0.1:2379,http://10.0.0.2:2379", "--cluster=prod",
             "--node-id=7", "--listen=10.0.0.1:7000",
             "--secret-file=/etc/kvcachefs/secret"])

    def test_values_kept_verbatim(self):
        # '=', ':', a single quote and a space inside a value; an empty value
        self.assertEqual(self.mapped("pool_path=/dev/shm/a=b:c,secret_file=/etc/it's here"),
                         ["--pool-path=/dev/shm/a=b:c", "--secret-file=/etc/it's here"])
        self.assertEqual(self.mapped("listen="), ["--listen="])

    def test_new_daemon_options_need_no_change(self):
        # options the daemon does not have yet map by the same rule
        self.assertEqual(self.mapped("metrics=127.0.0.1:9100,log_level=debug,some_future=x"),
                         ["--metrics=127.0.0.1:9100", "--log-level=debug", "--some-future=x"])

    def test_every_daemon_option_expressible(self):
        """Each long option of 'kvcachefs --help' (those a mount can use) as key=value."""
        if not os.access(kvc.KVCACHEFS, os.X_OK):
            self.skipTest("%s is not built" % kvc.KVCACHEFS)
        r, _ = kvc.run_daemon(["--help"])
        self.assertEqual(r.returncode, 0)
        names = sorted(set(re.findall(r"--([a-z][a-z-]+)", r.stdout.decode())))
        self.assertIn("pool-size", names)
        for name in names:
            if name in ("foreground", "debug", "help", "version"):
                continue
            key = name.replace("-", "_")
            self.assertEqual(self.mapped("%s=V" % key), ["--%s=V" % name], name)
            self.assertEqual(self.mapped(key), ["--%s" % name], name)

    def test_fuse_options_to_dash_o(self):
        self.assertEqual(
            self.mapped("rw,pool_size=1G,nosuid,nodev,noexec,allow_other,noatime,"
                        "default_permissions,fresh,ro,sync,dirsync,fsname=kv"),
            ["--pool-size=1G", "--fresh", "-o",
             "rw,nosuid,nodev,noexec,allow_other,noatime,default_permissions,ro,sync,dirsync,"
             "fsname=kv"])

    def test_fstab_and_systemd_options_dropped(self):
        self.assertEqual(
            self.mapped("defaults,auto,noauto,_netdev,_rnetdev,nofail,user,users,nouser,"
                        "owner,group,user=alice,comment=x,x-systemd.automount,"
                        "x-systemd.requires=etcd.service,x-systemd.mount-timeout=30,"
                        "X-mount.mkdir,helper=kvcachefs,pool_size=1G"),
            ["--pool-size=1G"])

    def test_empty_options(self):
        self.assertEqual(self.mapped(None), [])
        self.assertEqual(self.mapped(",,pool_size=1G,"), ["--pool-size=1G"])

    def test_several_dash_o(self):
        self.assertEqual(self.mapped("pool_size=1G", "-o", "fresh,rw", "-oevict_high=95"),
                         ["--pool-size=1G", "--fresh", "--evict-high=95", "-o", "rw"])

    def test_foreground_and_friends_refused(self):
        for key in ("foreground", "fore", "f", "debug", "deb", "d", "foreground=1"):
            self.refused("pool_size=1G," + key, "cannot be a mount option",
                         key.split("=")[0])
        for key in ("help", "h", "version", "vers"):
            self.refused(key, "is not a mount option")

    def test_malformed_options_refused(self):
        self.refused("pool size=1G", "invalid mount option 'pool size=1G'")
        self.refused("-x", "invalid mount option '-x'")
        self.refused("x.y=1", "invalid option 'x.y=1'")
        self.refused("=1G", "invalid mount option '=1G'")
        self.refused('etcd="http://a:1,http://b:1', "unbalanced")

    def test_mount_flags(self):
        # what mount(8) may add: -t TYPE, -s (sloppy), -n (no mtab), combined
        self.assertEqual(self.mapped("fresh", "-t", "fuse.kvcachefs", "-sn"), ["--fresh"])
        self.assertEqual(self.mapped("fresh", "-tkvcachefs", "-s", "-n"), ["--fresh"])
        for bad in (["-N", "1234"], ["-x"], ["-o"]):
            r = run_helper(["kvcachefs", "/mnt/kv"] + bad, env=self.env(KVCACHEFS_MOUNT_PRINT="1"))
            self.assertEqual(r.returncode, 1, bad)
            self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
        for args in ([], ["kvcachefs"], ["kvcachefs", "/a", "/b"]):
            r = run_helper(args, env=self.env())
            self.assertEqual(r.returncode, 1, args)
            self.assertIn("usage", r.stderr)

    def test_help(self):
        r = run_helper(["--help"])
        self.assertEqual(r.returncode, 0)
        self.assertIn("fuse.kvcachefs", r.stdout)

    def run_fake(self, opts, *flags, rc=0):
        if os.path.exists(self.args_file):
            os.unlink(self.args_file)
        return run_helper(["kvcachefs", "/mnt/kv", "-o", opts] + list(flags),
                          env=self.env(FAKE_RC=str(rc)))

    def test_runs_daemon_and_maps_exit_status(self):
        r = self.run_fake("pool_size=1G,ssd=/a,ssd=/b,rw")
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(self.args_file) as f:
            self.assertEqual(f.read().splitlines(),
                             ["--pool-size=1G", "--ssd=/a", "--ssd=/b", "-o", "rw", "--",
                              "/mnt/kv"])
        # the daemon's 2 (bad arguments) is mount's 1 (bad usage); other failures are 32
        for daemon_rc, mount_rc in ((2, 1), (1, 32), (3, 32)):
            self.assertEqual(self.run_fake("pool_size=1G", rc=daemon_rc).returncode, mount_rc)

    def test_fake_and_verbose(self):
        r = self.run_fake("pool_size=1G", "-f", "-v")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(os.path.exists(self.args_file), "-f (fake) must not run the daemon")
        self.assertIn("--pool-size=1G", r.stderr)
        r = self.run_fake("pool_size=1G", "-v")
        self.assertEqual(r.returncode, 0)
        self.assertTrue(os.path.exists(self.args_file))
        self.assertRegex(r.stderr, r"running .*kvcachefs.*--pool-size=1G")

    def test_daemon_lookup(self):
        """KVCACHEFS_BIN, else kvcachefs next to the helper (symlinks resolved), else in
        ../bin from there (PREFIX/sbin -> PREFIX/bin), else PATH."""
        root = tempfile.mkdtemp(prefix="kvc-itest-lookup-")
        self.addCleanup(shutil.rmtree, root, True)
        for d in ("sbin", "bin", "links", "path"):
            os.mkdir(os.path.join(root, d))
        helper = os.path.join(root, "sbin", "mount.kvcachefs")
        shutil.copy(HELPER, helper)
        link = os.path.join(root, "links", "mount.fuse.kvcachefs")
        os.symlink(helper, link)
        env = dict(os.environ, KVCACHEFS_MOUNT_PRINT="1",
                   PATH=os.path.join(root, "path") + ":/usr/bin:/bin")
        env.pop("KVCACHEFS_BIN", None)

        def daemon():
            r = run_helper(["kvcachefs", "/mnt/kv"], env=env, helper=link)
            return r.stdout.split("\n")[0] if r.returncode == 0 else (r.returncode, r.stderr)

        rc, err = daemon()
        self.assertEqual(rc, 1)
        self.assertIn("cannot find the kvcachefs program", err)
        for d in ("path", "bin", "sbin"):  # each one found first once it exists
            write_fake_daemon(os.path.join(root, d, "kvcachefs"))
            self.assertEqual(daemon(), os.path.join(root, d, "kvcachefs"), d)
        env["KVCACHEFS_BIN"] = self.fake
        self.assertEqual(daemon(), self.fake)
        env["KVCACHEFS_BIN"] = os.path.join(root, "missing")
        self.assertEqual(daemon()[0], 1)


class Install(unittest.TestCase):
    """cmake --install (component mount): the helper under both names, the unit."""

    def test_install(self):
        if not shutil.which("cmake"):
            self.skipTest("cmake is not installed")
        if not os.path.exists(os.path.join(BUILD_DIR, "cmake_install.cmake")):
            self.skipTest("no build directory at %s" % BUILD_DIR)
        prefix = tempfile.mkdtemp(prefix="kvc-itest-install-mh-")
        self.addCleanup(shutil.rmtree, prefix, True)
        with open(os.path.join(BUILD_DIR, "cmake_install.cmake")) as f:
            self.assertIn("mount.kvcachefs", f.read(),
                          "%s has no install rule for the mount helper: configure it again "
                          "(cmake -S . -B %s)" % (BUILD_DIR, BUILD_DIR))
        r = subprocess.run(["cmake", "--install", BUILD_DIR, "--prefix", prefix,
                            "--component", "mount"], capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        helper = os.path.join(prefix, "sbin", "mount.kvcachefs")
        link = os.path.join(prefix, "sbin", "mount.fuse.kvcachefs")
        self.assertTrue(os.access(helper, os.X_OK))
        self.assertEqual(os.readlink(link), "mount.kvcachefs")
        self.assertTrue(os.path.isfile(os.path.join(prefix, "lib", "systemd", "system",
                                                    "kvcachefs@.service")))
        # the installed helper finds PREFIX/bin/kvcachefs
        os.mkdir(os.path.join(prefix, "bin"))
        write_fake_daemon(os.path.join(prefix, "bin", "kvcachefs"))
        env = dict(os.environ, KVCACHEFS_MOUNT_PRINT="1")
        env.pop("KVCACHEFS_BIN", None)
        r = run_helper(["kvcachefs", "/mnt/kv", "-o", "pool_size=1G"], env=env, helper=link)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split("\n")[:2],
                         [os.path.join(prefix, "bin", "kvcachefs"), "--pool-size=1G"])


# --------------------------------------------------------------------------------------------
# Through mount(8), with the real daemon (root, FUSE)

class HelperMount:
    """A fresh mountpoint for mounts made through mount(8); cleaned up at the test's end:
    unmounted, the daemon waited for, the pool object and the given SSD files removed, the
    directory removed, sanitizer reports turned into a failure."""

    def __init__(self, testcase, ssd_files=()):
        self.mnt = os.path.realpath(tempfile.mkdtemp(prefix="kvc-itest-mnt-"))
        self.logdir = tempfile.mkdtemp(prefix="kvc-itest-log-")
        self.pool = "/dev/shm/kvcachefs" + self.mnt.replace("/", ".")
        self.files = [self.pool] + list(ssd_files)
        self.pids = set()
        testcase.addCleanup(self.cleanup)

    def env(self):
        env = kvc.sanitizer_env(self.logdir)
        env["KVCACHEFS_BIN"] = kvc.KVCACHEFS
        env.pop("KVCACHEFS_MOUNT_PRINT", None)
        return env

    def mount(self, *args):
        """Run mount with args (text CompletedProcess); note the daemon when it mounted."""
        r = subprocess.run(["mount"] + list(args), stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=120, env=self.env())
        if kvc.is_mounted(self.mnt):
            pid = wait_until(lambda: kvc.find_daemon(self.mnt), timeout=5)
            if pid:
                self.pids.add(pid)
        return r

    def daemon(self):
        return kvc.find_daemon(self.mnt)

    def cleanup(self):
        problems = []
        if kvc.is_mounted(self.mnt) and not kvc.unmount(self.mnt):
            problems.append("could not unmount %s" % self.mnt)
        for pid in list(self.pids):
            if not wait_until(lambda: kvc.process_gone(pid), timeout=20):
                problems.append("the daemon (pid %d) did not exit" % pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                wait_until(lambda: kvc.process_gone(pid), timeout=10)
        if kvc.is_mounted(self.mnt):
            kvc.lazy_unmount(self.mnt)
        for f in self.files:
            kvc.remove_regular_file(f)
        try:
            os.rmdir(self.mnt)
        except OSError as e:
            problems.append("cannot remove %s: %s" % (self.mnt, e))
        reports = kvc.sanitizer_reports(self.logdir)
        shutil.rmtree(self.logdir, ignore_errors=True)
        if reports:
            problems.append("sanitizer report(s):\n" + "\n".join(reports))
        if problems:
            raise AssertionError("; ".join(problems))


def roundtrip(test, m, name, size=256 * 1024):
    """Write block name into mount m and read it back."""
    data = kvc.det_bytes(name, size)
    kvc.write_block(os.path.join(m.mnt, name), data)
    test.assertEqual(kvc.read_block(os.path.join(m.mnt, name)), data)


class ThroughMount(kvc.TestCase):
    @classmethod
    def setUpClass(cls):
        private_namespace()

    def assertMounted(self, m, r):
        self.assertEqual(r.returncode, 0, "mount failed: %s%s" % (r.stdout, r.stderr))
        self.assertEqual(r.stderr, "")
        e = kvc.mount_entry(m.mnt)
        self.assertIsNotNone(e, "mount returned 0 but nothing is mounted on %s" % m.mnt)
        self.assertEqual(e[0], "kvcachefs")
        self.assertEqual(e[2], "fuse.kvcachefs")
        pid = m.daemon()
        self.assertIsNotNone(pid, "no daemon serves %s" % m.mnt)
        return e[3].split(","), pid

    def assertNothingMounted(self, m):
        self.assertFalse(kvc.is_mounted(m.mnt))
        self.assertIsNone(m.daemon())
        self.assertFalse(os.path.exists(m.pool), "a failed mount left %s" % m.pool)

    def umount(self, m, pid):
        """umount (the command), then the daemon must exit."""
        r = subprocess.run(["umount", m.mnt], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(kvc.is_mounted(m.mnt))
        self.assertTrue(wait_until(lambda: kvc.process_gone(pid), timeout=20),
                        "the daemon (pid %d) did not exit after umount" % pid)

    def test_mount_type_fuse_kvcachefs(self):
        m = HelperMount(self)
        r = m.mount("-t", "fuse.kvcachefs", "kvcachefs", m.mnt, "-o", "pool_size=16M,evict_high=90")
        opts, pid = self.assertMounted(m, r)
        roundtrip(self, m, "block-a")
        st = kvc.ctl_status_json(m.mnt)
        self.assertEqual(st["pool_size"], 16 * MiB)
        self.assertEqual(st["evict_high_pct"], 90)
        self.assertEqual(st["blocks"], 1)
        self.assertIn("nosuid", opts)  # libfuse's default, kept
        self.umount(m, pid)

    def test_mount_type_kvcachefs(self):
        m = HelperMount(self)
        r = m.mount("-t", "kvcachefs", "kvcachefs", m.mnt, "-o", "pool_size=16M,evict_low=50")
        _, pid = self.assertMounted(m, r)
        roundtrip(self, m, "block-b")
        self.assertEqual(kvc.ctl_status_json(m.mnt)["evict_low_pct"], 50)
        self.umount(m, pid)

    def test_standard_mount_options(self):
        m = HelperMount(self)
        r = m.mount("-t", "fuse.kvcachefs", "kvcachefs", m.mnt, "-o",
                    "pool_size=16M,nosuid,nodev,noexec,noatime,allow_other,default_permissions,"
                    "_netdev,nofail,users,x-systemd.requires=network-online.target,comment=kv")
        opts, pid = self.assertMounted(m, r)
        for o in ("rw", "nosuid", "nodev", "noexec", "noatime", "allow_other"):
            self.assertIn(o, opts)
        roundtrip(self, m, "block-c")
        self.umount(m, pid)

    def test_read_only(self):
        m = HelperMount(self)
        r = m.mount("-t", "fuse.kvcachefs", "-o", "ro,pool_size=16M", "kvcachefs", m.mnt)
        opts, pid = self.assertMounted(m, r)
        self.assertIn("ro", opts)
        self.assertErrno(errno.EROFS, os.open, os.path.join(m.mnt, "x"),
                         os.O_WRONLY | os.O_CREAT, 0o644)
        self.umount(m, pid)

    def test_fstab_ssd_fresh(self):
        d = kvc.disk_tempdir(self)
        ssd = [os.path.join(d, "a.img"), os.path.join(d, "b.img")]
        m = HelperMount(self, ssd_files=ssd)
        fstab = os.path.join(d, "fstab")
        line = ("kvcachefs %s fuse.kvcachefs pool_size=16M,ssd=%s:16M,ssd=%s:16M,noatime,"
                "_netdev,nofail,x-systemd.automount 0 0\n" % (m.mnt, ssd[0], ssd[1]))
        with open(fstab, "w") as f:
            f.write("# a temporary fstab of test_mount_helper\n" + line)
        with open(fstab + ".fresh", "w") as f:
            f.write(line.replace(",noatime,", ",noatime,fresh,"))

        opts, pid = self.assertMounted(m, m.mount("-T", fstab, m.mnt))
        self.assertIn("noatime", opts)
        st = kvc.ctl_status_json(m.mnt)
        self.assertEqual(st["pool_size"], 16 * MiB)
        self.assertEqual(st["ssd_devices"], 2)
        self.assertGreater(st["ssd_capacity"], 16 * MiB)
        for f in ssd:
            self.assertTrue(os.path.isfile(f), f)
        roundtrip(self, m, "kept")
        self.umount(m, pid)

        # the same line again: the block is recovered
        _, pid = self.assertMounted(m, m.mount("-T", fstab, m.mnt))
        self.assertEqual(kvc.read_block(os.path.join(m.mnt, "kept")),
                         kvc.det_bytes("kept", 256 * 1024))
        self.assertGreaterEqual(kvc.ctl_status_json(m.mnt)["recovered"], 1)
        self.umount(m, pid)

        # with fresh: discarded
        _, pid = self.assertMounted(m, m.mount("-T", fstab + ".fresh", m.mnt))
        self.assertTrue(kvc.gone(os.path.join(m.mnt, "kept")))
        st = kvc.ctl_status_json(m.mnt)
        self.assertEqual((st["blocks"], st["recovered"], st["ssd_devices"]), (0, 0, 2))
        self.umount(m, pid)

    def test_unknown_key_refused(self):
        m = HelperMount(self)
        r = m.mount("-t", "fuse.kvcachefs", "kvcachefs", m.mnt, "-o",
                    "pool_size=16M,bogus_key=1")
        self.assertEqual(r.returncode, 1, r.stderr)
        lines = r.stderr.splitlines()
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertIn("unknown option '--bogus-key=1'", lines[0])
        self.assertNothingMounted(m)

    def test_bad_value_refused(self):
        m = HelperMount(self)
        r = m.mount("-t", "fuse.kvcachefs", "kvcachefs", m.mnt, "-o", "pool_size=lots")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
        self.assertIn("--pool-size", r.stderr)
        self.assertNothingMounted(m)

    def test_foreground_refused(self):
        m = HelperMount(self)
        r = m.mount("-t", "fuse.kvcachefs", "kvcachefs", m.mnt, "-o", "pool_size=16M,foreground")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("'foreground' cannot be a mount option", r.stderr)
        self.assertNothingMounted(m)

    def test_quotes_survive_mount(self):
        """mount(8) hands a quoted value to the helper intact (checked with -f -v: the helper
        prints the daemon's command line and runs nothing)."""
        m = HelperMount(self)
        r = m.mount("-f", "-v", "-t", "fuse.kvcachefs", "kvcachefs", m.mnt, "-o",
                    'pool_size=16M,etcd="http://127.0.0.1:1,http://127.0.0.2:1",cluster=c')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("'--etcd=http://127.0.0.1:1,http://127.0.0.2:1' '--cluster=c'", r.stderr)
        self.assertNothingMounted(m)


# --------------------------------------------------------------------------------------------
# The systemd unit

def unit_commands(key):
    """The command lines of key= (e.g. ExecStop) in the unit, as systemd would run them with
    $$ made $ (the variables then come from the environment): [argv], the '-' prefix
    dropped."""
    out = []
    with open(UNIT) as f:
        for line in f:
            if line.startswith(key + "="):
                cmd = line[len(key) + 1:].strip().lstrip("-")
                out.append(shlex.split(cmd.replace("$$", "$")))
    return out


class UnitFile(kvc.TestCase):
    def test_settings(self):
        with open(UNIT) as f:
            text = f.read()
        settings = dict(l.split("=", 1) for l in text.splitlines()
                        if l and not l.startswith("#") and not l.startswith("[") and "=" in l)
        self.assertEqual(settings["Type"], "forking")
        self.assertEqual(settings["Restart"], "on-failure")
        self.assertEqual(settings["LimitMEMLOCK"], "infinity")
        self.assertIn("network-online.target", settings["After"])
        self.assertEqual(settings["EnvironmentFile"], "/etc/kvcachefs/%i.conf")
        self.assertIn("fusermount3 -u", settings["ExecStop"])
        self.assertNotRegex(settings["ExecStart"], r"(^|\s)-[fd](\s|$)|--foreground|--debug")

    def test_systemd_analyze_verify(self):
        tool = shutil.which("systemd-analyze")
        if not tool:
            self.skipTest("systemd-analyze is not installed")
        # verify wants ExecStart's kvcachefs in systemd's search path: put the built one in
        # /usr/local/bin of the private mount namespace
        private_namespace()
        why = shadow_directory("/usr/local/bin", {"kvcachefs": kvc.KVCACHEFS})
        if why:
            self.skipTest(why)
        d = tempfile.mkdtemp(prefix="kvc-itest-unit-")
        self.addCleanup(shutil.rmtree, d, True)
        shutil.copy(UNIT, d)
        r = subprocess.run([tool, "verify", os.path.join(d, "kvcachefs@kv.service")],
                           capture_output=True, text=True, timeout=120, cwd=d)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("kvcachefs@", r.stderr)

    def test_start_pre_and_stop_commands(self):
        """ExecStartPre detaches a crashed daemon's dead mount and leaves a live one alone;
        ExecStop unmounts and returns once the daemon has exited. Run with sh as systemd
        would, after an ExecStart as the unit writes it."""
        private_namespace()
        (pre,) = unit_commands("ExecStartPre")
        (stop,) = unit_commands("ExecStop")
        (start,) = unit_commands("ExecStart")
        m = HelperMount(self)
        opts = "--pool-size 16M --evict-high 95"
        env = dict(m.env(), MOUNTPOINT=m.mnt, KVCACHEFS_OPTS=opts)
        self.assertEqual(start, ["kvcachefs", "$KVCACHEFS_OPTS", "${MOUNTPOINT}"])
        argv = [kvc.KVCACHEFS] + opts.split() + [m.mnt]

        def run(cmd, **kw):
            return subprocess.run(cmd, env=dict(env, **kw), capture_output=True, text=True,
                                  timeout=60)

        def start_daemon():
            r = run(argv)
            self.assertEqual(r.returncode, 0, r.stderr)
            pid = wait_until(lambda: m.daemon(), timeout=5)
            self.assertIsNotNone(pid)
            m.pids.add(pid)
            return pid

        pid = start_daemon()
        self.assertEqual(run(pre).returncode, 0)
        self.assertTrue(kvc.is_mounted(m.mnt), "ExecStartPre unmounted a live mount")
        roundtrip(self, m, "survives")

        os.kill(pid, signal.SIGKILL)
        self.assertTrue(wait_until(lambda: kvc.process_gone(pid), timeout=20))
        self.assertErrno(errno.ENOTCONN, os.statvfs, m.mnt)
        self.assertEqual(run(pre).returncode, 0)
        self.assertFalse(kvc.is_mounted(m.mnt), "ExecStartPre left the dead mount")

        pid = start_daemon()  # the restart recovers the block
        self.assertEqual(kvc.read_block(os.path.join(m.mnt, "survives")),
                         kvc.det_bytes("survives", 256 * 1024))
        r = run(stop, MAINPID=str(pid))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(kvc.is_mounted(m.mnt))
        self.assertTrue(kvc.process_gone(pid), "ExecStop returned before the daemon exited")


if __name__ == "__main__":
    kvc.main()

#!/usr/bin/env python3
"""The side channel's trust model, from an unprivileged user (nobody): who may map the pool
(--pool-mode, --pool-group), that clients map it read-only, that creating blocks needs write
permission on the directory, and that only a trusted writer may commit in place."""

import fcntl
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile

import kvc
from kvc import Mount

# An interpreter nobody can run (the one running the tests may live under /root).
PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
NOBODY = 65534
NOGROUP = 65534

# Runs as nobody: loads libkvcache from argv[1], runs the steps of argv[3] on mount argv[2],
# prints one JSON object of results. Negative numbers are -errno from the library.
CHILD = r'''
import ctypes, json, os, sys
L = ctypes.CDLL(sys.argv[1])
mnt, steps = sys.argv[2], sys.argv[3].split(",")
class Put(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("len", ctypes.c_size_t), ("id", ctypes.c_uint64),
                ("dir", ctypes.c_void_p), ("inplace", ctypes.c_bool)]
class Blk(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("len", ctypes.c_size_t), ("gen", ctypes.c_uint64),
                ("sum", ctypes.c_uint64), ("pin", ctypes.c_uint64), ("dir", ctypes.c_void_p)]
out = {}
k = ctypes.c_void_p()
flags = 1 if "trusted" in steps else 0
out["open"] = L.kvc_open(mnt.encode(), flags, ctypes.byref(k))
if out["open"] == 0:
    with open("/proc/self/maps") as f:
        path = None
        for line in f:
            if "kvcachefs" in line and "/dev/shm" in line:
                out["perms"] = line.split()[1]
    for dname in ("rootdir", "open"):
        d = ctypes.c_void_p()
        if L.kvc_dir_open(k, dname.encode(), ctypes.byref(d)):
            continue
        if "get" in steps and dname == "rootdir":
            b = Blk()
            out["get"] = L.kvc_get(d, b"blk", ctypes.byref(b))
            if out["get"] == 0:
                out["bytes"] = ctypes.string_at(b.data, b.len).decode()
                L.kvc_release(ctypes.byref(b))
        if "put" in steps:
            data = b"from nobody " + dname.encode()
            out["put_" + dname] = L.kvc_put(d, b"mine", data, len(data), 0)
        if "inplace" in steps and dname == "open":
            p = Put()
            r = L.kvc_reserve(d, b"inplace", 5, ctypes.byref(p))
            out["reserve"] = r
            if r == 0:
                if p.inplace:
                    ctypes.memmove(p.data, b"hello", 5)
                out["commit"] = L.kvc_commit(ctypes.byref(p), 0)
        L.kvc_dir_close(d)
    L.kvc_close(k)
print(json.dumps(out))
'''


def pool_path(mnt):
    """The pool object's path, as the daemon's pool-info ioctl gives it."""
    fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buf = bytearray(struct.pack("<I", 1).ljust(360, b"\0"))
        fcntl.ioctl(fd, (3 << 30) | (360 << 16) | (0xCF << 8) | 2, buf)
    finally:
        os.close(fd)
    return bytes(buf[104:]).split(b"\0")[0].decode()


def setUpModule():
    kvc.require_environment()
    kvc.require_libkvcache()


class TrustModel(kvc.TestCase):
    @classmethod
    def setUpClass(cls):
        # A copy of the library that nobody can read, wherever the build tree is.
        cls.libdir = tempfile.mkdtemp(prefix="kvc-itest-lib-")
        os.chmod(cls.libdir, 0o755)
        cls.lib = os.path.join(cls.libdir, "libkvcache.so")
        shutil.copy(kvc.LIBKVCACHE, cls.lib)
        os.chmod(cls.lib, 0o755)
        cls.addClassCleanup(shutil.rmtree, cls.libdir, True)

    def mount(self, *args):
        m = Mount.for_test(self, "--pool-size", "32M", "-o", "allow_other", *args)
        os.mkdir(m.path("rootdir"), 0o755)
        os.mkdir(m.path("open"))
        os.chmod(m.path("open"), 0o777)
        kvc.write_block(m.path("rootdir", "blk"), b"root's block")
        return m

    def as_nobody(self, m, *steps):
        def drop():
            os.setgroups([])
            os.setgid(NOGROUP)
            os.setuid(NOBODY)

        r = subprocess.run([PYTHON, "-c", CHILD, self.lib, m.mnt, ",".join(steps)],
                           capture_output=True, text=True, timeout=60, preexec_fn=drop,
                           env=kvc.python_lib_env(), cwd="/")
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def test_default_pool_is_private(self):
        m = self.mount()
        self.assertEqual(stat.S_IMODE(os.stat(pool_path(m.mnt)).st_mode), 0o600)
        out = self.as_nobody(m, "get")
        self.assertEqual(out["open"], -13)  # EACCES: nobody may not map the pool

    def test_readable_pool_maps_read_only(self):
        m = self.mount("--pool-mode", "0644")
        out = self.as_nobody(m, "get", "put")
        self.assertEqual(out["open"], 0)
        self.assertEqual(out["perms"], "r--s")
        self.assertEqual(out["get"], 0)
        self.assertEqual(out["bytes"], "root's block")
        # Creating needs write permission on the directory, as creat() would.
        self.assertEqual(out["put_rootdir"], -13)
        self.assertEqual(out["put_open"], 0)
        self.assertFalse(os.path.exists(m.path("rootdir", "mine")))
        self.assertEqual(kvc.read_block(m.path("open", "mine")), b"from nobody open")
        self.assertEqual(os.stat(m.path("open", "mine")).st_uid, NOBODY)

    def test_trusted_writer_needs_write_permission(self):
        m = self.mount("--pool-mode", "0644")
        out = self.as_nobody(m, "trusted")
        self.assertEqual(out["open"], -13)

    def test_commit_in_place_refused_to_untrusted(self):
        m = self.mount("--pool-mode", "0644")
        # The library never asks an untrusted reservation to commit in place; a raw ioctl
        # does, and the daemon refuses it.
        out = subprocess.run(
            [PYTHON, "-c", RAW_INPLACE, m.path("open")], capture_output=True,
            text=True, timeout=60, cwd="/",
            preexec_fn=lambda: (os.setgroups([]), os.setgid(NOGROUP), os.setuid(NOBODY)))
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.split(), ["reserve=0", "commit=EPERM", "abort=0"])
        self.assertFalse(os.path.exists(m.path("open", "x")))

    def test_group_trusted_writer_fills_in_place(self):
        m = self.mount("--pool-mode", "0660", "--pool-group", "nogroup")
        st = os.stat(pool_path(m.mnt))
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_gid), (0o660, NOGROUP))
        out = self.as_nobody(m, "trusted", "inplace")
        self.assertEqual(out["open"], 0)
        self.assertEqual(out["perms"], "rw-s")
        self.assertEqual((out["reserve"], out["commit"]), (0, 0))
        self.assertEqual(kvc.read_block(m.path("open", "inplace")), b"hello")


# Raw ioctls (no library): reserve 4 bytes, then commit with KVCACHEFS_COMMIT_INPLACE.
RAW_INPLACE = r'''
import ctypes, errno, fcntl, os, struct, sys
def IOC(d, nr, size): return (d << 30) | (size << 16) | (0xCF << 8) | nr
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
rv = bytearray(struct.pack("<IIQQQ", 1, 0o644, 4, 0, 0) + b"x".ljust(256, b"\0"))
fcntl.ioctl(fd, IOC(3, 6, 288), rv)
rid = struct.unpack_from("<Q", rv, 16)[0]
print("reserve=0")
cm = bytearray(struct.pack("<IIQQQQ", 1, 2, rid, 0, 0, 0))
try:
    fcntl.ioctl(fd, IOC(3, 7, 40), cm)
    print("commit=0")
except OSError as e:
    print("commit=" + errno.errorcode[e.errno])
fcntl.ioctl(fd, IOC(1, 8, 16), bytearray(struct.pack("<IIQ", 1, 0, rid)))
print("abort=0")
'''

if __name__ == "__main__":
    kvc.main()

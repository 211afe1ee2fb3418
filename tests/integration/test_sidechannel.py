#!/usr/bin/env python3
"""The side channel (fs/uapi/kvcachefs.h, fs/uapi/kvcache.h) through a real mount: pool info
and mapping, longest-prefix lookup, pins, reservations, GPU registration; through libkvcache
(ctypes) and through raw ioctls (fcntl.ioctl on ctypes mirrors of the ABI structs) for the
malformed requests the library would never send. Every error is checked against the errno
the headers document.

The mirrors are checked against the header itself: ioctl numbers and struct sizes are read
from fs/uapi/kvcachefs.h, so a layout change there that is not mirrored here fails test_abi."""

import ctypes
import ctypes.util
import errno
import fcntl
import mmap
import os
import re
import select
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import zlib

import kvc

kvc.reexec_for_libkvcache()  # in the sanitizer build: preload the runtimes, then come back

from kvc import KiB, MiB, Mount, wait_until  # noqa: E402

HEADER = os.path.join(kvc.SOURCE_DIR, "fs", "uapi", "kvcachefs.h")

# --------------------------------------------------------------------------------------------
# ABI mirrors

u8, u32, s32, u64 = ctypes.c_uint8, ctypes.c_uint32, ctypes.c_int32, ctypes.c_uint64

ABI_VERSION = 1
MAGIC = 0xCF
NAMES_HEX = 0x1
SUFFIX_MAX = 16
PATH_MAX = 256
LOOKUP_MAX, LOOKUP_BYTES = 1000, 16000
PIN_MAX, PIN_BYTES = 128, 8192
UNPIN_MAX = 256
LOCATE_MAX = 600
GPU_LOAD_MAX = 256
COMMIT_NOREPLACE, COMMIT_INPLACE = 0x1, 0x2
CUDA_IPC_HANDLE_SIZE = 64


class Status(ctypes.Structure):
    _fields_ = [("version", u32), ("flags", u32)] + [
        (f, u64) for f in ("capacity", "used", "free", "blocks", "writing", "directories",
                           "reads", "writes", "bytes_read", "bytes_written", "hits", "misses",
                           "evictions", "enospc", "max_block_size")] + [
        ("evict_high_pct", u32), ("evict_low_pct", u32), ("pool_size", u64),
        ("start_time_ns", u64), ("pinned", u64), ("reservations", u64), ("members", u64),
        ("cluster_capacity", u64), ("cluster_used", u64), ("reserved", u64 * 3)]


class PoolInfo(ctypes.Structure):
    _fields_ = [("version", u32), ("page_size", u32), ("pool_size", u64), ("data_offset", u64),
                ("capacity", u64), ("pool_dev", u64), ("pool_ino", u64),
                ("max_block_size", u64), ("pool_mode", u32), ("pool_gid", u32),
                ("daemon_pid", u32), ("flags", u32), ("header_offset", u64),
                ("reserved", u64 * 3),
                ("path", ctypes.c_char * PATH_MAX)]


class Lookup(ctypes.Structure):
    _fields_ = [("version", u32), ("flags", u32), ("count", u32), ("found", u32),
                ("suffix", ctypes.c_char * SUFFIX_MAX), ("names", u8 * LOOKUP_BYTES)]


class Pinned(ctypes.Structure):
    _fields_ = [("pin", u64), ("offset", u64), ("length", u64), ("generation", u64),
                ("checksum", u64), ("error", s32), ("pad", u32)]


class Pin(ctypes.Structure):
    _fields_ = [("version", u32), ("flags", u32), ("count", u32), ("pinned", u32),
                ("suffix", ctypes.c_char * SUFFIX_MAX), ("names", u8 * PIN_BYTES),
                ("out", Pinned * PIN_MAX)]


class Located(ctypes.Structure):
    _fields_ = [("offset", u64), ("length", u64), ("generation", u64)]


class LocateArea(ctypes.Union):
    _fields_ = [("names", u8 * (LOCATE_MAX * 24)), ("out", Located * LOCATE_MAX)]


class Locate(ctypes.Structure):
    _anonymous_ = ("u",)
    _fields_ = [("version", u32), ("flags", u32), ("count", u32), ("found", u32),
                ("suffix", ctypes.c_char * SUFFIX_MAX), ("u", LocateArea),
                ("error", u8 * LOCATE_MAX)]


class BlockHeader(ctypes.Structure):
    _fields_ = [("magic", u32), ("flags", u32), ("generation", u64), ("name_hash", u64 * 2),
                ("length", u64), ("checksum", u64), ("seal_time_ns", u64), ("npages", u32),
                ("reserved", u32)]


class Node(ctypes.Structure):
    _fields_ = [("node_id", u64), ("pool_size", u64), ("pool_used", u64), ("started", u64),
                ("state", u32), ("transports", u32), ("addr", ctypes.c_char * 64)]


class Nodes(ctypes.Structure):
    _fields_ = [("version", u32), ("count", u32), ("total", u32), ("flags", u32),
                ("cluster", ctypes.c_char * 64), ("node", Node * 64)]


class Unpin(ctypes.Structure):
    _fields_ = [("version", u32), ("count", u32), ("pins", u64 * UNPIN_MAX)]


class Reserve(ctypes.Structure):
    _fields_ = [("version", u32), ("mode", u32), ("length", u64), ("id", u64), ("offset", u64),
                ("name", ctypes.c_char * PATH_MAX)]


class Commit(ctypes.Structure):
    _fields_ = [("version", u32), ("flags", u32), ("id", u64), ("src_addr", u64),
                ("generation", u64), ("checksum", u64)]


class Abort(ctypes.Structure):
    _fields_ = [("version", u32), ("pad", u32), ("id", u64)]


class GpuRegister(ctypes.Structure):
    _fields_ = [("version", u32), ("device", u32), ("size", u64),
                ("handle", u8 * CUDA_IPC_HANDLE_SIZE), ("id", u64)]


class GpuLoadEnt(ctypes.Structure):
    _fields_ = [("pin", u64), ("offset", u64)]


class GpuLoad(ctypes.Structure):
    _fields_ = [("version", u32), ("count", u32), ("id", u64), ("ent", GpuLoadEnt * GPU_LOAD_MAX)]


class GpuUnregister(ctypes.Structure):
    _fields_ = [("version", u32), ("pad", u32), ("id", u64)]


class Tiers(ctypes.Structure):
    _fields_ = [("version", u32), ("flags", u32)] + [(n, u64) for n in (
        "dram_capacity", "dram_used", "dram_blocks", "ssd_capacity", "ssd_used", "ssd_blocks",
        "ssd_devices", "demotions", "promotions", "ssd_evictions", "recovered",
        "recovery_dropped", "recovery_ns")] + [("reserved", u64 * 8)]


MIRRORS = {"kvcachefs_status": Status, "kvcachefs_tiers": Tiers, "kvcachefs_pool_info": PoolInfo,
           "kvcachefs_lookup": Lookup, "kvcachefs_pinned": Pinned, "kvcachefs_pin": Pin,
           "kvcachefs_unpin": Unpin, "kvcachefs_reserve": Reserve,
           "kvcachefs_commit": Commit, "kvcachefs_abort": Abort,
           "kvcachefs_gpu_register": GpuRegister, "kvcachefs_gpu_load": GpuLoad,
           "kvcachefs_gpu_unregister": GpuUnregister, "kvcachefs_located": Located,
           "kvcachefs_locate": Locate, "kvcachefs_block_header": BlockHeader,
           "kvcachefs_node": Node, "kvcachefs_nodes": Nodes}

_IOC_WRITE, _IOC_READ = 1, 2
_DIRS = {"_IOR": _IOC_READ, "_IOW": _IOC_WRITE, "_IOWR": _IOC_READ | _IOC_WRITE}


def ioc(direction, nr, size, magic=MAGIC):
    return (direction << 30) | (size << 16) | (magic << 8) | nr


def parse_header():
    """{command: (direction, nr, struct name)}, {struct name: size}, {constant: int}."""
    with open(HEADER) as f:
        text = f.read()
    cmds = {m.group(1): (_DIRS[m.group(2)], int(m.group(3)), m.group(4)) for m in re.finditer(
        r"#define\s+KVCACHEFS_IOC_(\w+)\s+(_IOWR|_IOR|_IOW)\(KVCACHEFS_IOC_MAGIC,\s*(\d+),"
        r"\s*struct\s+(\w+)\)", text)}
    sizes = {m.group(1): int(m.group(2))
             for m in re.finditer(r"KVCACHEFS_ABI_CHECK\((\w+),\s*(\d+)\);", text)}
    consts = {m.group(1): int(m.group(2), 0)
              for m in re.finditer(r"#define\s+(KVCACHEFS_\w+)\s+(0x[0-9a-fA-F]+|\d+)u?\b", text)}
    return cmds, sizes, consts


CMDS, SIZES, CONSTS = parse_header()
# ioctl numbers from the header's nr and direction and our mirror's size
REQ = {c: ioc(d, nr, ctypes.sizeof(MIRRORS[s])) for c, (d, nr, s) in CMDS.items()}


def raw(fd, cmd, arg, req=None):
    """ioctl(fd, KVCACHEFS_IOC_<cmd>, &arg); raises OSError; returns arg (filled in)."""
    fcntl.ioctl(fd, REQ[cmd] if req is None else req, arg, True)
    return arg


def put_bytes(field_owner, field, data):
    """Copy data into a u8 array field of a ctypes struct."""
    off = getattr(type(field_owner), field).offset
    ctypes.memmove(ctypes.addressof(field_owner) + off, data, len(data))


def packed(names):
    out = bytearray()
    for n in names:
        n = os.fsencode(n)
        out += bytes([len(n)]) + n
    return bytes(out)


def hexed(names):
    return b"".join(bytes.fromhex(n[:32]) for n in names)


def mk_lookup(names=None, flags=0, suffix=b"", data=None, count=None, version=ABI_VERSION):
    a = Lookup(version=version, flags=flags, count=len(names) if count is None else count)
    a.suffix = suffix
    if data is None:
        data = hexed(names) if flags & NAMES_HEX else packed(names)
    put_bytes(a, "names", data)
    return a


def mk_pin(names=None, flags=0, suffix=b"", data=None, count=None, version=ABI_VERSION):
    a = Pin(version=version, flags=flags, count=len(names) if count is None else count)
    a.suffix = suffix
    if data is None:
        data = hexed(names) if flags & NAMES_HEX else packed(names)
    put_bytes(a, "names", data)
    return a


def mk_unpin(pins, version=ABI_VERSION, count=None):
    a = Unpin(version=version, count=len(pins) if count is None else count)
    for i, p in enumerate(pins):
        a.pins[i] = p
    return a


def hexname(i, salt="sc"):
    """A 32-hex-digit name, as kvc_prefix_hash makes."""
    return "%08x%024x" % (zlib.crc32(salt.encode()), i)


def opendir(path):
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY)


# --------------------------------------------------------------------------------------------
# libkvcache through ctypes

class KvcBlock(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("len", ctypes.c_size_t), ("generation", u64),
                ("checksum", u64), ("pin", u64), ("dir", ctypes.c_void_p)]


class KvcPut(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("len", ctypes.c_size_t), ("id", u64),
                ("dir", ctypes.c_void_p), ("inplace", ctypes.c_bool)]


KVC_TRUSTED_WRITER = 0x1
KVC_NOREPLACE = 0x1
L = None  # the loaded library


def load_lib():
    vp, cp, sz, P = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER
    lib = ctypes.CDLL(kvc.LIBKVCACHE, use_errno=True)
    protos = {
        "kvc_open": ([cp, ctypes.c_uint, P(vp)], ctypes.c_int),
        "kvc_close": ([vp], None),
        "kvc_pool_info": ([vp], P(PoolInfo)),
        "kvc_pool_base": ([vp, P(sz)], vp),
        "kvc_dir_open": ([vp, cp, P(vp)], ctypes.c_int),
        "kvc_dir_close": ([vp], None),
        "kvc_dir_fd": ([vp], ctypes.c_int),
        "kvc_lookup": ([vp, P(cp), sz], ctypes.c_int),
        "kvc_lookup_path": ([cp, P(cp), sz], ctypes.c_int),
        "kvc_get": ([vp, cp, P(KvcBlock)], ctypes.c_int),
        "kvc_get_batch": ([vp, P(cp), sz, P(KvcBlock), P(ctypes.c_int)], ctypes.c_int),
        "kvc_release": ([P(KvcBlock)], ctypes.c_int),
        "kvc_load_batch": ([vp, P(cp), sz, P(vp), P(sz), P(sz), P(ctypes.c_int)],
                           ctypes.c_int),
        "kvc_release_batch": ([P(KvcBlock), sz], ctypes.c_int),
        "kvc_reserve": ([vp, cp, sz, P(KvcPut)], ctypes.c_int),
        "kvc_commit": ([P(KvcPut), ctypes.c_uint], ctypes.c_int),
        "kvc_abort": ([P(KvcPut)], ctypes.c_int),
        "kvc_put": ([vp, cp, vp, sz, ctypes.c_uint], ctypes.c_int),
        "kvc_gpu_register_pool": ([vp], ctypes.c_int),
        "kvc_gpu_register": ([vp, vp, u64, ctypes.c_int, P(u64)], ctypes.c_int),
        "kvc_gpu_load": ([vp, u64, P(KvcBlock), P(u64), sz], ctypes.c_int),
        "kvc_gpu_unregister": ([vp, u64], ctypes.c_int),
    }
    for fn, (args, res) in protos.items():
        f = getattr(lib, fn)
        f.argtypes, f.restype = args, res
    return lib


def names_array(names):
    return (ctypes.c_char_p * max(len(names), 1))(*[os.fsencode(n) for n in names])


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.mprotect.restype = ctypes.c_int
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.mmap.restype = ctypes.c_void_p
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
MAP_FAILED = ctypes.c_void_p(-1).value


def mprotect_errno(addr, length, prot):
    """0 when mprotect succeeded, else its errno."""
    r = _libc.mprotect(addr, length, prot)
    return 0 if r == 0 else ctypes.get_errno()


_xxh = None


def xxh3_64(data):
    """XXH3-64 of data through libxxhash, or None when the library is not there."""
    global _xxh
    if _xxh is None:
        path = ctypes.util.find_library("xxhash")
        _xxh = ctypes.CDLL(path) if path else False
        if _xxh:
            _xxh.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
            _xxh.XXH3_64bits.restype = u64
    return _xxh.XXH3_64bits(data, len(data)) if _xxh else None


def setUpModule():
    global L
    kvc.require_environment()
    kvc.require_libkvcache()
    L = load_lib()


# --------------------------------------------------------------------------------------------
# Test bases

class SideCase(kvc.DirTestCase):
    """DirTestCase plus libkvcache handles closed by test cleanups (before the mount goes)."""

    MOUNT_ARGS = ("--pool-size", "64M", "--max-block-size", "8M")

    def setUp(self):
        super().setUp()
        self.rel = os.path.relpath(self.d, self.m.mnt)

    def assertRc(self, rc, expected, what=""):
        if rc != expected:
            self.fail("%s returned %d (%s), expected %d (%s)" % (
                what or "call", rc, kvc.errname(-rc) if rc < 0 else "ok", expected,
                kvc.errname(-expected) if expected < 0 else "ok"))

    # ---- library handles
    def kvc_open(self, flags=0, mnt=None):
        k = ctypes.c_void_p()
        rc = L.kvc_open(os.fsencode(mnt or self.m.mnt), flags, ctypes.byref(k))
        self.assertRc(rc, 0, "kvc_open")
        self.assertTrue(k.value)
        self.addCleanup(L.kvc_close, k)
        return k

    def kvc_dir(self, k, rel=None):
        """A kvc_dir of rel (default: the test's directory); closed at cleanup unless
        closed already by self.close_dir."""
        d = ctypes.c_void_p()
        rc = L.kvc_dir_open(k, os.fsencode(self.rel if rel is None else rel), ctypes.byref(d))
        self.assertRc(rc, 0, "kvc_dir_open")
        self.addCleanup(self._close_dir_if_open, d)
        return d

    @staticmethod
    def _close_dir_if_open(d):
        if d.value:
            L.kvc_dir_close(d)
            d.value = None

    def close_dir(self, d):
        self._close_dir_if_open(d)

    def lib(self):
        k = self.kvc_open()
        return k, self.kvc_dir(k)

    def get(self, d, name, expect=0):
        b = KvcBlock()
        rc = L.kvc_get(d, os.fsencode(name), ctypes.byref(b))
        self.assertRc(rc, expect, "kvc_get(%s)" % name)
        if rc == 0:
            # a kvc_dir_close released it already (and freed what b.dir points to)
            self.addCleanup(lambda: b.pin and d.value and L.kvc_release(ctypes.byref(b)))
        return b

    def release(self, b, expect=0):
        self.assertRc(L.kvc_release(ctypes.byref(b)), expect, "kvc_release")

    def lookup(self, d, names):
        return L.kvc_lookup(d, names_array(names), len(names))

    # ---- raw descriptors
    def dirfd(self, path=None):
        fd = opendir(path or self.d)
        self.addCleanup(self._close_fd, fd)
        return fd

    @staticmethod
    def _close_fd(fd):
        try:
            os.close(fd)
        except OSError:
            pass

    def raw_pin(self, fd, names, **kw):
        a = raw(fd, "PIN", mk_pin(names, **kw))
        return a

    def raw_unpin(self, fd, pins):
        raw(fd, "UNPIN", mk_unpin(pins))

    def used(self):
        return self.m.status()["used"]

    def wait_used(self, pred, timeout=5.0):
        """Wait until pred(used) holds; return the last used value (asserting pred)."""
        last = [None]

        def check():
            last[0] = self.used()
            return pred(last[0])
        ok = wait_until(check, timeout=timeout)
        self.assertTrue(ok, "pool usage did not reach the expected value: used=%d" % last[0])
        return last[0]

    def wait_status(self, key, value, timeout=5.0):
        """Wait until kvcachectl status shows key == value (releases at a descriptor's
        close reach the daemon asynchronously)."""
        ok = wait_until(lambda: self.m.status()[key] == value, timeout=timeout)
        self.assertTrue(ok, "status %s is %d, expected %d" % (key, self.m.status()[key], value))

    # ---- blocks
    def block(self, name, data, path=None):
        kvc.write_block(os.path.join(path or self.d, name), data)
        return data


class Child:
    """A forked process that runs fn() (returning an int, e.g. a pin id made through its own
    descriptor), reports the value, then holds on until end() kills it (sig) or lets it
    exit. It never returns into the test runner: os._exit always, so no atexit handler of
    the child unmounts the test's mount."""

    def __init__(self, fn):
        r, w = os.pipe()
        cr, self.cw = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                os.close(r)
                os.close(self.cw)
                v = fn()
                os.write(w, b"ok %d\n" % v)
                code = 0
                os.read(cr, 1)  # returns when the parent closes its end
            except BaseException as e:  # noqa: BLE001 - report anything to the parent
                try:
                    os.write(w, b"err %r\n" % str(e).encode())
                except OSError:
                    pass
            finally:
                os._exit(code)
        os.close(w)
        os.close(cr)
        buf = b""
        try:
            while not buf.endswith(b"\n"):
                ready, _, _ = select.select([r], [], [], 10)
                if not ready:
                    break
                chunk = os.read(r, 256)
                if not chunk:
                    break
                buf += chunk
        finally:
            os.close(r)
        if not buf.startswith(b"ok "):
            self.end(signal.SIGKILL)
            raise AssertionError("child failed: %r" % buf)
        self.value = int(buf.split()[1])

    def end(self, sig=None):
        """Kill the child with sig, or (None) let it exit by itself; reap it."""
        if sig is not None:
            os.kill(self.pid, sig)
        os.close(self.cw)
        _, status = os.waitpid(self.pid, 0)
        return status


# --------------------------------------------------------------------------------------------

class Abi(unittest.TestCase):
    def test_mirrors_match_header(self):
        self.assertEqual(set(SIZES), set(MIRRORS), "structs of the header vs our mirrors")
        for s, size in SIZES.items():
            self.assertEqual(ctypes.sizeof(MIRRORS[s]), size, "struct %s" % s)
        self.assertEqual(CONSTS["KVCACHEFS_ABI_VERSION"], ABI_VERSION)
        self.assertEqual(CONSTS["KVCACHEFS_IOC_MAGIC"], MAGIC)
        for c, v in (("NAMES_HEX", NAMES_HEX), ("SUFFIX_MAX", SUFFIX_MAX),
                     ("PATH_MAX", PATH_MAX), ("LOOKUP_MAX", LOOKUP_MAX),
                     ("LOOKUP_BYTES", LOOKUP_BYTES), ("PIN_MAX", PIN_MAX),
                     ("PIN_BYTES", PIN_BYTES), ("UNPIN_MAX", UNPIN_MAX),
                     ("GPU_LOAD_MAX", GPU_LOAD_MAX), ("COMMIT_NOREPLACE", COMMIT_NOREPLACE),
                     ("COMMIT_INPLACE", COMMIT_INPLACE),
                     ("CUDA_IPC_HANDLE_SIZE", CUDA_IPC_HANDLE_SIZE)):
            self.assertEqual(CONSTS["KVCACHEFS_" + c], v, c)
        for c in ("STATUS", "POOL_INFO", "LOOKUP", "PIN", "UNPIN", "RESERVE", "COMMIT",
                  "ABORT", "GPU_REGISTER", "GPU_LOAD", "GPU_UNREGISTER"):
            self.assertIn(c, CMDS)
        # the number kvcachectl has always used for STATUS
        self.assertEqual(REQ["STATUS"], ioc(3, 1, 216))


class PoolInfoTests(SideCase):
    def pool_info(self, fd):
        return raw(fd, "POOL_INFO", PoolInfo(version=ABI_VERSION))

    def test_values(self):
        kvc.write_block(self.p("blk"), b"x" * 5000)
        root = self.dirfd(self.m.mnt)
        info = self.pool_info(root)
        st = self.m.status()
        self.assertEqual(info.version, ABI_VERSION)
        self.assertEqual(info.flags, 0)
        self.assertGreaterEqual(info.page_size, 4096)
        self.assertEqual(info.page_size & (info.page_size - 1), 0, "page size not a power of 2")
        path = info.path.decode()
        self.assertTrue(os.path.isabs(path), path)
        pst = os.stat(path)
        self.assertTrue(stat.S_ISREG(pst.st_mode))
        self.assertEqual((info.pool_dev, info.pool_ino), (pst.st_dev, pst.st_ino))
        self.assertEqual(info.pool_mode, stat.S_IMODE(pst.st_mode))
        self.assertEqual(info.pool_gid, pst.st_gid)
        self.assertEqual(info.pool_size, pst.st_size)
        self.assertEqual(info.data_offset % info.page_size, 0)
        self.assertGreater(info.data_offset, 0)
        self.assertLessEqual(info.data_offset + info.capacity, info.pool_size)
        self.assertEqual(info.capacity, st["capacity"])
        self.assertLessEqual(info.pool_size, 64 * MiB)
        self.assertGreater(info.capacity, 60 * MiB)
        self.assertEqual(info.max_block_size, 8 * MiB)
        self.assertEqual(info.daemon_pid, self.m.pid)
        # the same from a subdirectory and from a block
        sub = self.pool_info(self.dirfd())
        fd = os.open(self.p("blk"), os.O_RDONLY)
        try:
            onfile = self.pool_info(fd)
        finally:
            os.close(fd)
        for other in (sub, onfile):
            self.assertEqual(bytes(other), bytes(info))

    def test_library_agrees(self):
        info = self.pool_info(self.dirfd(self.m.mnt))
        k = self.kvc_open()
        linfo = L.kvc_pool_info(k).contents
        self.assertEqual(bytes(linfo), bytes(info))
        size = ctypes.c_size_t()
        base = L.kvc_pool_base(k, ctypes.byref(size))
        self.assertTrue(base)
        self.assertEqual(size.value, info.pool_size)
        # the library maps the pool read-only, from a read-only descriptor: no way to make
        # that mapping writable
        self.assertEqual(mprotect_errno(base, info.page_size, mmap.PROT_READ | mmap.PROT_WRITE),
                         errno.EACCES)
        d = self.kvc_dir(k, "")
        self.assertGreaterEqual(L.kvc_dir_fd(d), 0)

    def test_map_read_only(self):
        info = self.pool_info(self.dirfd(self.m.mnt))
        path = info.path.decode()
        data = os.urandom(3 * 4096 + 5)
        self.block("blk", data)
        fd = os.open(path, os.O_RDONLY)
        try:
            self.assertEqual((os.fstat(fd).st_dev, os.fstat(fd).st_ino),
                             (info.pool_dev, info.pool_ino))
            m = mmap.mmap(fd, info.pool_size, mmap.MAP_SHARED, mmap.PROT_READ)
            try:
                # the block's bytes are where a pin says
                dfd = self.dirfd()
                a = self.raw_pin(dfd, ["blk"])
                self.assertEqual(a.pinned, 1)
                off, ln = a.out[0].offset, a.out[0].length
                self.assertEqual(ln, len(data))
                self.assertEqual(m[off:off + ln], data)
                self.raw_unpin(dfd, [a.out[0].pin])
                with self.assertRaises(TypeError):
                    m[0] = 1
            finally:
                m.close()
            # a shared writable mapping of a read-only descriptor: refused by the kernel
            with self.assertRaises(PermissionError):
                mmap.mmap(fd, info.pool_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            addr = _libc.mmap(None, info.pool_size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
            self.assertNotEqual(addr, MAP_FAILED)
            try:
                self.assertEqual(mprotect_errno(addr, info.pool_size,
                                                mmap.PROT_READ | mmap.PROT_WRITE), errno.EACCES)
            finally:
                _libc.munmap(addr, info.pool_size)
        finally:
            os.close(fd)
        # and a store through a read-only mapping faults (checked in a clean python, without
        # the sanitizer runtimes, which would turn the fault into a report)
        prog = ("import ctypes, mmap, os\n"
                "libc = ctypes.CDLL(None)\n"
                "libc.mmap.restype = ctypes.c_void_p\n"
                "libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,"
                " ctypes.c_int, ctypes.c_int, ctypes.c_long]\n"
                "fd = os.open(%r, os.O_RDONLY)\n"
                "a = libc.mmap(None, %d, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)\n"
                "print('mapped', flush=True)\n"
                "ctypes.memset(a + %d, 0x55, 1)\n"
                "print('wrote', flush=True)\n" % (path, info.pool_size, info.data_offset))
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True,
                           env=env, timeout=30)
        self.assertIn("mapped", r.stdout, r.stderr)
        self.assertNotIn("wrote", r.stdout)
        self.assertEqual(r.returncode, -signal.SIGSEGV, r.stderr)
        self.assertEqual(kvc.read_block(self.p("blk")), data)

    def test_not_kvcachefs(self):
        k = ctypes.c_void_p()
        with tempfile.TemporaryDirectory() as t:
            self.assertRc(L.kvc_open(t.encode(), 0, ctypes.byref(k)), -errno.ENOTTY,
                          "kvc_open(tmpdir)")
            self.assertRc(L.kvc_lookup_path(t.encode(), names_array(["a"]), 1), -errno.ENOTTY,
                          "kvc_lookup_path(tmpdir)")
        self.assertRc(L.kvc_open(self.p("nonexistent").encode(), 0, ctypes.byref(k)),
                      -errno.ENOENT, "kvc_open(missing)")
        k = self.kvc_open()
        d = ctypes.c_void_p()
        self.assertRc(L.kvc_dir_open(k, (self.rel + "/nope").encode(), ctypes.byref(d)),
                      -errno.ENOENT, "kvc_dir_open(missing)")
        self.block("f", b"f")
        self.assertRc(L.kvc_dir_open(k, (self.rel + "/f").encode(), ctypes.byref(d)),
                      -errno.ENOTDIR, "kvc_dir_open(file)")

    def test_trusted_writer_maps_read_write(self):
        k = self.kvc_open(KVC_TRUSTED_WRITER)  # root may open the pool read-write
        info = L.kvc_pool_info(k).contents
        size = ctypes.c_size_t()
        base = L.kvc_pool_base(k, ctypes.byref(size))
        self.assertEqual(size.value, info.pool_size)
        self.assertTrue(base)


class RawErrors(SideCase):
    """Requests the library never sends: unknown commands, sizes, versions."""

    def setUp(self):
        super().setUp()
        self.fd = self.dirfd()

    def valid_arg(self, cmd):
        """An argument for cmd that is well formed apart from whatever the test changes."""
        s = MIRRORS[CMDS[cmd][2]]
        a = s(version=ABI_VERSION)
        if cmd in ("LOOKUP", "PIN"):
            a.count = 1
            put_bytes(a, "names", packed(["x"]))
        elif cmd in ("UNPIN", "GPU_LOAD"):
            a.count = 1
        elif cmd == "RESERVE":
            a.length = 10
            a.name = b"x"
        elif cmd == "GPU_REGISTER":
            a.size = MiB
        return a

    def test_unknown_command(self):
        for req in (ioc(3, 99, 16), ioc(3, 0, 16), ioc(1, 12, 16), ioc(0, 2, 0),
                    ioc(3, 2, 360, magic=0xCE)):
            with self.subTest(req=hex(req)):
                self.assertErrno(errno.ENOTTY, fcntl.ioctl, self.fd, req, bytearray(360), True)

    def test_wrong_size(self):
        # same magic and nr, another size: a different command as far as the ABI goes
        for cmd, (d, nr, s) in sorted(CMDS.items()):
            size = ctypes.sizeof(MIRRORS[s])
            for other in (size - 8, size + 8):
                with self.subTest(cmd=cmd, size=other):
                    buf = bytearray(max(other, 0))
                    buf[0:4] = ABI_VERSION.to_bytes(4, "little")
                    self.assertErrno(errno.ENOTTY, fcntl.ioctl, self.fd, ioc(d, nr, other),
                                     buf, True)

    def test_wrong_direction(self):
        for cmd, (d, nr, _) in sorted(CMDS.items()):
            for other in {_IOC_READ, _IOC_WRITE, _IOC_READ | _IOC_WRITE} - {d}:
                with self.subTest(cmd=cmd, direction=other):
                    a = self.valid_arg(cmd)
                    self.assertErrno(errno.ENOTTY, fcntl.ioctl, self.fd,
                                     ioc(other, nr, ctypes.sizeof(a)), a, True)

    def test_wrong_version(self):
        for cmd in sorted(CMDS):
            for v in (0, ABI_VERSION + 1, 0xffffffff):
                with self.subTest(cmd=cmd, version=v):
                    a = self.valid_arg(cmd)
                    a.version = v
                    self.assertErrno(errno.EPROTO, raw, self.fd, cmd, a)

    def test_status_still_works(self):
        a = raw(self.fd, "STATUS", Status(version=ABI_VERSION))
        self.assertEqual(a.version, ABI_VERSION)
        self.assertEqual(a.capacity, self.m.status()["capacity"])
        self.assertEqual(a.max_block_size, 8 * MiB)


class LookupTests(SideCase):
    def test_prefix_counts(self):
        names = [hexname(i) for i in range(10)]
        k, d = self.lib()
        fd = self.dirfd()
        self.assertEqual(self.lookup(d, names), 0)
        self.assertEqual(self.lookup(d, []), 0)
        self.assertEqual(raw(fd, "LOOKUP", mk_lookup([])).found, 0)
        for i in range(5):
            self.block(names[i], b"%d" % i)
        self.assertEqual(self.lookup(d, names), 5)
        self.assertEqual(self.lookup(d, names[:3]), 3)
        self.assertEqual(self.lookup(d, names[5:]), 0)
        self.assertEqual(self.lookup(d, names[1:]), 4)
        self.assertEqual(raw(fd, "LOOKUP", mk_lookup(names)).found, 5)
        self.assertEqual(raw(fd, "LOOKUP", mk_lookup(names, flags=NAMES_HEX)).found, 5)
        # a hole stops the prefix
        self.block(names[6], b"6")
        self.assertEqual(self.lookup(d, names), 5)
        for i in range(5, 10):
            if i != 6:
                self.block(names[i], b"%d" % i)
        self.assertEqual(self.lookup(d, names), 10)
        os.unlink(self.p(names[2]))
        self.assertEqual(self.lookup(d, names), 2)
        # the same through a path, without a kvc handle
        self.assertEqual(L.kvc_lookup_path(self.d.encode(), names_array(names), len(names)), 2)
        # blocks of another directory do not count
        os.mkdir(self.p("sub"))
        d2 = self.kvc_dir(k, self.rel + "/sub")
        self.assertEqual(self.lookup(d2, names), 0)

    def test_only_sealed_blocks_count(self):
        k, d = self.lib()
        self.block("a", b"a")
        os.mkdir(self.p("b"))
        self.assertEqual(self.lookup(d, ["a", "b"]), 1)
        fd = os.open(self.p("c"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"partial")
            self.assertEqual(self.lookup(d, ["a", "c"]), 1, "a block being written counted")
        finally:
            os.close(fd)
        self.assertTrue(wait_until(lambda: self.lookup(d, ["a", "c"]) == 2, timeout=3))

    def test_hex_with_suffix(self):
        names = [hexname(i, "sfx") for i in range(20)]
        for n in names[:12]:
            self.block(n + ".bin", n.encode())
        self.block(names[12], b"no suffix")
        fd = self.dirfd()
        self.assertEqual(raw(fd, "LOOKUP", mk_lookup(names, flags=NAMES_HEX, suffix=b".bin"))
                         .found, 12)
        self.assertEqual(raw(fd, "LOOKUP", mk_lookup(names, flags=NAMES_HEX)).found, 0)
        self.assertEqual(raw(fd, "LOOKUP", mk_lookup(names[12:], flags=NAMES_HEX)).found, 1)
        # the longest suffix that fits (15 bytes and the NUL)
        long_sfx = b".kv-0123456789a"
        self.assertEqual(len(long_sfx), SUFFIX_MAX - 1)
        self.block(names[0] + long_sfx.decode(), b"x")
        self.assertEqual(raw(fd, "LOOKUP", mk_lookup(names, flags=NAMES_HEX, suffix=long_sfx))
                         .found, 1)
        # the library finds the same through its own encoding choice
        k, d = self.lib()
        self.assertEqual(self.lookup(d, [n + ".bin" for n in names]), 12)

    def test_512_and_1000_names(self):
        k, d = self.lib()
        fd = self.dirfd()
        names = [hexname(i, "big") for i in range(LOOKUP_MAX)]
        for n in names:
            self.block(n, b"")
        self.assertEqual(raw(fd, "LOOKUP", mk_lookup(names[:512], flags=NAMES_HEX)).found, 512)
        self.assertEqual(raw(fd, "LOOKUP", mk_lookup(names, flags=NAMES_HEX)).found, 1000)
        self.assertEqual(self.lookup(d, names[:512]), 512)
        self.assertEqual(self.lookup(d, names), 1000)
        os.unlink(self.p(names[700]))
        self.assertEqual(raw(fd, "LOOKUP", mk_lookup(names, flags=NAMES_HEX)).found, 700)
        self.assertEqual(self.lookup(d, names), 700)
        # packed: 1000 short names fill the names area exactly
        os.mkdir(self.p("packed"))
        short = ["p%014d" % i for i in range(LOOKUP_MAX)]  # 15 bytes + 1 length byte each
        self.assertEqual(len(packed(short)), LOOKUP_BYTES)
        for n in short:
            self.block(n, b"", path=self.p("packed"))
        pfd = self.dirfd(self.p("packed"))
        self.assertEqual(raw(pfd, "LOOKUP", mk_lookup(short)).found, 1000)
        self.assertEqual(raw(pfd, "LOOKUP", mk_lookup(short[:512])).found, 512)
        d2 = self.kvc_dir(k, self.rel + "/packed")
        self.assertEqual(self.lookup(d2, short), 1000)

    def test_names_that_do_not_fit_one_request(self):
        # 300 names of 200 bytes: 60 KB, more than one request holds; the library still
        # answers the longest prefix
        k, d = self.lib()
        names = [("%03d" % i) * 66 + "xx" for i in range(300)]
        self.assertEqual(len(names[0]), 200)
        for n in names[:250]:
            self.block(n, b"")
        self.assertEqual(self.lookup(d, names), 250)
        os.unlink(self.p(names[100]))
        self.assertEqual(self.lookup(d, names), 100)

    def test_too_many(self):
        k, d = self.lib()
        fd = self.dirfd()
        names = [hexname(i) for i in range(LOOKUP_MAX + 1)]
        self.assertRc(self.lookup(d, names), -errno.E2BIG, "kvc_lookup(1001)")
        self.assertErrno(errno.E2BIG, raw, fd, "LOOKUP",
                         mk_lookup(names[:LOOKUP_MAX], flags=NAMES_HEX, count=LOOKUP_MAX + 1))
        self.assertErrno(errno.E2BIG, raw, fd, "LOOKUP", mk_lookup(["a"], count=LOOKUP_MAX + 1))
        self.assertErrno(errno.E2BIG, raw, fd, "LOOKUP", mk_lookup(["a"], count=0xffffffff))

    def test_malformed(self):
        fd = self.dirfd()
        self.block("a", b"a")
        bad = {
            "zero length": mk_lookup(data=b"\x01a\x00", count=2),
            "runs past the names area": mk_lookup(data=b"\xff" * LOOKUP_BYTES, count=100),
            "last name runs past the area": mk_lookup(
                data=packed(["p%014d" % i for i in range(999)]) + b"\x10" + b"y" * 15,
                count=1000),
            "slash": mk_lookup(["a", "b/c"]),
            "slash first": mk_lookup(["a/b"]),
            "NUL": mk_lookup(data=b"\x01a\x03b\x00c", count=2),
            "hex suffix with slash": mk_lookup([hexname(1)], flags=NAMES_HEX, suffix=b"/x"),
            "hex suffix unterminated": mk_lookup([hexname(1)], flags=NAMES_HEX,
                                                 suffix=b"s" * SUFFIX_MAX),
        }
        for what, a in bad.items():
            with self.subTest(what):
                self.assertErrno(errno.EINVAL, raw, fd, "LOOKUP", a)
        # a valid list is still answered after all that
        self.assertEqual(raw(fd, "LOOKUP", mk_lookup(["a"])).found, 1)

    def test_library_bad_names(self):
        k, d = self.lib()
        self.block("a", b"a")
        for names in (["a", "b/c"], ["a", ""], ["x" * 256]):
            with self.subTest(names=[n[:10] for n in names]):
                self.assertRc(self.lookup(d, names), -errno.EINVAL, "kvc_lookup")
        self.assertEqual(self.lookup(d, ["a", "x" * 255]), 1)


class PinTests(SideCase):
    def test_get_missing_busy_dir(self):
        k, d = self.lib()
        fd = self.dirfd()
        self.get(d, "missing", -errno.ENOENT)
        wfd = os.open(self.p("w"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(wfd, b"not yet")
            self.get(d, "w", -errno.EBUSY)
            a = self.raw_pin(fd, ["missing", "w"])
            self.assertEqual(a.pinned, 0)
            self.assertEqual([a.out[0].error, a.out[1].error], [errno.ENOENT, errno.EBUSY])
            for i in range(2):
                self.assertEqual((a.out[i].pin, a.out[i].offset, a.out[i].length,
                                  a.out[i].generation, a.out[i].checksum), (0, 0, 0, 0, 0))
        finally:
            os.close(wfd)
        os.mkdir(self.p("sub"))
        a = self.raw_pin(fd, ["sub"])
        self.assertEqual((a.pinned, a.out[0].error), (0, errno.EISDIR))
        self.get(d, "sub", -errno.EISDIR)
        # once sealed, it can be pinned
        self.assertTrue(wait_until(lambda: self.lookup(d, ["w"]) == 1, timeout=3))
        b = self.get(d, "w")
        self.assertEqual(ctypes.string_at(b.data, b.len), b"not yet")

    def test_get_returns_written_bytes(self):
        k, d = self.lib()
        info = L.kvc_pool_info(k).contents
        size = ctypes.c_size_t()
        base = L.kvc_pool_base(k, ctypes.byref(size))
        for n, ln in (("empty", 0), ("one", 1), ("page", 4096), ("odd", 3 * 4096 + 17),
                      ("big", 8 * MiB)):
            with self.subTest(n):
                data = self.block(n, os.urandom(ln))
                b = self.get(d, n)
                self.assertEqual(b.len, ln)
                if ln:
                    self.assertTrue(base <= b.data and b.data + ln <= base + size.value)
                    self.assertEqual((b.data - base - info.data_offset) % info.page_size, 0)
                    self.assertTrue(ctypes.string_at(b.data, b.len) == data, "bytes differ")
                self.assertNotEqual(b.generation, 0)
                self.assertNotEqual(b.pin, 0)
                ref = xxh3_64(data)
                if ref is not None:
                    self.assertEqual(b.checksum, ref, "checksum is not XXH3-64 of the payload")
                self.release(b)
                self.assertEqual(b.pin, 0)
        # raw pin: the same block through the ABI, offsets relative to the mapping
        fd = self.dirfd()
        data = self.block("raw", os.urandom(10000))
        a = self.raw_pin(fd, ["raw"])
        self.assertEqual((a.pinned, a.out[0].error, a.out[0].length), (1, 0, 10000))
        self.assertEqual(ctypes.string_at(base + a.out[0].offset, 10000), data)
        self.raw_unpin(fd, [a.out[0].pin])

    def test_generation(self):
        k, d = self.lib()
        self.block("g", b"one")
        b1 = self.get(d, "g")
        b2 = self.get(d, "g")
        self.assertEqual(b1.generation, b2.generation)
        self.assertNotEqual(b1.pin, b2.pin)
        self.release(b1)
        self.release(b2)
        os.unlink(self.p("g"))
        self.block("g", b"two")
        b3 = self.get(d, "g")
        self.assertNotEqual(b3.generation, b1.generation)

    def test_batch(self):
        k, d = self.lib()
        self.block("a", b"A" * 100)
        self.block("c", b"C" * 300)
        os.mkdir(self.p("dir"))
        names = ["a", "b", "c", "dir"]
        blocks = (KvcBlock * 4)()
        errs = (ctypes.c_int * 4)()
        n = L.kvc_get_batch(d, names_array(names), 4, blocks, errs)
        self.assertEqual(n, 2)
        self.assertEqual(list(errs), [0, errno.ENOENT, 0, errno.EISDIR])
        self.assertEqual(ctypes.string_at(blocks[0].data, blocks[0].len), b"A" * 100)
        self.assertEqual(ctypes.string_at(blocks[2].data, blocks[2].len), b"C" * 300)
        for i in (1, 3):
            self.assertEqual((blocks[i].data, blocks[i].pin), (None, 0))
        self.assertEqual(L.kvc_release_batch(blocks, 4), 0)
        self.assertEqual([b.pin for b in blocks], [0, 0, 0, 0])
        # malformed batch: nothing pinned
        self.assertRc(L.kvc_get_batch(d, names_array(["a", "x/y"]), 2, blocks, errs),
                      -errno.EINVAL, "kvc_get_batch(bad name)")
        self.assertEqual([b.pin for b in blocks[:2]], [0, 0])

    def test_batch_larger_than_one_request(self):
        # 300 names: three PIN requests and two UNPIN requests inside the library; blocks of
        # two kvc_dirs interleaved in one release
        k, d = self.lib()
        names = [hexname(i, "batch") for i in range(300)]
        for n in names:
            self.block(n, n.encode())
        blocks = (KvcBlock * 301)()
        errs = (ctypes.c_int * 301)()
        self.assertEqual(L.kvc_get_batch(d, names_array(names), 300, blocks, errs), 300)
        self.assertEqual(list(errs)[:300], [0] * 300)
        for i in (0, 127, 128, 255, 256, 299):
            self.assertEqual(ctypes.string_at(blocks[i].data, blocks[i].len), names[i].encode())
        d2 = self.kvc_dir(k)
        rc = L.kvc_get(d2, names[5].encode(), ctypes.byref(blocks[300]))
        self.assertRc(rc, 0, "kvc_get through a second kvc_dir")
        tmp = KvcBlock.from_buffer_copy(blocks[150])  # (indexing gives views, not copies)
        blocks[150] = blocks[300]
        blocks[300] = tmp
        self.wait_status("pinned", 301)
        self.assertEqual(L.kvc_release_batch(blocks, 301), 0)
        self.assertEqual(sum(1 for b in blocks if b.pin), 0)
        self.wait_status("pinned", 0)

    def test_raw_pin_limits_and_hex(self):
        fd = self.dirfd()
        names = [hexname(i, "pin") for i in range(PIN_MAX + 1)]
        for n in names[:3]:
            self.block(n + ".kv", n.encode())
        a = self.raw_pin(fd, names[:4], flags=NAMES_HEX, suffix=b".kv")
        self.assertEqual(a.pinned, 3)
        self.assertEqual([a.out[i].error for i in range(4)], [0, 0, 0, errno.ENOENT])
        self.raw_unpin(fd, [a.out[i].pin for i in range(3)])
        self.assertErrno(errno.E2BIG, raw, fd, "PIN",
                         mk_pin(names[:PIN_MAX], flags=NAMES_HEX, count=PIN_MAX + 1))
        self.assertErrno(errno.EINVAL, raw, fd, "PIN", mk_pin([]))
        self.assertErrno(errno.EINVAL, raw, fd, "PIN", mk_pin(["a/b"]))
        self.assertErrno(errno.EINVAL, raw, fd, "PIN", mk_pin(data=b"\x00", count=1))
        self.assertErrno(errno.EINVAL, raw, fd, "PIN",
                         mk_pin(data=b"\xff" * PIN_BYTES, count=PIN_MAX))
        # a full batch of PIN_MAX
        a = self.raw_pin(fd, names[:PIN_MAX], flags=NAMES_HEX, suffix=b".kv")
        self.assertEqual(a.pinned, 3)

    def test_release_errors(self):
        k, d = self.lib()
        fd = self.dirfd()
        self.block("a", b"a")
        self.block("b", b"b")
        b = self.get(d, "a")
        pin = b.pin
        self.release(b)
        self.release(b, -errno.EINVAL)
        # the stale id: the daemon refuses it too
        self.assertErrno(errno.EINVAL, self.raw_unpin, L.kvc_dir_fd(d), [pin])
        # raw: double unpin, never issued, batch with one bad id, counts
        a = self.raw_pin(fd, ["a", "b"])
        p1, p2 = a.out[0].pin, a.out[1].pin
        self.raw_unpin(fd, [p1])
        self.assertErrno(errno.EINVAL, self.raw_unpin, fd, [p1])
        self.assertErrno(errno.EINVAL, self.raw_unpin, fd, [0])
        self.assertErrno(errno.EINVAL, self.raw_unpin, fd, [0x7fffffff_fffffff0])
        self.assertErrno(errno.EINVAL, self.raw_unpin, fd, [p2, p1])
        self.raw_unpin(fd, [p2])  # p2 was still pinned: the bad batch unpinned nothing
        self.assertErrno(errno.EINVAL, raw, fd, "UNPIN", mk_unpin([], count=0))
        self.assertErrno(errno.E2BIG, raw, fd, "UNPIN", mk_unpin([], count=UNPIN_MAX + 1))

    def test_unpin_through_another_descriptor(self):
        self.block("a", b"a")
        fd1, fd2 = self.dirfd(), self.dirfd()
        a = self.raw_pin(fd1, ["a"])
        pin = a.out[0].pin
        self.assertErrno(errno.EPERM, self.raw_unpin, fd2, [pin])
        # a dup shares the open file description, and so the pin
        fd3 = os.dup(fd1)
        self.addCleanup(self._close_fd, fd3)
        self.raw_unpin(fd3, [pin])
        self.assertErrno(errno.EINVAL, self.raw_unpin, fd1, [pin])
        # library: a block pinned through one kvc_dir cannot be released by another's fd
        k = self.kvc_open()
        d1, d2 = self.kvc_dir(k), self.kvc_dir(k)
        b = self.get(d1, "a")
        self.assertErrno(errno.EPERM, self.raw_unpin, L.kvc_dir_fd(d2), [b.pin])
        self.release(b)

    def test_pin_survives_unlink_and_replace(self):
        k, d = self.lib()
        old = self.block("u", os.urandom(2 * MiB))
        u0 = self.used()
        b = self.get(d, "u")
        os.unlink(self.p("u"))
        self.assertGone(self.p("u"))
        self.get(d, "u", -errno.ENOENT)
        # reuse of its memory would show: fill the pool's free space with new blocks
        fill = [self.block("f%02d" % i, os.urandom(MiB)) for i in range(8)]
        self.assertTrue(ctypes.string_at(b.data, b.len) == old, "unlinked pinned block changed")
        self.block("u", b"new")
        self.assertTrue(ctypes.string_at(b.data, b.len) == old, "re-created name changed it")
        # rename over a pinned block
        self.block("r", os.urandom(MiB))
        rb = self.get(d, "r")
        rold = ctypes.string_at(rb.data, rb.len)
        self.block(".tmp", b"replacement")
        os.rename(self.p(".tmp"), self.p("r"))
        self.assertEqual(kvc.read_block(self.p("r")), b"replacement")
        self.assertTrue(ctypes.string_at(rb.data, rb.len) == rold, "replaced pinned block changed")
        nb = self.get(d, "r")
        self.assertEqual(ctypes.string_at(nb.data, nb.len), b"replacement")
        self.assertNotEqual(nb.generation, rb.generation)
        for blk in (b, rb, nb):
            self.release(blk)
        for i, data in enumerate(fill):
            self.assertEqual(kvc.read_block(self.p("f%02d" % i)), data)
        self.assertGreater(u0, 0)

    def test_release_frees_unlinked_block(self):
        k, d = self.lib()
        size = 4 * MiB
        u0 = self.used()
        self.block("x", os.urandom(size))
        u1 = self.wait_used(lambda u: u >= u0 + size)
        b = self.get(d, "x")
        os.unlink(self.p("x"))
        # held by the pin
        self.assertGreaterEqual(self.used(), u1)
        self.release(b)
        self.wait_used(lambda u: u <= u1 - size)

    def test_dir_close_unpins(self):
        k, d = self.lib()
        size = 4 * MiB
        u0 = self.used()
        self.block("x", os.urandom(size))
        self.block("y", os.urandom(size))
        u1 = self.wait_used(lambda u: u >= u0 + 2 * size)
        self.get(d, "x")
        self.get(d, "y")
        self.get(d, "y")
        self.wait_status("pinned", 3)
        os.unlink(self.p("x"))
        os.unlink(self.p("y"))
        self.assertGreaterEqual(self.used(), u1)
        self.close_dir(d)
        self.wait_status("pinned", 0)
        # kvcachectl status: the memory came back
        self.wait_used(lambda u: u <= u1 - 2 * size)
        self.assertGreaterEqual(kvc.ctl_status_json(self.m.mnt)["free"], 2 * size)

    def raw_child_pin(self, name):
        path = self.d

        def fn():
            fd = opendir(path)
            a = raw(fd, "PIN", mk_pin([name]))
            if a.pinned != 1:
                raise RuntimeError("pin failed: error %d" % a.out[0].error)
            return a.out[0].pin
        return Child(fn)

    def check_child_release(self, sig):
        size = 4 * MiB
        u0 = self.used()
        data = self.block("c", os.urandom(size))
        u1 = self.wait_used(lambda u: u >= u0 + size)
        c = self.raw_child_pin("c")
        pin = c.value
        self.assertNotEqual(pin, 0)
        self.wait_status("pinned", 1)
        os.unlink(self.p("c"))
        self.assertGreaterEqual(self.used(), u1, "an unlinked block pinned by a live process "
                                "was freed")
        # another process's pin is not ours to release
        self.assertErrno(errno.EPERM, self.raw_unpin, self.dirfd(), [pin])
        status = c.end(sig)
        if sig is None:
            self.assertTrue(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status)
        else:
            self.assertTrue(os.WIFSIGNALED(status) and os.WTERMSIG(status) == sig, status)
        self.wait_used(lambda u: u <= u1 - size)
        self.wait_status("pinned", 0)
        self.assertEqual(len(data), size)

    def test_killed_process_releases_pins(self):
        self.check_child_release(signal.SIGKILL)

    def test_exiting_process_releases_pins(self):
        self.check_child_release(None)

    def test_threads_share_a_dir(self):
        k, d = self.lib()
        blocks = {("t%d" % i): self.block("t%d" % i, os.urandom(64 * KiB)) for i in range(8)}
        errors = []

        def work(seed):
            try:
                for j in range(200):
                    name = "t%d" % ((seed + j) % 8)
                    b = KvcBlock()
                    rc = L.kvc_get(d, name.encode(), ctypes.byref(b))
                    if rc != 0:
                        errors.append("kvc_get %s: %d" % (name, rc))
                        return
                    if ctypes.string_at(b.data, b.len) != blocks[name]:
                        errors.append("%s differs" % name)
                    rc = L.kvc_release(ctypes.byref(b))
                    if rc != 0:
                        errors.append("kvc_release %s: %d" % (name, rc))
                        return
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
        self.assertThreadsFinish([threading.Thread(target=work, args=(s,)) for s in range(4)],
                                 timeout=60)
        self.assertEqual(errors, [])


class PinPressure(SideCase):
    """A pinned block under eviction pressure. One mount per test: a pool in a known state."""

    @classmethod
    def setUpClass(cls):
        pass

    def setUp(self):
        self.m = Mount.for_test(self, "--pool-size", "64M")
        super().setUp()

    def fill(self, prefix, n):
        for i in range(n):
            self.block("%s%03d" % (prefix, i), os.urandom(MiB))

    def test_pinned_block_never_evicted(self):
        k, d = self.lib()
        data = self.block("pinned", os.urandom(4 * MiB))
        b = self.get(d, "pinned")
        self.fill("f", 120)
        st = self.m.status()
        self.assertGreater(st["evictions"], 0, "writing 120 MiB into 64 MiB evicted nothing")
        self.assertGone(self.p("f000"))
        # name, bytes through the pin and through the file: all still there
        self.assertTrue(kvc.exists(self.p("pinned")), "a pinned block was evicted")
        self.assertEqual(self.lookup(d, ["pinned"]), 1)
        self.assertTrue(ctypes.string_at(b.data, b.len) == data, "pinned bytes changed")
        self.assertTrue(kvc.read_block(self.p("pinned")) == data)
        # once released it is an ordinary block again: the next wave evicts it
        self.release(b)
        self.fill("g", 120)
        self.assertGone(self.p("pinned"))

    def test_reserve_enospc(self):
        k, d = self.lib()
        cap = self.m.status()["capacity"]
        # a block larger than the whole pool (but within --max-block-size, 64M): ENOSPC
        p = KvcPut()
        self.assertRc(L.kvc_reserve(d, b"huge", cap + 4096, ctypes.byref(p)), -errno.ENOSPC,
                      "kvc_reserve(capacity + 4096)")
        self.assertEqual(p.id, 0)
        # a pinned block and reservations fill the pool: nothing is evictable, ENOSPC
        self.block("pinned", os.urandom(4 * MiB))
        self.get(d, "pinned")
        held = []
        for i in range(40):
            p = KvcPut()
            rc = L.kvc_reserve(d, b"r%02d" % i, 4 * MiB, ctypes.byref(p))
            if rc != 0:
                break
            held.append(p)
        self.assertRc(rc, -errno.ENOSPC, "kvc_reserve of a full pool")
        self.assertGreaterEqual(len(held) * 4 * MiB + 4 * MiB, cap - 8 * MiB)
        self.assertTrue(kvc.exists(self.p("pinned")))
        # giving one back makes room again
        self.assertRc(L.kvc_abort(ctypes.byref(held.pop())), 0, "kvc_abort")
        p = KvcPut()
        self.assertRc(L.kvc_reserve(d, b"again", 4 * MiB, ctypes.byref(p)), 0,
                      "kvc_reserve after an abort")
        held.append(p)
        for p in held:
            self.assertRc(L.kvc_abort(ctypes.byref(p)), 0, "kvc_abort")


class ReserveTests(SideCase):
    MOUNT_ARGS = ("--pool-size", "64M", "--max-block-size", "4M")

    def reserve(self, d, name, length, expect=0):
        p = KvcPut()
        rc = L.kvc_reserve(d, os.fsencode(name), length, ctypes.byref(p))
        self.assertRc(rc, expect, "kvc_reserve(%s, %d)" % (name, length))
        if rc == 0:
            self.addCleanup(lambda: p.id and d.value and L.kvc_abort(ctypes.byref(p)))
            self.assertEqual(p.len, length)
            self.assertNotEqual(p.id, 0)
            self.assertTrue(p.data or length == 0)
        return p

    def fill(self, p, data):
        ctypes.memmove(p.data, data, len(data))

    def raw_reserve(self, fd, name, length, mode=0, version=ABI_VERSION):
        a = Reserve(version=version, mode=mode, length=length)
        a.name = os.fsencode(name)
        return raw(fd, "RESERVE", a)

    def raw_commit(self, fd, rid, buf=None, flags=0, src=None):
        a = Commit(version=ABI_VERSION, flags=flags, id=rid)
        if src is not None:
            a.src_addr = src
        elif buf is not None:
            a.src_addr = ctypes.addressof(buf)
        return raw(fd, "COMMIT", a)

    def raw_abort(self, fd, rid):
        return raw(fd, "ABORT", Abort(version=ABI_VERSION, id=rid))

    def test_efbig(self):
        k, d = self.lib()
        fd = self.dirfd()
        self.reserve(d, "big", 4 * MiB + 1, -errno.EFBIG)
        self.assertErrno(errno.EFBIG, self.raw_reserve, fd, "big", 4 * MiB + 1)
        self.assertErrno(errno.EFBIG, self.raw_reserve, fd, "big", 1 << 62)
        p = self.reserve(d, "max", 4 * MiB)
        self.assertRc(L.kvc_abort(ctypes.byref(p)), 0, "kvc_abort")

    def test_commit_publishes(self):
        k, d = self.lib()
        data = os.urandom(MiB + 123)
        p = self.reserve(d, "blk", len(data))
        # invisible until committed
        self.assertGone(self.p("blk"))
        self.assertNotIn("blk", os.listdir(self.d))
        self.assertEqual(self.lookup(d, ["blk"]), 0)
        self.get(d, "blk", -errno.ENOENT)
        self.fill(p, data)
        self.assertRc(L.kvc_commit(ctypes.byref(p), 0), 0, "kvc_commit")
        self.assertEqual(p.id, 0)
        self.assertEqual(os.stat(self.p("blk")).st_size, len(data))
        self.assertEqual(stat.S_IMODE(os.stat(self.p("blk")).st_mode), 0o644)
        self.assertTrue(kvc.read_block(self.p("blk")) == data, "committed bytes differ")
        self.assertIn("blk", os.listdir(self.d))
        self.assertEqual(kvc.xattr(self.p("blk"), "state"), b"sealed")
        self.assertEqual(self.lookup(d, ["blk"]), 1)
        b = self.get(d, "blk")
        self.assertTrue(ctypes.string_at(b.data, b.len) == data)
        # sealed like any block: no writing into it
        self.assertErrno(errno.EPERM, os.open, self.p("blk"), os.O_WRONLY)
        # kvc_put: the same in one call
        self.assertRc(L.kvc_put(d, b"put", data, len(data), 0), 0, "kvc_put")
        self.assertTrue(kvc.read_block(self.p("put")) == data)

    def test_empty_block(self):
        # an empty file is a valid block: the side channel stores one too
        k, d = self.lib()
        p = self.reserve(d, "e1", 0)
        self.assertRc(L.kvc_commit(ctypes.byref(p), 0), 0, "kvc_commit(0 bytes)")
        self.assertRc(L.kvc_put(d, b"e2", b"", 0, 0), 0, "kvc_put(0 bytes)")
        for n in ("e1", "e2"):
            self.assertEqual(os.stat(self.p(n)).st_size, 0)
            self.assertEqual(kvc.read_block(self.p(n)), b"")
        self.assertEqual(self.lookup(d, ["e1", "e2"]), 2)

    def test_raw_commit_generation_and_mode(self):
        fd = self.dirfd()
        data = os.urandom(5000)
        buf = ctypes.create_string_buffer(data, len(data))
        r = self.raw_reserve(fd, "g", len(data), mode=0o600)
        self.assertNotEqual(r.id, 0)
        c = self.raw_commit(fd, r.id, buf)
        self.assertNotEqual(c.generation, 0)
        ref = xxh3_64(data)
        if ref is not None:
            self.assertEqual(c.checksum, ref)
        self.assertEqual(stat.S_IMODE(os.stat(self.p("g")).st_mode), 0o600)
        self.assertEqual(kvc.read_block(self.p("g")), data)
        a = self.raw_pin(fd, ["g"])
        self.assertEqual((a.out[0].generation, a.out[0].checksum), (c.generation, c.checksum))
        self.raw_unpin(fd, [a.out[0].pin])
        # commit and abort of a finished reservation
        self.assertErrno(errno.EINVAL, self.raw_commit, fd, r.id, buf)
        self.assertErrno(errno.EINVAL, self.raw_abort, fd, r.id)
        self.assertErrno(errno.EINVAL, self.raw_commit, fd, 0, buf)
        self.assertErrno(errno.EINVAL, self.raw_abort, fd, 0x7fffffff_fffffff0)

    def test_trusted_writer_in_place(self):
        k = self.kvc_open(KVC_TRUSTED_WRITER)
        d = self.kvc_dir(k)
        size = ctypes.c_size_t()
        base = L.kvc_pool_base(k, ctypes.byref(size))
        data = os.urandom(300 * KiB)
        p = self.reserve(d, "inplace", len(data))
        self.assertTrue(p.inplace, "a trusted writer's reservation is not in place")
        self.assertTrue(base <= p.data and p.data + p.len <= base + size.value,
                        "in-place data outside the pool mapping")
        self.fill(p, data)
        self.assertRc(L.kvc_commit(ctypes.byref(p), 0), 0, "kvc_commit(inplace)")
        self.assertTrue(kvc.read_block(self.p("inplace")) == data)
        # an untrusted handle gets a library buffer, not the pool
        k2 = self.kvc_open()
        d2 = self.kvc_dir(k2)
        p2 = self.reserve(d2, "copy", 1000)
        self.assertFalse(p2.inplace)

    def test_noreplace_and_replace(self):
        k, d = self.lib()
        self.block("x", b"old")
        rfd = os.open(self.p("x"), os.O_RDONLY)
        self.addCleanup(os.close, rfd)
        p = self.reserve(d, "x", 3)
        self.fill(p, b"new")
        self.assertRc(L.kvc_commit(ctypes.byref(p), KVC_NOREPLACE), -errno.EEXIST,
                      "kvc_commit(NOREPLACE) onto a block")
        self.assertNotEqual(p.id, 0, "a failed commit closed the reservation")
        self.assertEqual(kvc.read_block(self.p("x")), b"old")
        self.assertRc(L.kvc_commit(ctypes.byref(p), 0), 0, "kvc_commit(replace)")
        self.assertEqual(kvc.read_block(self.p("x")), b"new")
        self.assertEqual(os.pread(rfd, 10, 0), b"old", "a reader of the old block saw it change")
        self.assertRc(L.kvc_put(d, b"x", b"put", 3, KVC_NOREPLACE), -errno.EEXIST,
                      "kvc_put(NOREPLACE)")
        self.assertRc(L.kvc_put(d, b"y", b"put", 3, KVC_NOREPLACE), 0, "kvc_put(NOREPLACE) new")
        self.assertEqual(kvc.read_block(self.p("y")), b"put")
        # raw: NOREPLACE flag
        fd = self.dirfd()
        buf = ctypes.create_string_buffer(b"raw", 3)
        r = self.raw_reserve(fd, "y", 3)
        self.assertErrno(errno.EEXIST, self.raw_commit, fd, r.id, buf, COMMIT_NOREPLACE)
        self.raw_abort(fd, r.id)

    def test_abort_frees_space(self):
        k, d = self.lib()
        u0 = self.used()
        p = self.reserve(d, "a", 4 * MiB)
        self.fill(p, b"z" * (4 * MiB))
        self.wait_used(lambda u: u >= u0 + 4 * MiB)
        self.wait_status("reservations", 1)
        self.assertRc(L.kvc_abort(ctypes.byref(p)), 0, "kvc_abort")
        self.assertEqual(p.id, 0)
        self.wait_used(lambda u: u <= u0)
        self.wait_status("reservations", 0)
        self.assertGone(self.p("a"))
        self.assertNotIn("a", os.listdir(self.d))
        self.assertRc(L.kvc_commit(ctypes.byref(p), 0), -errno.EINVAL, "kvc_commit after abort")
        self.assertRc(L.kvc_abort(ctypes.byref(p)), -errno.EINVAL, "kvc_abort twice")
        # raw: commit after abort
        fd = self.dirfd()
        r = self.raw_reserve(fd, "b", 100)
        self.raw_abort(fd, r.id)
        buf = ctypes.create_string_buffer(100)
        self.assertErrno(errno.EINVAL, self.raw_commit, fd, r.id, buf)
        self.assertErrno(errno.EINVAL, self.raw_abort, fd, r.id)
        self.assertGone(self.p("b"))

    def test_other_descriptor(self):
        fd1, fd2 = self.dirfd(), self.dirfd()
        buf = ctypes.create_string_buffer(b"data", 4)
        r = self.raw_reserve(fd1, "o", 4)
        self.assertErrno(errno.EPERM, self.raw_commit, fd2, r.id, buf)
        self.assertErrno(errno.EPERM, self.raw_abort, fd2, r.id)
        # a descriptor of another directory, too
        os.mkdir(self.p("sub"))
        self.assertErrno(errno.EPERM, self.raw_commit, self.dirfd(self.p("sub")), r.id, buf)
        # a dup shares the open file description
        fd3 = os.dup(fd1)
        self.addCleanup(self._close_fd, fd3)
        self.raw_commit(fd3, r.id, buf)
        self.assertEqual(kvc.read_block(self.p("o")), b"data")

    def test_efault(self):
        fd = self.dirfd()
        r = self.raw_reserve(fd, "f", 4096)
        self.assertErrno(errno.EFAULT, self.raw_commit, fd, r.id, src=8)
        self.assertErrno(errno.EFAULT, self.raw_commit, fd, r.id, src=0)
        self.assertGone(self.p("f"))
        buf = ctypes.create_string_buffer(b"q" * 4096, 4096)
        self.raw_commit(fd, r.id, buf)  # the failed commits left the reservation open
        self.assertEqual(kvc.read_block(self.p("f")), b"q" * 4096)

    def test_bad_names(self):
        k, d = self.lib()
        fd = self.dirfd()
        for name in ("", "a/b", "/a", ".", ".."):
            with self.subTest(name=name):
                self.reserve(d, name, 10, -errno.EINVAL)
                self.assertErrno(errno.EINVAL, self.raw_reserve, fd, name, 10)
        a = Reserve(version=ABI_VERSION, length=10)
        put_bytes(a, "name", b"n" * PATH_MAX)  # no NUL anywhere
        self.assertErrno(errno.EINVAL, raw, fd, "RESERVE", a)
        self.reserve(d, "x" * 256, 10, -errno.EINVAL)
        p = self.reserve(d, "x" * 255, 10)
        self.fill(p, b"0123456789")
        self.assertRc(L.kvc_commit(ctypes.byref(p), 0), 0, "kvc_commit(255-byte name)")
        self.assertEqual(kvc.read_block(self.p("x" * 255)), b"0123456789")

    def test_rmdir_with_reservation(self):
        # a reservation is invisible: the directory is empty and can be removed; the commit
        # then has nowhere to go (ENOENT) and the reservation stays open for the abort
        k = self.kvc_open()
        os.mkdir(self.p("sub"))
        d = self.kvc_dir(k, self.rel + "/sub")
        u0 = self.used()
        p = self.reserve(d, "r", MiB)
        self.fill(p, b"r" * MiB)
        os.rmdir(self.p("sub"))
        self.assertGone(self.p("sub"))
        self.assertRc(L.kvc_commit(ctypes.byref(p), 0), -errno.ENOENT,
                      "kvc_commit into a removed directory")
        self.assertNotEqual(p.id, 0)
        self.assertRc(L.kvc_abort(ctypes.byref(p)), 0, "kvc_abort")
        self.wait_used(lambda u: u <= u0)

    def test_dir_close_aborts(self):
        k = self.kvc_open()
        d = self.kvc_dir(k)
        u0 = self.used()
        for i in range(3):
            self.reserve(d, "c%d" % i, 2 * MiB)
        self.wait_used(lambda u: u >= u0 + 6 * MiB)
        self.wait_status("reservations", 3)
        self.close_dir(d)  # aborts them (the cleanups then leave them alone)
        self.wait_used(lambda u: u <= u0)
        self.wait_status("reservations", 0)
        for i in range(3):
            self.assertGone(self.p("c%d" % i))

    def test_killed_process_aborts(self):
        u0 = self.used()
        path = self.d

        def fn():
            fd = opendir(path)
            a = Reserve(version=ABI_VERSION, length=4 * MiB)
            a.name = b"k"
            raw(fd, "RESERVE", a)
            return a.id
        c = Child(fn)
        rid = c.value
        self.assertNotEqual(rid, 0)
        self.wait_used(lambda u: u >= u0 + 4 * MiB)
        self.wait_status("reservations", 1)
        self.assertErrno(errno.EPERM, self.raw_abort, self.dirfd(), rid)
        c.end(signal.SIGKILL)
        self.wait_used(lambda u: u <= u0)
        self.wait_status("reservations", 0)
        self.assertGone(self.p("k"))


# --------------------------------------------------------------------------------------------
# GPU: never faked. Without CUDA (this machine) every registration is ENODEV.

def cuda_gpu_present():
    """True when this process can see a CUDA GPU (libcudart loads and counts one)."""
    path = ctypes.util.find_library("cudart")
    if not path:
        return False
    try:
        rt = ctypes.CDLL(path)
    except OSError:
        return False
    n = ctypes.c_int(0)
    return rt.cudaGetDeviceCount(ctypes.byref(n)) == 0 and n.value > 0


HAVE_GPU = cuda_gpu_present()


def mk_locate(names, hex_suffix=None):
    a = Locate()
    a.version = ABI_VERSION
    a.count = len(names)
    if hex_suffix is not None:
        a.flags = NAMES_HEX
        a.suffix = hex_suffix.encode()
        for i, n in enumerate(names):
            ctypes.memmove(ctypes.addressof(a.names) + 16 * i, bytes.fromhex(n[:32]), 16)
    else:
        buf = b"".join(bytes([len(os.fsencode(n))]) + os.fsencode(n) for n in names)
        ctypes.memmove(ctypes.addressof(a.names), buf, len(buf))
    return a


class LoadTests(SideCase):
    """kvc_load_batch: locate without pins, copy, validate against the block header."""

    MOUNT_ARGS = ("--pool-size", "64M", "--max-block-size", "8M")

    def load(self, d, names, caps):
        n = len(names)
        bufs = [ctypes.create_string_buffer(max(c, 1)) for c in caps]
        dst = (ctypes.c_void_p * n)(*[ctypes.addressof(b) for b in bufs])
        cap = (ctypes.c_size_t * n)(*caps)
        ln = (ctypes.c_size_t * n)()
        errs = (ctypes.c_int * n)()
        rc = L.kvc_load_batch(d, names_array(names), n, dst, cap, ln, errs)
        return rc, [bufs[i].raw[:ln[i]] for i in range(n)], list(ln), list(errs)

    def test_loads_and_errors(self):
        k, d = self.lib()
        data = {"a": os.urandom(300 * KiB), "b": b"", "c": os.urandom(4097)}
        for n, v in data.items():
            self.block(n, v)
        os.mkdir(self.p("sub"))
        wfd = os.open(self.p("w"), os.O_WRONLY | os.O_CREAT, 0o644)
        self.addCleanup(self._close_fd, wfd)
        os.write(wfd, b"unsealed")
        names = ["a", "b", "c", "missing", "sub", "w", "a"]
        caps = [300 * KiB, 0, 4097, 10, 10, 100, 1000]
        rc, got, ln, errs = self.load(d, names, caps)
        self.assertEqual(rc, 3)
        self.assertEqual(errs, [0, 0, 0, errno.ENOENT, errno.EISDIR, errno.EBUSY, errno.ERANGE])
        self.assertEqual(got[:3], [data["a"], b"", data["c"]])
        self.assertEqual(ln[6], 300 * KiB)  # the size that did not fit
        # nothing stays pinned
        self.assertEqual(self.m.status()["pinned"], 0)

    def test_many_hex_names_one_request(self):
        k, d = self.lib()
        names = ["%032x.bin" % i for i in range(700)]
        for i, n in enumerate(names):
            self.block(n, b"%d" % i)
        rc, got, ln, errs = self.load(d, names, [16] * len(names))
        self.assertEqual(rc, 700)
        self.assertEqual(got, [b"%d" % i for i in range(700)])

    def test_raw_locate(self):
        self.block("x", b"x" * 5000)
        self.block("%032x.kv" % 7, b"y" * 10)
        fd = self.dirfd()
        a = raw(fd, "LOCATE", mk_locate(["x", "nope"]))
        self.assertEqual((a.found, a.error[0], a.error[1]), (1, 0, errno.ENOENT))
        self.assertEqual(a.out[0].length, 5000)
        p = self.raw_pin(fd, ["x"])
        self.assertEqual((a.out[0].offset, a.out[0].generation),
                         (p.out[0].offset, p.out[0].generation))
        self.raw_unpin(fd, [p.out[0].pin])
        a = raw(fd, "LOCATE", mk_locate(["%032x.kv" % 7], hex_suffix=".kv"))
        self.assertEqual((a.found, a.out[0].length), (1, 10))
        # the header the reply points at: magic, sealed, same generation and length
        info = PoolInfo()
        info.version = ABI_VERSION
        raw(fd, "POOL_INFO", info)
        k = self.kvc_open()
        base = L.kvc_pool_base(k, None)
        hdr = BlockHeader.from_address(base + info.header_offset + ctypes.sizeof(BlockHeader) * (
            (a.out[0].offset - info.data_offset) // info.page_size))
        self.assertEqual((hdr.magic, hdr.flags & 1, hdr.generation, hdr.length),
                         (CONSTS["KVCACHEFS_HDR_MAGIC"], 1, a.out[0].generation, 10))
        self.assertErrno(errno.EINVAL, raw, fd, "LOCATE", mk_locate([]))
        big = mk_locate(["x"])
        big.count = LOCATE_MAX + 1
        self.assertErrno(errno.E2BIG, raw, fd, "LOCATE", big)
        bad = mk_locate(["x"])
        bad.count = 2  # the second name runs into zeros: length 0
        self.assertErrno(errno.EINVAL, raw, fd, "LOCATE", bad)
        self.assertErrno(errno.EINVAL, raw, fd, "LOCATE", mk_locate(["a/b"]))
        ffd = os.open(self.p("x"), os.O_RDONLY)
        self.addCleanup(self._close_fd, ffd)
        self.assertErrno(errno.ENOTDIR, raw, ffd, "LOCATE", mk_locate(["x"]))

    def test_no_torn_block_under_replacement_and_eviction(self):
        """A writer keeps replacing blocks (each version one repeated byte) and filling the
        pool so the old versions are freed and their pages reused, while kvc_load_batch
        loads: every block loaded is one whole version."""
        k, d = self.lib()
        size = 1 * MiB
        names = ["blk%d" % i for i in range(8)]
        for n in names:
            self.block(n, b"\0" * size)

        def writer():
            v = 1
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                for n in names:
                    tmp = self.p(".tmp-" + n)
                    kvc.write_block(tmp, bytes([v % 251 + 1]) * size)
                    os.replace(tmp, self.p(n))
                    v += 1
                # pressure: fill the pool so freed pages are reused at once
                for j in range(20):
                    kvc.write_block(self.p("fill%d-%d" % (v, j)), os.urandom(size))
            return 0

        t = threading.Thread(target=writer)
        t.start()
        loads = torn = 0
        try:
            while t.is_alive():
                rc, got, ln, errs = self.load(d, names, [size] * len(names))
                for g, e in zip(got, errs):
                    if e == 0:
                        loads += 1
                        if len(g) != size or g.count(g[:1]) != size:
                            torn += 1
                    else:
                        self.assertEqual(e, errno.ENOENT)  # evicted, as any cache
        finally:
            t.join()
        self.assertGreater(loads, 0)
        self.assertEqual(torn, 0, "%d of %d loaded blocks mixed two versions" % (torn, loads))


class DirCloseTests(SideCase):
    """kvc_dir_close releases pins and aborts reservations in the daemon; the kvc_block and
    kvc_put structs left over are still safe to hand to kvc_release / kvc_abort / kvc_commit."""

    def test_leftovers_after_dir_close(self):
        k = self.kvc_open()
        self.block("b", b"pinned bytes")
        d = ctypes.c_void_p()
        self.assertRc(L.kvc_dir_open(k, os.fsencode(self.rel), ctypes.byref(d)), 0,
                      "kvc_dir_open")
        b = KvcBlock()
        self.assertRc(L.kvc_get(d, b"b", ctypes.byref(b)), 0, "kvc_get")
        p1, p2 = KvcPut(), KvcPut()
        self.assertRc(L.kvc_reserve(d, b"r1", 100000, ctypes.byref(p1)), 0, "kvc_reserve")
        self.assertRc(L.kvc_reserve(d, b"r2", 5, ctypes.byref(p2)), 0, "kvc_reserve")
        st = kvc.ctl_status_json(self.m.mnt)
        self.assertEqual((st["pinned"], st["reservations"]), (1, 2))
        L.kvc_dir_close(d)
        st = wait_until(lambda: (lambda s: s if s["pinned"] == 0 and s["reservations"] == 0
                                 else None)(kvc.ctl_status_json(self.m.mnt)), timeout=3)
        self.assertTrue(st, "closing the kvc_dir left pins or reservations in the daemon")
        self.assertRc(L.kvc_release(ctypes.byref(b)), 0, "kvc_release after close")
        self.assertEqual(b.pin, 0)
        self.assertRc(L.kvc_release(ctypes.byref(b)), -errno.EINVAL, "second kvc_release")
        self.assertRc(L.kvc_commit(ctypes.byref(p1), 0), -errno.EBADF, "kvc_commit after close")
        self.assertEqual(p1.id, 0)
        self.assertRc(L.kvc_abort(ctypes.byref(p2)), 0, "kvc_abort after close")
        self.assertRc(L.kvc_abort(ctypes.byref(p2)), -errno.EINVAL, "second kvc_abort")
        self.assertGone(self.p("r1"))
        self.assertGone(self.p("r2"))


class Gpu(SideCase):
    @unittest.skipIf(HAVE_GPU, "a CUDA GPU is present: registration does not fail")
    def test_enodev_without_gpu(self):
        k, d = self.lib()
        self.assertRc(L.kvc_gpu_register_pool(k), -errno.ENODEV, "kvc_gpu_register_pool")
        gid = u64(0)
        handle = (u8 * CUDA_IPC_HANDLE_SIZE)()
        self.assertRc(L.kvc_gpu_register(d, handle, MiB, 0, ctypes.byref(gid)), -errno.ENODEV,
                      "kvc_gpu_register")
        a = GpuRegister(version=ABI_VERSION, device=0, size=MiB)
        self.assertErrno(errno.ENODEV, raw, self.dirfd(), "GPU_REGISTER", a)

    @unittest.skipUnless(HAVE_GPU, "no CUDA GPU on this machine")
    def test_gpu_load(self):
        rt = ctypes.CDLL(ctypes.util.find_library("cudart"))
        k, d = self.lib()
        self.assertRc(L.kvc_gpu_register_pool(k), 0, "kvc_gpu_register_pool")
        datas = [self.block("g%d" % i, os.urandom(64 * KiB + i)) for i in range(3)]
        size = 1 * MiB
        dev = ctypes.c_void_p()
        self.assertEqual(rt.cudaMalloc(ctypes.byref(dev), ctypes.c_size_t(size)), 0)
        self.addCleanup(rt.cudaFree, dev)
        handle = (u8 * CUDA_IPC_HANDLE_SIZE)()
        self.assertEqual(rt.cudaIpcGetMemHandle(handle, dev), 0)
        gid = u64(0)
        self.assertRc(L.kvc_gpu_register(d, handle, size, 0, ctypes.byref(gid)), 0,
                      "kvc_gpu_register")
        blocks = (KvcBlock * 3)()
        errs = (ctypes.c_int * 3)()
        self.assertEqual(L.kvc_get_batch(d, names_array(["g0", "g1", "g2"]), 3, blocks, errs), 3)
        offs = (u64 * 3)(0, 256 * KiB, 512 * KiB)
        self.assertRc(L.kvc_gpu_load(d, gid.value, blocks, offs, 3), 0, "kvc_gpu_load")
        for i, data in enumerate(datas):
            host = ctypes.create_string_buffer(len(data))
            self.assertEqual(rt.cudaMemcpy(host, ctypes.c_void_p(dev.value + offs[i]),
                                           ctypes.c_size_t(len(data)), 2), 0)  # DeviceToHost
            self.assertTrue(host.raw == data, "block %d differs on the GPU" % i)
        bad = (u64 * 1)(size - 1000)
        self.assertRc(L.kvc_gpu_load(d, gid.value, blocks, bad, 1), -errno.EINVAL,
                      "kvc_gpu_load past the buffer's end")
        self.assertEqual(L.kvc_release_batch(blocks, 3), 0)
        self.assertRc(L.kvc_gpu_unregister(d, gid.value), 0, "kvc_gpu_unregister")


if __name__ == "__main__":
    kvc.main()

#!/usr/bin/env python3
"""connector.py: an inference engine's KV offloading connector over kvcachefs.

    connector.py MOUNTPOINT [--api file|lib] [--dir DIR] [--tokens N] [--seed S] ...

For one request (a list of token ids) it does what a connector such as LMCache's local-disk
or fs backend does: name each full block of --block-tokens tokens by its chained prefix hash,
find the longest prefix of blocks already cached, load those, "compute" and store the rest.
The KV bytes of a block are a function of its name (see payload()), so every load is checked
byte for byte. It prints one line of JSON:

    {"api": "lib", "dir": "connector", "blocks": 4, "hits": 2, "stored": 2, ...}

Two ways to talk to kvcachefs, interchangeable (same names, same directory, same bytes):

  --api file   plain files, what any connector already does: os.stat each name in order for
               the lookup, open/read to load, write to a temporary name then os.replace to
               publish atomically (readers never see a half-written block).
  --api lib    libkvcache through ctypes: one kvc_lookup call for the whole prefix, kvc_get
               to read a block straight out of the daemon's shared DRAM pool (no copy through
               the kernel), kvc_reserve + kvc_commit to store (or kvc_put with --write put).

Block names are those of kvc_prefix_hash (libkvcache; `kvcachectl hash` prints the same):
h0 = XXH3-128(seed as 8 little-endian bytes), h_i = XXH3-128(h_{i-1} in canonical big-endian
form || the block's tokens as little-endian u32), named by 32 lowercase hex digits. Both modes
call the library for them; --hasher xxhash computes them with libxxhash instead, without
libkvcache. With the defaults (64 tokens from seed 42, blocks of 16 tokens and 256 KiB) and
--dir example, the blocks are those examples/save_load.c stores.

libkvcache is found by --lib PATH, else $KVC_LIB_DIR/libkvcache.so, else the system's
(ctypes.util.find_library). Standard library only.

Exit status: 0 when every block was loaded or stored and read back exactly, 1 on any failure
(one line on stderr), 2 for a usage error.
"""

import argparse
import ctypes
import ctypes.util
import errno
import json
import os
import stat
import struct
import sys

MASK64 = (1 << 64) - 1
HASH_NAME_SIZE = 33  # KVC_HASH_NAME_SIZE: 32 hex digits and the NUL
VOCAB = 32000


class ConnectorError(Exception):
    pass


def oserror(what, err):
    """A ConnectorError for a failed call: err is a (positive or negative) errno."""
    err = abs(err)
    return ConnectorError("%s: %s (%s)" % (what, os.strerror(err),
                                           errno.errorcode.get(err, str(err))))


# --------------------------------------------------------------------------------------------
# The request and its KV: deterministic, so any run (or examples/save_load.c) can check them.

def splitmix64(state):
    """One step of splitmix64: (new state, output)."""
    state = (state + 0x9e3779b97f4a7c15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & MASK64
    return state, z ^ (z >> 31)


def make_tokens(seed, n):
    """n token ids of a 32000-word vocabulary: the same stream as save_load.c's, so a longer
    request extends a shorter one's prefix."""
    out, state = [], seed & MASK64
    for _ in range(n):
        state, v = splitmix64(state)
        out.append((v >> 32) % VOCAB)
    return out


def payload(name, length):
    """The fake KV of block `name`: splitmix64 seeded with the FNV-1a hash of the name, each
    output little-endian (as save_load.c's make_payload)."""
    state = 0xcbf29ce484222325
    for c in name.encode():
        state = ((state ^ c) * 0x100000001b3) & MASK64
    words = []
    for _ in range((length + 7) // 8):
        state, v = splitmix64(state)
        words.append(v)
    return struct.pack("<%dQ" % len(words), *words)[:length]


# --------------------------------------------------------------------------------------------
# libkvcache through ctypes (prototypes from fs/uapi/kvcache.h)

class KvcBlock(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("len", ctypes.c_size_t),
                ("generation", ctypes.c_uint64), ("checksum", ctypes.c_uint64),
                ("pin", ctypes.c_uint64), ("dir", ctypes.c_void_p)]


class KvcPut(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("len", ctypes.c_size_t), ("id", ctypes.c_uint64),
                ("dir", ctypes.c_void_p), ("inplace", ctypes.c_bool)]


def find_libkvcache(path=None):
    if path:
        return path
    libdir = os.environ.get("KVC_LIB_DIR")
    if libdir and os.path.exists(os.path.join(libdir, "libkvcache.so")):
        return os.path.join(libdir, "libkvcache.so")
    found = ctypes.util.find_library("kvcache")
    if not found:
        raise ConnectorError("libkvcache not found: give --lib PATH or set KVC_LIB_DIR")
    return found


def load_libkvcache(path):
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise ConnectorError("cannot load %s: %s" % (path, e))
    vp, cp, sz, u32, u64 = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint32,
                            ctypes.c_uint64)
    protos = {
        "kvc_open": ([cp, ctypes.c_uint, ctypes.POINTER(vp)], ctypes.c_int),
        "kvc_close": ([vp], None),
        "kvc_dir_open": ([vp, cp, ctypes.POINTER(vp)], ctypes.c_int),
        "kvc_dir_close": ([vp], None),
        "kvc_lookup": ([vp, ctypes.POINTER(cp), sz], ctypes.c_int),
        "kvc_get": ([vp, cp, ctypes.POINTER(KvcBlock)], ctypes.c_int),
        "kvc_release": ([ctypes.POINTER(KvcBlock)], ctypes.c_int),
        "kvc_reserve": ([vp, cp, sz, ctypes.POINTER(KvcPut)], ctypes.c_int),
        "kvc_commit": ([ctypes.POINTER(KvcPut), ctypes.c_uint], ctypes.c_int),
        "kvc_abort": ([ctypes.POINTER(KvcPut)], ctypes.c_int),
        "kvc_put": ([vp, cp, vp, sz, ctypes.c_uint], ctypes.c_int),
        "kvc_prefix_hash": ([u64, u32, ctypes.POINTER(u32), sz, vp, sz], ctypes.c_int),
    }
    for fn, (args, res) in protos.items():
        f = getattr(lib, fn)
        f.argtypes, f.restype = args, res
    return lib


def names_kvcache(lib, seed, block_tokens, tokens):
    """Block names from kvc_prefix_hash."""
    nblocks = len(tokens) // block_tokens
    arr = (ctypes.c_uint32 * max(len(tokens), 1))(*tokens)
    out = ctypes.create_string_buffer(HASH_NAME_SIZE * max(nblocks, 1))
    n = lib.kvc_prefix_hash(seed, block_tokens, arr, len(tokens), out, nblocks)
    if n < 0:
        raise oserror("kvc_prefix_hash", n)
    if n != nblocks:
        raise ConnectorError("kvc_prefix_hash: %d blocks, expected %d" % (n, nblocks))
    raw = out.raw
    return [raw[i * HASH_NAME_SIZE:(i + 1) * HASH_NAME_SIZE].split(b"\0")[0].decode()
            for i in range(nblocks)]


class XXH128(ctypes.Structure):
    _fields_ = [("low64", ctypes.c_uint64), ("high64", ctypes.c_uint64)]


def names_xxhash(seed, block_tokens, tokens):
    """The same chain computed with libxxhash's XXH3_128bits (no libkvcache)."""
    path = ctypes.util.find_library("xxhash")
    if not path:
        raise ConnectorError("libxxhash not found")
    xxh = ctypes.CDLL(path)
    xxh.XXH3_128bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    xxh.XXH3_128bits.restype = XXH128

    def canonical(data):
        h = xxh.XXH3_128bits(data, len(data))
        return struct.pack(">QQ", h.high64, h.low64)

    prev, names = canonical(struct.pack("<Q", seed & MASK64)), []
    for i in range(len(tokens) // block_tokens):
        blk = tokens[i * block_tokens:(i + 1) * block_tokens]
        prev = canonical(prev + struct.pack("<%dI" % block_tokens, *blk))
        names.append(prev.hex())
    return names


# --------------------------------------------------------------------------------------------
# The two back ends. Each one: lookup(names) -> hits; load(name) -> bytes or None when the
# block vanished (evicted since the lookup); store(name, data); close().

class FileBackend:
    """Plain files: what a connector does on any file system."""

    def __init__(self, mnt, directory):
        self.dir = os.path.join(mnt, directory)
        os.makedirs(self.dir, exist_ok=True)

    def lookup(self, names):
        hits = 0
        for name in names:
            try:
                st = os.stat(os.path.join(self.dir, name))
            except FileNotFoundError:
                break
            if not stat.S_ISREG(st.st_mode):
                break
            hits += 1
        return hits

    def load(self, name):
        try:
            with open(os.path.join(self.dir, name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def store(self, name, data):
        # publish atomically: a reader sees the whole block or no block
        tmp = os.path.join(self.dir, ".%s.tmp.%d" % (name, os.getpid()))
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, os.path.join(self.dir, name))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def close(self):
        pass


class LibBackend:
    """libkvcache: one-call lookup, zero-copy loads from the shared pool, reserve + commit."""

    def __init__(self, lib, mnt, directory, write):
        self.lib, self.write = lib, write
        self.k = ctypes.c_void_p()
        self.d = ctypes.c_void_p()
        os.makedirs(os.path.join(mnt, directory), exist_ok=True)  # the library has no mkdir
        rc = lib.kvc_open(mnt.encode(), 0, ctypes.byref(self.k))
        if rc < 0:
            raise oserror("kvc_open %s" % mnt, rc)
        rc = lib.kvc_dir_open(self.k, directory.encode(), ctypes.byref(self.d))
        if rc < 0:
            lib.kvc_close(self.k)
            raise oserror("kvc_dir_open %s" % directory, rc)

    def lookup(self, names):
        arr = (ctypes.c_char_p * len(names))(*[n.encode() for n in names])
        n = self.lib.kvc_lookup(self.d, arr, len(names))
        if n < 0:
            raise oserror("kvc_lookup", n)
        return n

    def load(self, name):
        b = KvcBlock()
        rc = self.lib.kvc_get(self.d, name.encode(), ctypes.byref(b))
        if rc == -errno.ENOENT:
            return None
        if rc < 0:
            raise oserror("kvc_get %s" % name, rc)
        try:
            # b.data points into the read-only pool mapping; an engine would hand it to
            # cudaMemcpyAsync. Here: one copy into a bytes object, to check it.
            return ctypes.string_at(b.data, b.len) if b.len else b""
        finally:
            rc = self.lib.kvc_release(ctypes.byref(b))
            if rc < 0:
                raise oserror("kvc_release %s" % name, rc)

    def store(self, name, data):
        if self.write == "put":
            rc = self.lib.kvc_put(self.d, name.encode(), data, len(data), 0)
            if rc < 0:
                raise oserror("kvc_put %s" % name, rc)
            return
        p = KvcPut()
        rc = self.lib.kvc_reserve(self.d, name.encode(), len(data), ctypes.byref(p))
        if rc < 0:
            raise oserror("kvc_reserve %s" % name, rc)
        if p.len != len(data):
            self.lib.kvc_abort(ctypes.byref(p))
            raise ConnectorError("kvc_reserve %s: %d bytes, asked %d" % (name, p.len, len(data)))
        ctypes.memmove(p.data, data, len(data))
        rc = self.lib.kvc_commit(ctypes.byref(p), 0)
        if rc < 0:
            self.lib.kvc_abort(ctypes.byref(p))
            raise oserror("kvc_commit %s" % name, rc)

    def close(self):
        if self.d:
            self.lib.kvc_dir_close(self.d)
            self.d = ctypes.c_void_p()
        if self.k:
            self.lib.kvc_close(self.k)
            self.k = ctypes.c_void_p()


# --------------------------------------------------------------------------------------------

def serve_request(backend, names, block_bytes):
    """Lookup, load the cached prefix, store the rest, read the stored blocks back."""
    hits = backend.lookup(names)
    loaded = 0
    for i in range(hits):
        data = backend.load(names[i])
        if data is None:  # evicted since the lookup: recompute from here on
            hits = i
            break
        if data != payload(names[i], block_bytes):
            raise ConnectorError("block %d (%s): %d bytes loaded, differ from the %d expected"
                                 % (i, names[i], len(data), block_bytes))
        loaded += len(data)
    for name in names[hits:]:
        backend.store(name, payload(name, block_bytes))
    for i in range(hits, len(names)):
        if backend.load(names[i]) != payload(names[i], block_bytes):
            raise ConnectorError("block %d (%s) does not read back as stored" % (i, names[i]))
    return {"hits": hits, "stored": len(names) - hits, "loaded_bytes": loaded,
            "verified": len(names)}


def size_arg(s):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    try:
        if s and s[-1].upper() in units:
            v = int(s[:-1]) * units[s[-1].upper()]
        else:
            v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError("bad size %r" % s)
    if v <= 0:
        raise argparse.ArgumentTypeError("size must be positive: %r" % s)
    return v


def main(argv=None):
    ap = argparse.ArgumentParser(description="A KV offloading connector over kvcachefs.")
    ap.add_argument("mountpoint")
    ap.add_argument("--api", choices=("file", "lib"), default="file",
                    help="plain files or libkvcache (default file)")
    ap.add_argument("--dir", default="connector",
                    help="directory of the blocks, relative to the mountpoint (default "
                    "connector; \"example\" is save_load.c's)")
    ap.add_argument("--tokens", type=int, default=64, help="tokens in the request")
    ap.add_argument("--seed", type=int, default=42, help="seed of the request's tokens")
    ap.add_argument("--hash-seed", type=int, default=0, help="kvc_prefix_hash seed")
    ap.add_argument("--block-tokens", type=int, default=16)
    ap.add_argument("--block-bytes", type=size_arg, default=256 * 1024,
                    help="KV bytes per block (K, M, G suffixes)")
    ap.add_argument("--write", choices=("reserve", "put"), default="reserve",
                    help="--api lib: kvc_reserve + kvc_commit, or kvc_put")
    ap.add_argument("--hasher", choices=("kvcache", "xxhash"), default="kvcache",
                    help="block names from libkvcache's kvc_prefix_hash or libxxhash")
    ap.add_argument("--lib", help="path of libkvcache.so")
    ap.add_argument("--print-names", action="store_true",
                    help="print the block names, one per line, and stop")
    args = ap.parse_args(argv)
    if args.block_tokens <= 0 or args.tokens < 0:
        ap.error("--block-tokens must be positive and --tokens not negative")

    try:
        lib = None
        if args.hasher == "kvcache" or args.api == "lib":
            lib = load_libkvcache(find_libkvcache(args.lib))
        tokens = make_tokens(args.seed, args.tokens)
        if args.hasher == "kvcache":
            names = names_kvcache(lib, args.hash_seed, args.block_tokens, tokens)
        else:
            names = names_xxhash(args.hash_seed, args.block_tokens, tokens)
        if args.print_names:
            for n in names:
                print(n)
            return 0
        if args.api == "lib":
            backend = LibBackend(lib, args.mountpoint, args.dir, args.write)
        else:
            backend = FileBackend(args.mountpoint, args.dir)
        try:
            summary = serve_request(backend, names, args.block_bytes)
        finally:
            backend.close()
    except ConnectorError as e:
        sys.stderr.write("connector.py: %s\n" % e)
        return 1
    except OSError as e:
        sys.stderr.write("connector.py: %s\n" % e)
        return 1
    out = {"api": args.api, "dir": args.dir, "blocks": len(names)}
    out.update(summary)
    out["last"] = names[-1] if names else None
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

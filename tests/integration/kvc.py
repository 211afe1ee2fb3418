"""Shared helpers for the kvcachefs integration tests (Python 3 standard library only).

Every test mounts a real kvcachefs on a temporary directory through the kernel:

    with Mount("--pool-size", "16M") as m:
        write_block(m.path("a"), b"...")

or, for a whole test class:

    @classmethod
    def setUpClass(cls):
        cls.m = Mount.for_class(cls, "--pool-size", "64M")

or, for a class whose tests each work in their own directory of one shared mount, a
subclass of DirTestCase.

The programs are taken from $KVC_BIN_DIR (set by ctest), else from build/bin of this
checkout. A Mount always cleans up (unmount, wait for the daemon, remove the directory, the
pool object and the --ssd files), also when a test fails, and reports a daemon that died
during the test, that does not exit after the unmount, or that left a sanitizer report behind.

Restarts (the pool object and the SSD files outlive a daemon):

    m.shutdown(); m.restart()       clean unmount, then a new daemon with the same arguments
    m.kill9(); m.restart("--fresh")  a crash, then a new daemon with one more argument
    r = m.try_restart(args=[...])   a daemon expected to refuse: the CompletedProcess

Blocks whose bytes follow from their names (det_bytes, det_size) let a writer process
(BlockWriter) and a checker agree without holding copies; disk_tempdir gives a directory for
--ssd files on a filesystem that takes O_DIRECT.
"""

import atexit
import ctypes
import ctypes.util
import errno
import hashlib
import json
import mmap
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
BIN_DIR = os.environ.get("KVC_BIN_DIR") or os.path.normpath(
    os.path.join(HERE, "..", "..", "build", "bin"))
KVCACHEFS = os.path.join(BIN_DIR, "kvcachefs")
KVCACHECTL = os.path.join(BIN_DIR, "kvcachectl")

KiB = 1024
MiB = 1024 * 1024

# Default pool for tests that do not ask for one: small, so that several test files can run in
# parallel (ctest -j) without eating the machine's shared memory.
DEFAULT_TEST_POOL = "64M"

XATTR_PREFIX = "user.kvcachefs."
XATTR_NAMES = ("user.kvcachefs.tier", "user.kvcachefs.state", "user.kvcachefs.refs",
               "user.kvcachefs.last_access")


# --------------------------------------------------------------------------------------------
# Environment checks

def require_environment():
    """Raise unittest.SkipTest (with the reason) where FUSE cannot work at all; raise an
    error when the programs under test are missing (a build problem, not a skip)."""
    if not os.path.exists("/dev/fuse"):
        raise unittest.SkipTest("/dev/fuse is missing: FUSE tests need it")
    if os.geteuid() != 0:
        raise unittest.SkipTest("the integration tests mount FUSE filesystems: run them as root")
    for p in (KVCACHEFS, KVCACHECTL):
        if not os.access(p, os.X_OK):
            raise RuntimeError("%s not found or not executable (set KVC_BIN_DIR)" % p)


def errname(e):
    return errno.errorcode.get(e, str(e)) if isinstance(e, int) else str(e)


# --------------------------------------------------------------------------------------------
# Sanitizer reports: every daemon/CLI we start writes its ASan/UBSan report (if any) into a
# private directory, so that a report from a daemonized process (stderr is /dev/null then) is
# not lost. Harmless for non-sanitized builds.

def sanitizer_env(logdir, base=None):
    env = dict(os.environ if base is None else base)
    prefix = os.path.join(logdir, "san")
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        cur = env.get(var, "")
        parts = [p for p in cur.split(":") if p and not p.startswith("log_path=")]
        parts.append("log_path=" + prefix)
        env[var] = ":".join(parts)
    return env


def sanitizer_reports(logdir):
    out = []
    try:
        names = sorted(os.listdir(logdir))
    except FileNotFoundError:
        return out
    for n in names:
        if n.startswith("san"):
            try:
                with open(os.path.join(logdir, n), errors="replace") as f:
                    text = f.read()
            except OSError:
                continue
            if text.strip():
                out.append("%s:\n%s" % (n, text[-8000:]))
    return out


# --------------------------------------------------------------------------------------------
# /proc helpers

def _unescape_mount_field(s):
    # /proc/mounts escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 4 <= len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def mount_entries():
    """[(source, mountpoint, fstype, options)] from /proc/mounts."""
    out = []
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 4:
                out.append((fields[0], _unescape_mount_field(fields[1]), fields[2], fields[3]))
    return out


def mount_entry(path):
    path = os.path.realpath(path)
    for e in mount_entries():
        if e[1] == path:
            return e
    return None


def is_mounted(path):
    return mount_entry(path) is not None


def pid_alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # the state follows the ")" that closes the command name
    state = stat[stat.rfind(")") + 2:][:1]
    return state not in ("Z", "X", "")


def process_gone(pid):
    """True once every thread of process pid has exited (the process may remain a zombie).
    pid_alive looks at the main thread only, which is a zombie while other threads still
    finish their exit (e.g. waiting for in-flight I/O) holding the process's files, and so
    its locks: a daemon's pool object is free for the next one only when this is true."""
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except (FileNotFoundError, ProcessLookupError):
        return True
    return not any(pid_alive_task(pid, int(t)) for t in tasks)


def pid_alive_task(pid, tid):
    try:
        with open("/proc/%d/task/%d/stat" % (pid, tid)) as f:
            st = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = st[st.rfind(")") + 2:][:1]
    return state not in ("Z", "X", "")


def find_daemon(mnt):
    """The pid of the kvcachefs process serving mountpoint mnt, or None."""
    mnt = os.path.realpath(mnt)
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        argv = [a.decode(errors="replace") for a in argv if a]
        if not argv or os.path.basename(argv[0]) != "kvcachefs":
            continue
        if mnt in argv[1:] and pid_alive(int(d)):
            return int(d)
    return None


def wait_until(pred, timeout=5.0, interval=0.05):
    """Poll pred() until it returns a true value or timeout seconds pass; return its last
    value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# Mount

_live_mounts = set()

_SIZE_SUFFIXES = ("", "K", "M", "G", "T")


def parse_size(s):
    """The bytes of a size as the daemon's options take it ("64M", "1G", "4096", "16MiB"), or
    None when s is not one."""
    m = re.fullmatch(r"(\d+)(?:([KMGTkmgt])(?:i?[Bb])?)?", s)
    if not m:
        return None
    return int(m.group(1)) << (10 * _SIZE_SUFFIXES.index((m.group(2) or "").upper()))


def split_ssd_arg(arg):
    """(path, size or None) of a --ssd PATH[:SIZE] argument, split as the daemon does: at the
    last ':' when a size above 0 follows it."""
    head, sep, tail = arg.rpartition(":")
    if sep and head:
        size = parse_size(tail)
        if size:
            return head, size
    return arg, None


def option_values(args, name):
    """The values of option name (e.g. "--ssd") in an argument list, as "--name V" or
    "--name=V", in order."""
    out = []
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            out.append(args[i + 1])
        elif a.startswith(name + "="):
            out.append(a.split("=", 1)[1])
    return out


class Mount:
    """A kvcachefs mounted on a fresh temporary directory (context manager).

    args: extra daemon arguments; --pool-size DEFAULT_TEST_POOL is added unless args hold a
    --pool-size or pool_size=None is given.

    The pool object (and the files named by --ssd) outlive a daemon: stop() removes them once
    the daemon has exited, unless keep_pool=True. mnt: an existing directory to mount on
    (left in place by stop) instead of a fresh one.

    Restarts on the same mountpoint, pool object and SSD files:
        m.shutdown()          clean unmount, the daemon exits; nothing is removed
        m.kill9()             SIGKILL the daemon, lazily unmount the dead mount
        m.restart(*extra)     (shutdown if running, then) start a daemon with the same
                              arguments plus extra; try_restart returns the CompletedProcess
                              instead of raising when the daemon refuses to start
    Whatever happens in between, stop() (called by the cleanups and at exit) leaves no mount,
    no daemon, no pool object and no SSD file behind.
    """

    def __init__(self, *args, pool_size=DEFAULT_TEST_POOL, keep_pool=False, mnt=None):
        self.args = list(args)
        if pool_size is not None and not any(
                a == "--pool-size" or a.startswith("--pool-size=") for a in self.args):
            self.args = ["--pool-size", pool_size] + self.args
        self.keep_pool = keep_pool
        self.own_mnt = mnt is None
        self.mnt = None if mnt is None else os.path.realpath(mnt)
        self.pid = None
        self.logdir = None
        self.started = False  # a daemon of ours serves the mount now
        self.run_args = list(self.args)  # the arguments of the latest daemon
        self._owned = False  # directories made, pool object and SSD files maybe written
        self._files = set()  # pool objects and SSD files of every daemon started here

    # ---- life cycle
    def start(self):
        """The first start: make the directories and mount. On failure everything is cleaned
        up and RuntimeError raised."""
        if self._owned:
            raise RuntimeError("Mount.start: already started (use restart)")
        self.logdir = tempfile.mkdtemp(prefix="kvc-itest-log-")
        if self.own_mnt:
            self.mnt = os.path.realpath(tempfile.mkdtemp(prefix="kvc-itest-mnt-"))
        self._owned = True
        _live_mounts.add(self)
        try:
            r = self._launch(self.args)
            if r.returncode != 0:
                raise RuntimeError("%s failed (exit %d): %s" % (
                    " ".join([KVCACHEFS] + self.args + [self.mnt]), r.returncode, r.stderr))
        except BaseException:
            try:
                self.stop()
            except AssertionError as e:
                sys.stderr.write("cleanup after a failed start: %s\n" % e)
            raise
        return self

    def _launch(self, args):
        """Run the daemon with args on self.mnt. Returns the CompletedProcess (stderr as
        text); when it exited 0 the mount is up and self.pid is its daemon. RuntimeError when
        it hangs or says it started but no mount or daemon is there."""
        cmd = [KVCACHEFS] + list(args) + [self.mnt]
        self.run_args = list(args)
        self._files.update(self.files(args))
        try:
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               errors="replace", timeout=60, env=sanitizer_env(self.logdir))
        except subprocess.TimeoutExpired:
            self.started = True  # whatever came up is stop()'s to take down
            self.pid = find_daemon(self.mnt)
            raise RuntimeError("%s did not return within 60 s" % " ".join(cmd))
        if r.returncode != 0:
            return r
        self.started = True
        # The daemon returns only once the mount is ready: no waiting here.
        if not is_mounted(self.mnt):
            raise RuntimeError("kvcachefs exited 0 but %s is not in /proc/mounts yet "
                               "(it must return only when the mount is ready)" % self.mnt)
        self.pid = wait_until(lambda: find_daemon(self.mnt), timeout=5)
        if not self.pid:
            raise RuntimeError("no kvcachefs daemon process found for %s" % self.mnt)
        return r

    def _stop_daemon(self):
        """Unmount and wait for the daemon to exit (killing it when it will not). Returns the
        problems seen, as sentences."""
        problems = []
        if not self.started:
            # a daemon killed on purpose may have left its mount behind
            if self.mnt and is_mounted(self.mnt):
                lazy_unmount(self.mnt)
            return problems
        self.started = False
        if self.pid and not pid_alive(self.pid):
            problems.append("the daemon (pid %d) died during the test" % self.pid)
        if is_mounted(self.mnt):
            if not unmount(self.mnt):
                problems.append("could not unmount %s" % self.mnt)
        if not self.pid:
            self.pid = find_daemon(self.mnt)  # e.g. one that hung at start
        if self.pid:
            if not wait_until(lambda: process_gone(self.pid), timeout=20, interval=0.05):
                problems.append("the daemon (pid %d) did not exit after the unmount" % self.pid)
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                wait_until(lambda: process_gone(self.pid), timeout=10)
                if is_mounted(self.mnt):
                    lazy_unmount(self.mnt)
            if process_gone(self.pid):
                self.pid = None
        return problems

    def _sanitizer_problems(self):
        """Sanitizer reports written since the last look (removed once reported)."""
        reports = sanitizer_reports(self.logdir)
        for n in os.listdir(self.logdir) if reports else ():
            if n.startswith("san"):
                try:
                    os.unlink(os.path.join(self.logdir, n))
                except OSError:
                    pass
        return ["sanitizer report(s) from the daemon:\n" + "\n".join(reports)] if reports else []

    def shutdown(self):
        """Unmount cleanly and wait for the daemon to exit, keeping the mountpoint, the pool
        object and the SSD files for a restart. Raises AssertionError when the daemon had
        died, would not exit, or left a sanitizer report (the Mount stays restartable and
        stop() still cleans up)."""
        if not self._owned:
            raise RuntimeError("Mount.shutdown: not started")
        problems = self._stop_daemon() + self._sanitizer_problems()
        if problems:
            raise AssertionError("kvcachefs at %s: %s" % (self.mnt, "; ".join(problems)))

    def kill9(self):
        """SIGKILL the daemon (a crash), wait until it is gone and lazily unmount its dead
        mount. The pool object and the SSD files stay as the daemon left them."""
        if not self.started or not self.pid:
            raise RuntimeError("Mount.kill9: no daemon running")
        pid = self.pid
        if not pid_alive(pid):
            raise AssertionError("kvcachefs at %s: the daemon (pid %d) died before kill9"
                                 % (self.mnt, pid))
        os.kill(pid, signal.SIGKILL)
        self.started = False
        self.pid = None
        if not wait_until(lambda: process_gone(pid), timeout=20, interval=0.02):
            raise AssertionError("the daemon (pid %d) is still there 20 s after SIGKILL" % pid)
        if not lazy_unmount(self.mnt):
            raise AssertionError("%s is still mounted after umount -l" % self.mnt)

    def try_restart(self, *extra, args=None):
        """Shut the daemon down cleanly if it runs (see shutdown), then start a new one on the
        same mountpoint with args (default: the Mount's arguments) followed by extra. Returns
        the CompletedProcess (stderr as text): returncode 0 means the mount is up again."""
        if not self._owned:
            raise RuntimeError("Mount.try_restart: not started")
        if self.started:
            self.shutdown()
        return self._launch(list(self.args if args is None else args) + list(extra))

    def restart(self, *extra, args=None):
        """try_restart, raising RuntimeError when the daemon refuses to start. Returns self."""
        r = self.try_restart(*extra, args=args)
        if r.returncode != 0:
            raise RuntimeError("restarting kvcachefs %s on %s failed (exit %d): %s" % (
                " ".join(self.run_args), self.mnt, r.returncode, r.stderr))
        return self

    def stop(self):
        """Unmount, wait for the daemon to exit, remove the pool object and the SSD files
        (unless keep_pool) and the directory. Raises AssertionError (after cleaning up) when
        the daemon had died, would not exit, or left a sanitizer report. Does nothing the
        second time."""
        if not self._owned:
            return
        self._owned = False
        _live_mounts.discard(self)
        problems = self._stop_daemon()
        if not self.keep_pool and not (self.pid and not process_gone(self.pid)):
            for f in sorted(self._files):
                remove_regular_file(f)
        if self.own_mnt and self.mnt:
            try:
                os.rmdir(self.mnt)
            except FileNotFoundError:
                pass
            except OSError as e:
                problems.append("cannot remove mountpoint %s: %s" % (self.mnt, e))
        if self.logdir:
            problems += self._sanitizer_problems()
            shutil.rmtree(self.logdir, ignore_errors=True)
        if problems:
            raise AssertionError("kvcachefs at %s: %s" % (self.mnt, "; ".join(problems)))

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        try:
            self.stop()
        except AssertionError:
            if exc_type is None:
                raise
            # the test failed already: do not hide its exception, but say what happened
            sys.stderr.write("cleanup problem: %s\n" % sys.exc_info()[1])
        return False

    @classmethod
    def _start_cleaned_by(cls, add_cleanup, args, kw):
        """Start a mount and register its stop with add_cleanup once it has started."""
        m = cls(*args, **kw)
        try:
            m.start()
        finally:
            if m._owned:
                add_cleanup(m.stop)
        return m

    @classmethod
    def for_class(cls, testclass, *args, **kw):
        """Start a mount for a unittest.TestCase class; stopped by a class cleanup."""
        return cls._start_cleaned_by(testclass.addClassCleanup, args, kw)

    @classmethod
    def for_test(cls, testcase, *args, **kw):
        """Start a mount for one test; stopped by a test cleanup."""
        return cls._start_cleaned_by(testcase.addCleanup, args, kw)

    # ---- conveniences
    def pool_path(self, args=None):
        """The daemon's pool object: --pool-path, or the default derived from the mountpoint
        (fs/main.c), or None when that default is a hash (very long mountpoints). args:
        those of the latest daemon unless given."""
        paths = option_values(self.run_args if args is None else args, "--pool-path")
        if paths:
            return paths[-1]
        if not self.mnt:
            return None
        name = "/dev/shm/kvcachefs" + self.mnt.replace("/", ".")
        return name if len(self.mnt) <= 200 else None

    def ssd_paths(self, args=None):
        """The paths given with --ssd (those of the latest daemon unless args are given)."""
        return [split_ssd_arg(a)[0]
                for a in option_values(self.run_args if args is None else args, "--ssd")]

    def files(self, args=None):
        """The pool object and the SSD paths a daemon started with args uses."""
        pool = self.pool_path(args)
        return ([pool] if pool else []) + self.ssd_paths(args)

    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def status(self):
        return ctl_status_json(self.mnt)


def remove_regular_file(path):
    """Unlink path when it is a regular file (never a device a test pointed --ssd at)."""
    try:
        if stat.S_ISREG(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


def lazy_unmount(mnt):
    """umount -l (then fusermount3 -uz): for a mount whose daemon is dead. True when mnt is
    no longer mounted."""
    if not is_mounted(mnt):
        return True
    for cmd in (["umount", "-l", mnt], ["fusermount3", "-uz", mnt]):
        subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        if wait_until(lambda: not is_mounted(mnt), timeout=5):
            return True
    return False


def unmount(mnt, tries=10):
    """fusermount3 -u (retried), then umount -l. True when mnt is no longer mounted."""
    for _ in range(tries):
        if not is_mounted(mnt):
            return True
        subprocess.run(["fusermount3", "-u", mnt], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not is_mounted(mnt):
            return True
        time.sleep(0.2)
    subprocess.run(["umount", "-l", mnt], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return wait_until(lambda: not is_mounted(mnt), timeout=5)


@atexit.register
def _cleanup_leftovers():
    for m in list(_live_mounts):
        try:
            m.stop()
        except Exception as e:  # noqa: BLE001 - last resort at interpreter exit
            sys.stderr.write("cleanup at exit: %s\n" % e)


# --------------------------------------------------------------------------------------------
# Programs

def run_daemon(args, timeout=60, env=None):
    """Run kvcachefs with args; return (CompletedProcess, sanitizer reports)."""
    logdir = tempfile.mkdtemp(prefix="kvc-itest-log-")
    try:
        r = subprocess.run([KVCACHEFS] + list(args), stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=timeout,
                           env=sanitizer_env(logdir, env))
        return r, sanitizer_reports(logdir)
    finally:
        shutil.rmtree(logdir, ignore_errors=True)


def run_ctl(*args, timeout=30):
    """Run kvcachectl; return the CompletedProcess (text mode)."""
    return subprocess.run([KVCACHECTL] + list(args), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def ctl_status_json(mnt):
    r = run_ctl("status", "--json", mnt)
    if r.returncode != 0:
        raise AssertionError("kvcachectl status --json %s: exit %d: %s"
                             % (mnt, r.returncode, r.stderr))
    try:
        return json.loads(r.stdout)
    except ValueError as e:
        raise AssertionError("kvcachectl status --json printed no JSON (%s): %r"
                             % (e, r.stdout))


# --------------------------------------------------------------------------------------------
# File helpers

def write_all(fd, data, offset=None):
    """Write all of data (at offset with pwrite when given). Returns the byte count."""
    view = memoryview(data)
    done = 0
    while done < len(view):
        if offset is None:
            n = os.write(fd, view[done:])
        else:
            n = os.pwrite(fd, view[done:], offset + done)
        if n <= 0:
            raise OSError(errno.EIO, "write returned %d" % n)
        done += n
    return done


def read_all(fd, chunk=1 << 20):
    parts = []
    while True:
        b = os.read(fd, chunk)
        if not b:
            return b"".join(parts)
        parts.append(b)


def write_block(path, data, chunk=1 << 20, flags=0):
    """Create path, write data in chunks, close (which seals it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o644)
    try:
        for off in range(0, len(data), chunk):
            write_all(fd, data[off:off + chunk])
    except BaseException:
        try:
            os.close(fd)
        except OSError:
            pass
        raise
    os.close(fd)


def read_block(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_all(fd)
    finally:
        os.close(fd)


def exists(path):
    try:
        os.stat(path)
        return True
    except FileNotFoundError:
        return False


def gone(path):
    return not exists(path)


def start_join(threads, timeout=None):
    """Start every thread, then join each (waiting at most timeout seconds for each when
    given; a thread still running then is left running)."""
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)


def xattrs(path):
    """{name: bytes} of the user.kvcachefs.* attributes of path."""
    return {n: os.getxattr(path, n) for n in os.listxattr(path) if n.startswith(XATTR_PREFIX)}


def xattr(path, name):
    if "." not in name:
        name = XATTR_PREFIX + name
    return os.getxattr(path, name)


# renameat2 through libc
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
AT_FDCWD = -100
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def renameat2(old, new, flags=0):
    """renameat2(AT_FDCWD, old, AT_FDCWD, new, flags); raises OSError on failure."""
    fn = _libc.renameat2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    r = fn(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags)
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), old, None, new)


# --------------------------------------------------------------------------------------------
# Deterministic blocks: contents derived from the name alone, so that a writer process and a
# checker agree without sharing (or holding) the bytes.

def det_size(name, lo, hi):
    """A size in [lo, hi] derived from name."""
    h = hashlib.sha256(b"size:" + os.fsencode(name)).digest()
    return lo + int.from_bytes(h[:8], "little") % (hi - lo + 1)


def det_bytes(name, size):
    """size bytes derived from name (SHAKE-256 of it): different names give unrelated bytes,
    so any 32 bytes of a block are found nowhere else."""
    return hashlib.shake_256(os.fsencode(name)).digest(size) if size else b""


def writer_name(prefix, i):
    return "%s-%06d" % (prefix, i)


class BlockWriter:
    """A python child process that writes blocks writer_name(prefix, 0), (prefix, 1), ...
    into directory d: each created (O_EXCL), filled with det_bytes(name, det_size(name, lo,
    hi)), fsync'ed (unless fsync=False), closed, and only then its name printed on a line of
    its own: with fsync, a printed name is a sealed block. It stops after count blocks or at
    the first error (said on its stderr). Its stdout goes to a file, so it never blocks on a
    pipe the test does not read."""

    def __init__(self, d, prefix, count, lo, hi, fsync=True):
        self.out = tempfile.TemporaryFile()
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "writer", d, prefix, str(count),
             str(lo), str(hi), "1" if fsync else "0"],
            stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.err)
        self.returncode = None
        self.stderr = ""

    def finish(self, kill=False, timeout=120):
        """Wait for the writer (SIGKILL it first when kill); return the names it printed
        (complete lines only). returncode and stderr are set."""
        if kill and self.proc.poll() is None:
            self.proc.kill()
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait()
            raise AssertionError("the block writer did not finish within %d s" % timeout)
        finally:
            self.out.seek(0)
            text = self.out.read().decode(errors="replace")
            self.err.seek(0)
            self.stderr = self.err.read().decode(errors="replace")
            self.out.close()
            self.err.close()
        return text.split("\n")[:-1]

    def printed(self):
        """Bytes printed so far: 0 until the first block is done."""
        return os.fstat(self.out.fileno()).st_size if not self.out.closed else -1

    def wait_started(self, timeout=30):
        """Wait until the first block is done or the writer exited."""
        return wait_until(lambda: self.printed() != 0 or self.proc.poll() is not None,
                          timeout=timeout, interval=0.01)

    def kill(self):
        """SIGKILL and reap it, if it still runs (for cleanups)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _writer_main(argv):
    d, prefix, count, lo, hi, do_fsync = argv
    count, lo, hi, do_fsync = int(count), int(lo), int(hi), do_fsync == "1"
    out = sys.stdout
    for i in range(count):
        name = writer_name(prefix, i)
        data = det_bytes(name, det_size(name, lo, hi))
        try:
            fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                write_all(fd, data)
                if do_fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            sys.stderr.write("writer: %s: %s\n" % (name, e))
            return 3
        out.write(name + "\n")
        out.flush()
    return 0


# --------------------------------------------------------------------------------------------
# Directories for --ssd files

def odirect_ok(d):
    """True when files in directory d can be opened with O_DIRECT and written through it, and
    d is not on tmpfs (which takes O_DIRECT since Linux 6.6, but the daemon refuses an SSD
    tier in memory)."""
    r = subprocess.run(["stat", "-f", "-c", "%T", d], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True)
    if r.returncode == 0 and r.stdout.strip() in ("tmpfs", "ramfs"):
        return False
    path = os.path.join(d, ".kvc-odirect-probe-%d" % os.getpid())
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_DIRECT, 0o600)
    except OSError:
        return False
    try:
        buf = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT wants
        try:
            return os.pwrite(fd, buf, 0) == 4096
        finally:
            buf.close()
    except OSError:
        return False
    finally:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass


def disk_tempdir(testcase, prefix="kvc-itest-ssd-"):
    """A fresh directory for --ssd files on a filesystem that takes O_DIRECT: under
    $KVC_SSD_DIR, /var/tmp or the temp directory, whichever works first (not /dev/shm: the
    pool is there already). Removed by a test cleanup registered now, so it runs after the
    cleanups of mounts started later. SkipTest when there is no such place."""
    seen = []
    for base in (os.environ.get("KVC_SSD_DIR"), "/var/tmp", tempfile.gettempdir()):
        if not base or base in seen or not os.path.isdir(base):
            continue
        seen.append(base)
        if odirect_ok(base):
            d = tempfile.mkdtemp(prefix=prefix, dir=base)
            testcase.addCleanup(shutil.rmtree, d, ignore_errors=True)
            return d
    raise unittest.SkipTest("no directory accepting O_DIRECT among %s (set KVC_SSD_DIR)"
                            % seen)


# --------------------------------------------------------------------------------------------
# Assertions

# status counts that stay put once the evictor is done
QUIET_KEYS = ("used", "blocks", "dram_blocks", "ssd_blocks", "ssd_used", "demotions",
              "promotions", "evictions", "ssd_evictions")


def tier(path):
    """A block's user.kvcachefs.tier: dram, ssd or remote."""
    return xattr(path, "tier").decode()


def shm_leftovers(mnt):
    """Files in /dev/shm whose name mentions this mountpoint (the pool object)."""
    base = os.path.basename(os.path.realpath(mnt))
    try:
        return [n for n in os.listdir("/dev/shm") if base in n]
    except FileNotFoundError:
        return []


class TestCase(unittest.TestCase):
    """unittest.TestCase with errno assertions."""

    def assertSettled(self, m, cap, pred=None, timeout=10):
        """Wait until the evictor of mount m brought DRAM usage to at most 90% of cap (the
        tests' high watermark), pred of the status holds (when given), and the tiers are
        quiet (two looks 0.15 s apart see the same QUIET_KEYS); return the status."""
        last = [None]

        def ok():
            prev, last[0] = last[0], m.status()
            cur = last[0]
            if cur["used"] > 0.90 * cap or (pred is not None and not pred(cur)):
                return False
            return prev is not None and all(prev[k] == cur[k] for k in QUIET_KEYS)
        self.assertTrue(wait_until(ok, timeout=timeout, interval=0.15),
                        "the pool did not settle: %r" % last[0])
        return last[0]

    def assertErrno(self, expected, fn, *args, **kw):
        """fn(*args) must raise OSError with errno expected (an int or a tuple of ints).
        Returns the exception."""
        exp = expected if isinstance(expected, tuple) else (expected,)
        try:
            r = fn(*args, **kw)
        except OSError as e:
            if e.errno not in exp:
                self.fail("%s%r raised %s (%s), expected %s" % (
                    getattr(fn, "__name__", fn), args, errname(e.errno), e,
                    " or ".join(errname(x) for x in exp)))
            return e
        # an fd opened by mistake must not stay open (it would keep the mount busy)
        if isinstance(r, int) and getattr(fn, "__name__", "") == "open":
            try:
                os.close(r)
            except OSError:
                pass
        self.fail("%s%r succeeded (returned %r), expected %s" % (
            getattr(fn, "__name__", fn), args, r, " or ".join(errname(x) for x in exp)))

    def assertThreadsFinish(self, threads, timeout):
        """Start every thread, then join each: each must finish within timeout seconds of
        its join ("a worker thread hangs" otherwise)."""
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=timeout)
            self.assertFalse(t.is_alive(), "a worker thread hangs")

    def assertGone(self, path, timeout=2.0):
        """stat(path) must give ENOENT, within timeout (kernel entry caches)."""
        if not wait_until(lambda: gone(path), timeout=timeout):
            self.fail("%s still exists after %.1f s" % (path, timeout))
        self.assertErrno(errno.ENOENT, os.stat, path)


class DirTestCase(TestCase):
    """A TestCase whose tests share one mount, started once for the class with the daemon
    arguments MOUNT_ARGS, and each work in a fresh directory of it named after the test:
    self.d, with self.p(*parts) for paths under it."""

    MOUNT_ARGS = ("--pool-size", "64M")

    @classmethod
    def setUpClass(cls):
        cls.m = Mount.for_class(cls, *cls.MOUNT_ARGS)

    def setUp(self):
        self.d = self.m.path(self.id().rsplit(".", 1)[-1])
        os.mkdir(self.d)

    def p(self, *parts):
        return os.path.join(self.d, *parts)


def main():
    """unittest.main with a verbose runner; exits non-zero on failure."""
    unittest.main(verbosity=2)


# --------------------------------------------------------------------------------------------
# libkvcache from Python (ctypes) and the example programs.
#
# In the sanitizer build libkvcache.so is instrumented, and an uninstrumented python3 can only
# load it with the sanitizer runtimes preloaded (ASan insists on coming first). Python's own
# allocations look like leaks to LeakSanitizer, so leak detection is off for python only;
# the daemons and C programs the tests start keep the caller's sanitizer options.

SOURCE_DIR = os.environ.get("KVC_SOURCE_DIR") or os.path.normpath(os.path.join(HERE, "..", ".."))
LIB_DIR = os.environ.get("KVC_LIB_DIR") or os.path.normpath(
    os.path.join(HERE, "..", "..", "build", "lib"))
LIBKVCACHE = os.path.join(LIB_DIR, "libkvcache.so")
KVCACHE_EXAMPLE = os.path.join(BIN_DIR, "kvcache-example")
CONNECTOR = os.path.join(SOURCE_DIR, "examples", "connector.py")
SANITIZE = os.environ.get("KVC_SANITIZE", "0").upper() not in ("", "0", "OFF", "FALSE", "NO")

_PRELOAD_MARK = "KVC_ITEST_PRELOADED"
_SAVED_PREFIX = "KVC_ITEST_SAVED_"


def require_libkvcache():
    if not os.path.exists(LIBKVCACHE):
        raise RuntimeError("%s not found (set KVC_LIB_DIR)" % LIBKVCACHE)


def sanitizer_runtimes():
    """Paths of gcc's libasan.so and libubsan.so (the runtimes the sanitizer build links)."""
    out = []
    for lib in ("libasan.so", "libubsan.so"):
        r = subprocess.run(["gcc", "-print-file-name=" + lib], capture_output=True, text=True)
        p = r.stdout.strip()
        if r.returncode != 0 or not os.path.isabs(p) or not os.path.exists(p):
            raise RuntimeError("gcc -print-file-name=%s: no such runtime (%r)" % (lib, p))
        out.append(os.path.realpath(p))
    return out


def python_lib_env(base=None):
    """The environment for a python3 subprocess that loads libkvcache through ctypes: the
    sanitizer runtimes preloaded and detect_leaks=0 in the sanitizer build, else base (or
    os.environ) unchanged. KVC_LIB_DIR points at the library either way."""
    env = dict(os.environ if base is None else base)
    env["KVC_LIB_DIR"] = LIB_DIR
    if SANITIZE:
        pre = [p for p in env.get("LD_PRELOAD", "").split(":") if p]
        env["LD_PRELOAD"] = ":".join(sanitizer_runtimes() + pre)
        opts = [p for p in env.get("ASAN_OPTIONS", "").split(":")
                if p and not p.startswith("detect_leaks=")]
        env["ASAN_OPTIONS"] = ":".join(opts + ["detect_leaks=0"])
    return env


def reexec_for_libkvcache():
    """Call first thing in a test script that loads libkvcache in its own process. In the
    sanitizer build this re-executes python3 with python_lib_env() once, then puts the
    caller's LD_PRELOAD and ASAN_OPTIONS back into os.environ, so that the daemons and
    programs the test starts get them unchanged (the runtimes read their options at start,
    so this process keeps its own)."""
    if not SANITIZE:
        return
    if os.environ.get(_PRELOAD_MARK) == "1":
        for var in ("LD_PRELOAD", "ASAN_OPTIONS"):
            saved = os.environ.pop(_SAVED_PREFIX + var, None)
            if saved is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = saved
        del os.environ[_PRELOAD_MARK]
        return
    env = python_lib_env()
    for var in ("LD_PRELOAD", "ASAN_OPTIONS"):
        if var in os.environ:
            env[_SAVED_PREFIX + var] = os.environ[var]
    env[_PRELOAD_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


if __name__ == "__main__" and len(sys.argv) == 8 and sys.argv[1] == "writer":
    sys.exit(_writer_main(sys.argv[2:]))

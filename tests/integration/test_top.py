#!/usr/bin/env python3
"""kvcachectl top, the live view, run in a detached tmux session of 80x24 (tmux is the
terminal; the screen is read back with capture-pane): the DRAM bar, block counts that agree
with `kvcachectl status`, write throughput above zero while blocks are written, no line wider
and no more lines than the terminal (also after the window shrinks, SIGWINCH), the SSD bar
with --ssd, the members of a cluster (with a real etcd, as test_cluster.py starts it). It
must end with status 0 on q, on Ctrl-C and on SIGTERM, and with status 1 and a message when
the mount goes away, each time with the terminal given back as it was (stty settings, main
screen, cursor shown). Without a terminal (a pipe, or --once) it prints one plain frame.

Each run is `bash -c 'a=$(stty -g); kvcachectl top ...; echo EXIT=$?; compare stty; sleep'`
in the pane, so that the exit status and the terminal's state after it show on the screen.
bash, not dash: on Ctrl-C the whole foreground group gets SIGINT, and bash (unlike dash) goes
on with the script when its child handled the signal and exited normally."""

import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import kvc
from kvc import MiB, Mount, wait_until
import test_cluster as tc

TMUX = shutil.which("tmux")
BASH = shutil.which("bash")
ESC = "\x1b"


def setUpModule():
    kvc.require_environment()
    if not TMUX:
        raise unittest.SkipTest("tmux is not installed (Debian package tmux): top is tested "
                                "in a tmux pane")
    if not BASH:
        raise unittest.SkipTest("bash is not installed")


class Tmux:
    """A tmux server of its own (socket in a temporary directory) with one detached session
    of width x height running `kvcachectl top ARGS` under bash (see the module's comment).
    kill() (registered as a cleanup) ends the server and removes the directory; sanitizer
    reports of kvcachectl land in that directory and are reported by kill()."""

    def __init__(self, testcase, top_args, width=80, height=24):
        self.dir = tempfile.mkdtemp(prefix="kvc-itest-tmux-")
        self.sock = os.path.join(self.dir, "sock")
        self.width, self.height = width, height
        self.testcase = testcase
        script = ("a=$(stty -g); %s top %s; echo EXIT=$?; "
                  "if [ \"$a\" = \"$(stty -g)\" ]; then echo TTY=same; "
                  "else echo TTY=changed; fi; sleep 120"
                  % (shlex.quote(kvc.KVCACHECTL), " ".join(shlex.quote(a) for a in top_args)))
        testcase.addCleanup(self.kill)
        self.tmux("-f", "/dev/null", "new-session", "-d", "-s", "top", "-x", str(width),
                  "-y", str(height), "%s -c %s" % (BASH, shlex.quote(script)),
                  env=kvc.sanitizer_env(self.dir))

    def tmux(self, *args, env=None):
        r = subprocess.run([TMUX, "-S", self.sock] + list(args), stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, errors="replace", timeout=30,
                           env=env)
        if r.returncode != 0:
            raise AssertionError("tmux %s: exit %d: %s" % (" ".join(args), r.returncode,
                                                            r.stderr))
        return r.stdout

    def screen(self):
        """The pane's lines (wrapped lines joined, so one too wide shows as wider)."""
        text = self.tmux("capture-pane", "-p", "-J", "-t", "top")
        return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")

    def text(self):
        return "\n".join(self.screen())

    def display(self, fmt):
        return self.tmux("display-message", "-p", "-t", "top", fmt).strip()

    def send(self, *keys):
        self.tmux("send-keys", "-t", "top", *keys)

    def resize(self, width, height):
        self.tmux("resize-window", "-t", "top", "-x", str(width), "-y", str(height))
        self.width, self.height = width, height

    def top_pid(self):
        """The pid of kvcachectl, the child of the pane's bash."""
        bash = int(self.display("#{pane_pid}"))
        try:
            with open("/proc/%d/task/%d/children" % (bash, bash)) as f:
                kids = [int(p) for p in f.read().split()]
        except FileNotFoundError:
            return None
        for p in kids:
            try:
                with open("/proc/%d/comm" % p) as f:
                    if f.read().strip() == "kvcachectl":
                        return p
            except FileNotFoundError:
                pass
        return None

    def wait(self, pred, timeout=10, what="the screen", top=True):
        """Capture until pred(lines) holds; while top runs (top), every capture is checked
        against the terminal's size. Returns the lines."""
        last = [None]

        def ok():
            last[0] = self.screen()
            if top:
                self.check_size(last[0])
            return pred(last[0])
        if not wait_until(ok, timeout=timeout, interval=0.1):
            self.testcase.fail("%s not seen within %d s; the screen:\n%s"
                               % (what, timeout, "\n".join(last[0])))
        return last[0]

    def check_size(self, lines):
        t = self.testcase
        t.assertLessEqual(len(lines), self.height, "more lines than the terminal has:\n%s"
                          % "\n".join(lines))
        for ln in lines:
            t.assertLessEqual(len(ln), self.width, "a line wider than %d columns: %r"
                              % (self.width, ln))
            t.assertNotIn(ESC, ln)

    def wait_exit(self, status):
        """Wait until the pane says top exited with status and the terminal is as before."""
        self.wait(lambda ls: any(ln.startswith("EXIT=") for ln in ls)
                  and any(ln.startswith("TTY=") for ln in ls), what="EXIT= and TTY=",
                  top=False)
        text = self.text()
        self.testcase.assertIn("EXIT=%d" % status, text)
        self.testcase.assertIn("TTY=same", text, "stty settings differ after top")
        self.testcase.assertEqual(self.display("#{alternate_on}"), "0",
                                  "still on the alternate screen")
        self.testcase.assertEqual(self.display("#{cursor_flag}"), "1", "the cursor is hidden")
        return text

    def kill(self):
        if os.path.exists(self.sock):
            subprocess.run([TMUX, "-S", self.sock, "kill-server"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        reports = kvc.sanitizer_reports(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
        if reports:
            raise AssertionError("sanitizer report(s) from kvcachectl:\n" + "\n".join(reports))


def line_of(lines, prefix):
    for ln in lines:
        if ln.startswith(prefix):
            return ln
    return None


def number(lines, prefix, pattern):
    """The first group of pattern in the first line starting with prefix where it matches, as
    a float; None when there is none (e.g. "-" before the second sample)."""
    for ln in lines:
        m = re.search(pattern, ln) if ln.startswith(prefix) else None
        if m:
            return float(m.group(1))
    return None


def footer_row(lines):
    """The row of the key hint, or None."""
    for i, ln in enumerate(lines):
        if ln.startswith("q: quit"):
            return i
    return None


def redrawn(lines, height):
    """True when lines are a whole frame for a terminal of that height: the title on the first
    row, the key hint on the last (tmux keeps the bottom of a screen that shrinks, so the
    hint alone could be the old frame's)."""
    return bool(lines) and lines[0].startswith("kvcachefs top:") and \
        footer_row(lines) == height - 1


def write_rate(lines):
    return number(lines, "Throughput", r"write\s+([0-9.]+) MB/s")


class Writer:
    """A thread writing 1 MiB blocks w0000.. into d until stopped."""

    def __init__(self, d):
        self.d, self.n, self.stop_ev = d, 0, threading.Event()
        self.error = None
        self.t = threading.Thread(target=self.run)
        self.t.start()

    def run(self):
        try:
            while not self.stop_ev.is_set() and self.n < 400:
                kvc.write_block(os.path.join(self.d, "w%04d" % self.n), os.urandom(MiB))
                self.n += 1
                time.sleep(0.02)
        except OSError as e:
            self.error = e

    def stop(self):
        self.stop_ev.set()
        self.t.join(timeout=60)
        if self.error:
            raise AssertionError("writer: %s" % self.error)


class TopCase(kvc.TestCase):
    def start(self, *args, width=80, height=24, mnt=None):
        tm = Tmux(self, list(args) + [mnt or self.m.mnt], width, height)
        tm.wait(lambda ls: line_of(ls, "DRAM [") is not None, what="the DRAM bar")
        return tm

    def assertCountsMatch(self, tm, ssd=False):
        """The screen's block counts equal those of `kvcachectl status` (both are taken until
        a capture falls between two equal statuses)."""
        seen = {}

        def ok():
            st = self.m.status()
            lines = tm.screen()
            tm.check_size(lines)
            after = self.m.status()
            seen.update(st=st, lines=lines)
            keys = ("blocks", "writing", "dram_blocks", "ssd_blocks")
            if any(st[k] != after[k] for k in keys):
                return False
            got = (number(lines, "Blocks", r"^Blocks\s+(\d+) sealed"),
                   number(lines, "Blocks", r"(\d+) being written"),
                   number(lines, "     ", r"^\s+(\d+) blocks? in DRAM"))
            want = (st["blocks"], st["writing"], st["dram_blocks"])
            if ssd:
                got += (number(lines, "     ", r"^\s+(\d+) blocks? with a copy on SSD"),)
                want += (st["ssd_blocks"],)
            return got == want
        self.assertTrue(wait_until(ok, timeout=10, interval=0.2),
                        "the screen's block counts differ from status %r:\n%s"
                        % (seen.get("st"), "\n".join(seen.get("lines") or [])))


class Screen(TopCase):
    def setUp(self):
        self.m = Mount.for_test(self, "--pool-size", "64M")

    def test_screen_while_writing_then_q(self):
        kvc.write_block(self.m.path("first"), b"x" * 100000)
        tm = self.start()
        lines = tm.screen()
        self.assertRegex(line_of(lines, "kvcachefs top: "), r"single node\s+\d\d:\d\d:\d\d$")
        self.assertRegex(line_of(lines, "DRAM ["), r"^DRAM \[[#.]+\]\s+\S+ \S+ / \S+ \S+\s+"
                         r"[0-9.]+%$")
        self.assertEqual(footer_row(lines), tm.height - 1, lines)
        for label in ("Blocks", "Throughput", "Requests/s", "Hit rate", "Per second",
                      "Side channel"):
            self.assertIsNotNone(line_of(lines, label), "no %s line:\n%s"
                                 % (label, "\n".join(lines)))
        self.assertIsNone(line_of(lines, "SSD"), "an SSD bar without --ssd")

        w = Writer(self.m.mnt)
        try:
            lines = tm.wait(lambda ls: (write_rate(ls) or 0) > 0, what="write MB/s above 0")
            self.assertGreater(number(lines, "Requests/s", r"write\s+([0-9.]+)"), 0)
            self.assertRegex(line_of(lines, "q: quit"), r"every 1s, rates over the last "
                             r"[0-9.]+s$")
        finally:
            w.stop()
        self.assertGreater(w.n, 0)
        used = number(tm.screen(), "DRAM [", r"\]\s+([0-9.]+) ")
        self.assertGreater(used, 0)
        self.assertCountsMatch(tm)
        # once idle the rates fall back to zero
        tm.wait(lambda ls: write_rate(ls) == 0, what="write MB/s back to 0")
        # reads, hits and misses over the interval
        for _ in range(3):
            kvc.read_block(self.m.path("first"))
        hits = self.m.status()["hits"]
        tm.wait(lambda ls: re.search(r"^Hit rate\s+100\.0%% \([123] of [123]\); since start "
                                     r"%d hits" % hits, line_of(ls, "Hit rate") or ""),
                what="a 100%% hit rate of the opens, %d hits since the start" % hits)
        tm.send("x")  # other keys are ignored
        time.sleep(0.3)
        self.assertIsNotNone(tm.top_pid(), "top exited on a key other than q")
        tm.send("q")
        tm.wait_exit(0)

    def test_ctrl_c(self):
        tm = self.start()
        tm.send("C-c")
        tm.wait_exit(0)

    def test_sigterm(self):
        tm = self.start()
        pid = tm.top_pid()
        self.assertIsNotNone(pid, "no kvcachectl under the pane's bash")
        os.kill(pid, signal.SIGTERM)
        tm.wait_exit(0)

    def test_resize(self):
        tm = self.start("--interval", "0.3")
        # Until top redraws, the screen is tmux's own reflow of the old frame: the size is
        # checked from the redraw on, then again over a few refreshes.
        tm.resize(60, 16)
        lines = tm.wait(lambda ls: redrawn(ls, 16), what="a redraw for 60x16", top=False)
        self.assertIsNotNone(line_of(lines, "DRAM ["))
        self.assertIsNotNone(line_of(lines, "Side channel"))
        for _ in range(10):
            tm.check_size(tm.screen())
            time.sleep(0.1)
        tm.resize(40, 8)  # too small for everything: cut, never wrapped
        lines = tm.wait(lambda ls: redrawn(ls, 8), what="a redraw for 40x8", top=False)
        self.assertRegex(line_of(lines, "DRAM") or "", r"^DRAM\s+\S+ \S+ / ")  # no room for a bar
        for _ in range(10):
            tm.check_size(tm.screen())
            time.sleep(0.1)
        tm.resize(80, 24)
        tm.wait(lambda ls: redrawn(ls, 24) and line_of(ls, "Side channel"),
                what="the 80x24 frame", top=False)
        tm.check_size(tm.screen())
        tm.send("q")
        tm.wait_exit(0)

    def test_mount_goes_away(self):
        tm = self.start("--interval", "0.2")
        self.m.shutdown()  # fusermount -u: top must not keep the mount busy
        text = tm.wait_exit(1)
        self.assertIn("kvcachectl: top: the mount went away: %s" % self.m.mnt, text)

    def test_once_and_pipe(self):
        kvc.write_block(self.m.path("a"), b"a" * 5000)
        for args in (["--once", "--interval", "0.2"], ["--interval=0.1"], []):
            r = kvc.run_ctl("top", *(args + [self.m.mnt]))
            self.assertEqual(r.returncode, 0, r.stderr)
            lines = r.stdout.split("\n")[:-1]
            self.assertLessEqual(len(lines), 24, r.stdout)
            for ln in lines:
                self.assertLessEqual(len(ln), 80, ln)
                self.assertTrue(all(" " <= c <= "~" for c in ln), repr(ln))
            self.assertIsNotNone(line_of(lines, "DRAM ["), r.stdout)
            self.assertRegex(line_of(lines, "Blocks"), r"^Blocks\s+1 sealed")
            # one interval passed: rates are numbers, not "-"
            self.assertIsNotNone(write_rate(lines), r.stdout)
            self.assertIsNone(line_of(lines, "q: quit"), "a key hint without a terminal")

    def test_usage(self):
        r = kvc.run_ctl("--help")
        self.assertIn("top [--interval SECONDS] [--once] MOUNTPOINT", r.stdout)
        r = kvc.run_ctl("top", "--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("top [--interval SECONDS]", r.stdout)
        for args, msg in ((["top"], "missing MOUNTPOINT"),
                          (["top", "--interval", "0", self.m.mnt], "bad --interval"),
                          (["top", "--interval", "abc", self.m.mnt], "bad --interval"),
                          (["top", "--interval=nan", self.m.mnt], "bad --interval"),
                          (["top", "--interval", "3601", self.m.mnt], "bad --interval"),
                          (["top", "--interval"], "needs a value"),
                          (["top", "--bogus", self.m.mnt], "unknown option"),
                          (["top", self.m.mnt, "extra"], "unexpected argument")):
            r = kvc.run_ctl(*args)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertIn(msg, r.stderr, args)
        d = tempfile.mkdtemp(prefix="kvc-itest-notmnt-")
        try:
            r = kvc.run_ctl("top", "--once", d)
            self.assertEqual(r.returncode, 1)
            self.assertIn("not a kvcachefs mount", r.stderr)
        finally:
            os.rmdir(d)


class Ssd(TopCase):
    def test_ssd_bar(self):
        d = kvc.disk_tempdir(self)
        self.m = Mount.for_test(self, "--pool-size", "16M", "--evict-high", "90",
                                "--evict-low", "50", "--ssd",
                                "%s:64M" % os.path.join(d, "ssd.img"))
        tm = self.start("--interval", "0.5")
        lines = tm.screen()
        self.assertRegex(line_of(lines, "SSD  ["), r"^SSD  \[[#.]+\]\s+\S+ \S+ / \S+ \S+\s+"
                         r"[0-9.]+%$")
        self.assertRegex(line_of(lines, "     0 blocks with a copy on SSD"), r"1 device;")
        # more than DRAM holds: the oldest are demoted
        for i in range(32):
            kvc.write_block(self.m.path("b%02d" % i), kvc.det_bytes("b%02d" % i, MiB))
        wait_until(lambda: self.m.status()["demotions"] > 0, timeout=10)
        lines = tm.wait(lambda ls: (number(ls, "SSD  [", r"\]\s+([0-9.]+) ") or 0) > 0,
                        what="SSD use above 0")
        self.assertCountsMatch(tm, ssd=True)
        tm.send("q")
        tm.wait_exit(0)


@unittest.skipUnless(tc.ETCD, "etcd is not installed (Debian package etcd-server)")
class Cluster(tc.ClusterBase, TopCase):
    def test_members(self):
        a = self.join()
        b = self.join()
        self.wait_total(a, 2, timeout=5)
        self.m = a
        ids = {n["node_id"]: n for n in tc.nodes(a.mnt)["nodes"]}
        tm = self.start("--interval", "0.3")
        lines = tm.wait(lambda ls: sum(1 for ln in ls if ln[:16] in ids) == 2,
                        what="both members")
        self.assertRegex(line_of(lines, "kvcachefs top: "),
                         r"cluster %s, 2 members\s+\d\d:\d\d:\d\d$" % re.escape(self.cluster))
        self.assertRegex(line_of(lines, "Members"), r"^Members\s+2: ")
        self.assertIsNotNone(line_of(lines, "NODE"))
        for ln in lines:
            if ln[:16] in ids:
                n = ids[ln[:16]]
                self.assertEqual(ln[16], "*" if n["self"] else " ", ln)
                self.assertIn(n["addr"], ln)
                self.assertTrue(ln.rstrip().endswith(" up"), ln)
        # a small terminal lists as many as fit and says how many more there are
        tm.resize(80, 16)
        tm.wait(lambda ls: redrawn(ls, 16) and any(re.match(r"^\.\.\. and [12] more", ln)
                                                   for ln in ls),
                what="'... and N more' at 80x16", top=False)
        tm.check_size(tm.screen())
        tm.resize(80, 24)
        tm.wait(lambda ls: redrawn(ls, 24) and sum(1 for ln in ls if ln[:16] in ids) == 2,
                what="both again", top=False)
        tm.check_size(tm.screen())
        tm.send("q")
        tm.wait_exit(0)
        del b


if __name__ == "__main__":
    kvc.main()

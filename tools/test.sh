#!/usr/bin/env bash
# Set up, build and run every test: the regular build, then the same suite under
# AddressSanitizer + UndefinedBehaviorSanitizer. Exits non-zero if any test fails.
#
#   tools/test.sh            (as root: the integration tests mount FUSE filesystems)
set -euo pipefail

cd "$(dirname "$0")/.."
tools/setup.sh --sanitize

jobs=$(nproc 2>/dev/null || echo 2)
status=0

echo "== tests: regular build =="
ctest --test-dir build --output-on-failure -j"$jobs" || status=1

echo "== tests: AddressSanitizer + UndefinedBehaviorSanitizer build =="
# Daemons run detached with stderr on /dev/null: sanitizer reports go to files, and any
# report fails the run.
logs=$(mktemp -d /tmp/kvcachefs-sanitizers.XXXXXX)
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:log_path=$logs/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan"
ctest --test-dir build-asan --output-on-failure -j"$jobs" || status=1
if compgen -G "$logs/*" >/dev/null; then
	echo "== sanitizer reports =="
	cat "$logs"/*
	status=1
fi
rm -rf "$logs"

exit $status

#!/usr/bin/env bash
# Set up a Debian 12 machine for kvcachefs and build it: installs every Debian package the
# project needs (only those missing), then configures and builds into build/ (and, with
# --sanitize, an AddressSanitizer + UndefinedBehaviorSanitizer build into build-asan/).
# Idempotent: run it as often as you like. Needs root for apt-get.
#
#   tools/setup.sh [--no-build] [--sanitize]
set -euo pipefail

cd "$(dirname "$0")/.."

build=1
sanitize=0
for arg in "$@"; do
	case "$arg" in
	--no-build) build=0 ;;
	--sanitize) sanitize=1 ;;
	-h | --help)
		sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "setup.sh: unknown option '$arg'" >&2
		exit 2
		;;
	esac
done

packages=(
	build-essential cmake pkg-config git
	fuse3 libfuse3-dev
	libxxhash-dev liburing-dev libcurl4-openssl-dev libcjson-dev
	libibverbs-dev librdmacm-dev libsodium-dev
	iperf3 fio
	etcd-server
	redis-server
	attr python3 xxhash iproute2
	clang libclang-rt-14-dev
	libmicrohttpd-dev gnuplot-nox tmux curl
)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
if ((${#missing[@]})); then
	if [ "$(id -u)" != 0 ]; then
		echo "setup.sh: missing packages (${missing[*]}); run as root to install them" >&2
		exit 1
	fi
	echo "setup.sh: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# etcd-server's package would start a system etcd; the tests start their own.
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	# So would redis-server's (on port 6379, enabled at boot): kvcache-bench cluster starts
	# its own on a free port, so a service installed just now is stopped and disabled.
	if [[ " ${missing[*]} " == *" redis-server "* ]] && [ -d /run/systemd/system ]; then
		systemctl disable --now redis-server >/dev/null 2>&1 || true
	fi
fi
if ! [ -e /dev/fuse ]; then
	echo "setup.sh: warning: /dev/fuse is missing; mounting needs the fuse kernel module" >&2
fi

jobs=$(nproc 2>/dev/null || echo 2)
if ((build)); then
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build build -j"$jobs"
fi
if ((sanitize)); then
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DKVC_SANITIZE=ON >/dev/null
	cmake --build build-asan -j"$jobs"
fi

#!/usr/bin/env bash
# `make image-check`: build deploy/Dockerfile and run the image, with no registry and no
# container engine. The base is Debian bookworm made here by debootstrap from the archive apt
# uses, slimmed as debian:bookworm-slim is, and cached; buildah builds on it with chroot
# isolation; the image then runs by chroot as its default user (65532), root read-only,
# /var/lib/xidwatch and /tmp writable, as the DaemonSet mounts them.
# Needs root and apt-get (it installs debootstrap and buildah); elsewhere it says why and
# exits 0, unless IMAGE_CHECK_REQUIRED=1 (CI), where that is a failure.
set -euo pipefail

RELEASE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${IMAGE_CHECK_CACHE:-/var/cache/xidwatch-image-base}
BASE=localhost/xidwatch-base:$RELEASE
IMAGE=localhost/xidwatch:image-check
CTR=xidwatch-image-check # the working container the checks mount
LAYERS=--layers=false # build_image: --layers where the base was cached
REPO=$(cd "$(dirname "$0")/.." && pwd)

IMAGE_CHECK_START=${IMAGE_CHECK_START:-$(date +%s)}
export IMAGE_CHECK_START
say() { echo "image-check: [$(($(date +%s) - IMAGE_CHECK_START))s] $*"; }
fail() {
	say "FAILED: $*" >&2
	exit 1
}
skip() {
	[ "${IMAGE_CHECK_REQUIRED:-}" = 1 ] && fail "$* (IMAGE_CHECK_REQUIRED=1)"
	say "skipped: $*"
	exit 0
}

install_tools() {
	local missing=()
	command -v debootstrap >/dev/null || missing+=(debootstrap)
	command -v buildah >/dev/null || missing+=(buildah)
	[ ${#missing[@]} = 0 ] && return
	say "installing Debian's ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" >/dev/null
}

# What debuerreotype does to make debian:*-slim: no docs, man pages or locales, apt cleans
# up after itself, and the image's apt sources.
slim_rootfs() {
	local root=$1
	cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<-'EOF'
		path-exclude /usr/share/doc/*
		path-include /usr/share/doc/*/copyright
		path-exclude /usr/share/info/*
		path-exclude /usr/share/locale/*
		path-exclude /usr/share/man/*
		path-exclude /usr/share/lintian/*
	EOF
	cat >"$root/etc/apt/apt.conf.d/docker-clean" <<-'EOF'
		DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
		APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
		Dir::Cache::pkgcache "";
		Dir::Cache::srcpkgcache "";
		Acquire::Languages "none";
	EOF
	rm -f "$root/etc/apt/sources.list"
	cat >"$root/etc/apt/sources.list.d/debian.sources" <<-EOF
		Types: deb
		URIs: $MIRROR
		Suites: $RELEASE $RELEASE-updates
		Components: main
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

		Types: deb
		URIs: http://deb.debian.org/debian-security
		Suites: $RELEASE-security
		Components: main
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
	EOF
	find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
	find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
	rm -rf "$root"/usr/share/{info,locale,man,lintian}/* "$root"/var/cache/apt/* \
		"$root"/var/lib/apt/lists/* "$root"/var/log/*.log "$root"/etc/resolv.conf
	: >"$root/etc/machine-id"
}

# The base image: from buildah's store, else from the cached root file system, else made.
make_base() {
	if buildah inspect --type image "$BASE" >/dev/null 2>&1; then
		LAYERS=--layers
		return
	fi
	local tarball=$CACHE/$RELEASE-minbase.tar
	if [ ! -s "$tarball" ]; then
		say "debootstrap $RELEASE (minbase) from $MIRROR into $tarball"
		local root
		root=$(mktemp -d)
		debootstrap --variant=minbase "$RELEASE" "$root" "$MIRROR" >"$root.log" 2>&1 ||
			fail "debootstrap: see $root.log"
		slim_rootfs "$root"
		mkdir -p "$CACHE"
		tar -C "$root" --numeric-owner -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
		rm -rf "$root" "$root.log"
	fi
	say "importing $tarball as $BASE"
	local ctr
	ctr=$(buildah from scratch)
	tar -C "$(buildah mount "$ctr")" --numeric-owner -xpf "$tarball"
	buildah umount "$ctr" >/dev/null
	buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		--cmd bash "$ctr"
	buildah commit --quiet --rm "$ctr" "$BASE" >/dev/null
}

# pip in the build trusts the certificates this machine trusts (a proxy that inspects TLS
# signs PyPI's with its own CA): the Dockerfile's pip-cert build secret. Layers are cached
# where the base was (a machine that ran this before): on a fresh one, storing them makes
# the build take half as long again.
build_image() {
	say "building deploy/Dockerfile on $BASE ($LAYERS)"
	buildah bud --quiet --isolation chroot "$LAYERS" --network host \
		--secret id=pip-cert,src="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" \
		--build-arg BASE_IMAGE="$BASE" --ignorefile "$REPO/deploy/Dockerfile.dockerignore" \
		-f "$REPO/deploy/Dockerfile" -t "$IMAGE" "$REPO" >/dev/null
}

config() { buildah inspect --type image --format "$1" "$IMAGE"; }

# Sizes as `podman images` shows them (uncompressed), as a node pulls them (gzip layers, from
# a push to an OCI layout), and of the venv alone.
report_sizes() {
	local rootfs=$1 oci
	oci=$(mktemp -d)
	buildah push --quiet "$IMAGE" "oci:$oci" >/dev/null
	say "image $(buildah images --format '{{.Size}}' "$IMAGE") uncompressed" \
		"(base $(buildah images --format '{{.Size}}' "$BASE")), $(mb "$oci/blobs") compressed;" \
		"installed /opt/xidwatch $(mb "$rootfs/opt/xidwatch")"
	rm -rf "$oci"
}

mb() { echo "$(du -s --apparent-size -B 1000000 "$1" | cut -f1) MB"; }

# Below runs in a mount namespace of its own (unshare -m), so every mount goes with it.
run_checks() {
	local image_root=$1 root=$2
	mount --bind "$image_root" "$root"
	mount -o remount,bind,ro "$root"
	mount --rbind /proc "$root/proc"
	mount --rbind /dev "$root/dev"
	local user=${IMAGE_USER%%:*} group=${IMAGE_USER##*:}
	mount -t tmpfs -o "mode=0755,uid=$user,gid=$group" data "$root/var/lib/xidwatch"
	mount -t tmpfs -o mode=1777,size=64m tmp "$root/tmp"
	touch "$root/image-check-write-test" 2>/dev/null && fail "the root file system is writable"

	local env=() entry=() workdir
	workdir=$(config '{{.OCIv1.Config.WorkingDir}}')
	mapfile -t env < <(config '{{range .OCIv1.Config.Env}}{{println .}}{{end}}')
	mapfile -t entry < <(config '{{range .OCIv1.Config.Entrypoint}}{{println .}}{{end}}')
	# HOME as container runtimes set it: the user's in /etc/passwd, else /.
	local home
	home=$(awk -F: -v uid="$user" '$3 == uid { print $6 }' "$root/etc/passwd")
	env+=("HOME=${home:-/}")
	in_image() { # always in a subshell ($(), a pipe or &): exec leaves no shell between
		exec chroot --userspec="$IMAGE_USER" --groups="$group" "$root" \
			/usr/bin/env -i -C "$workdir" "${env[@]}" \
			"${entry[@]}" "$@"
	}

	local version
	version=$(in_image --version) || fail "xidwatch --version"
	say "$version"
	# The catalog's mnemonic: the wheel carries its data files.
	in_image explain 79 | grep -q FALLEN_OFF_THE_BUS || fail "xidwatch explain 79"
	say "explain 79: ok"

	local log=$root/tmp/run.log pid port=
	in_image run --simulate 2 --listen 127.0.0.1:0 >"$log" 2>&1 &
	pid=$!
	trap 'kill -KILL "$pid" 2>/dev/null' EXIT # a failed check leaves no daemon behind
	for _ in $(seq 600); do
		port=$(python3 -c "$LISTENING_PORT" "$log")
		[ -n "$port" ] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	[ -n "$port" ] || fail "run did not log http_listening: $(tail -20 "$log")"
	local path
	for path in /healthz /readyz /metrics; do
		wait_for_200 "http://127.0.0.1:$port$path" || fail "GET $path: $(tail -20 "$log")"
		say "GET $path: 200"
	done
	kill -TERM "$pid"
	local rc=0
	wait "$pid" || rc=$?
	trap - EXIT
	[ "$rc" = 0 ] || fail "run exited $rc on SIGTERM: $(tail -20 "$log")"
	say "run --simulate 2: SIGTERM, exit 0"
}

# The port in the JSON log line http_listening, if there is one yet.
LISTENING_PORT='import json, sys
for line in open(sys.argv[1]):
    try: entry = json.loads(line)
    except ValueError: continue
    if isinstance(entry, dict) and entry.get("event") == "http_listening": print(entry["port"])'

wait_for_200() {
	local code
	for _ in $(seq 300); do
		code=$(python3 -c 'import sys, urllib.request as u
try: print(u.urlopen(sys.argv[1], timeout=5).status)
except Exception as e: print(getattr(e, "code", 0))' "$1")
		[ "$code" = 200 ] && return 0
		sleep 0.1
	done
	return 1
}

main() {
	[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, buildah, chroot and mounts)"
	command -v apt-get >/dev/null || skip "needs apt-get (Debian or Ubuntu) for debootstrap and buildah"
	install_tools
	make_base
	build_image
	buildah rm "$CTR" >/dev/null 2>&1 || true # left by a run that was killed
	buildah from --quiet --pull-never --name "$CTR" "$IMAGE" >/dev/null
	CHROOT=$(mktemp -d)
	trap 'buildah rm "$CTR" >/dev/null; rmdir "$CHROOT"' EXIT
	local rootfs
	rootfs=$(buildah mount "$CTR")
	report_sizes "$rootfs"
	IMAGE_USER=$(config '{{.OCIv1.Config.User}}')
	[ "${IMAGE_USER%%:*}" = 65532 ] || fail "the image's user is '$IMAGE_USER', not 65532"
	export IMAGE IMAGE_USER
	unshare -m --propagation private bash "$0" --run-checks "$rootfs" "$CHROOT"
	say "ok"
}

if [ "${1:-}" = --run-checks ]; then
	run_checks "$2" "$3"
else
	main
fi

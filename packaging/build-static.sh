#!/usr/bin/env bash
# Build the release x86_64 flow-store binary (OpenSSL linked in) and its .deb.
#
#   packaging/build-static.sh            # binary + .deb; prints the .deb path last
#   packaging/build-static.sh --no-deb   # binary only
#
# OpenSSL is built from source and linked in statically (feature
# `vendored-openssl`); glibc stays dynamic, so the package needs only
# libc6 (>= 2.34) and libgcc-s1 besides adduser, systemd and procps.
#
# Why not a fully static binary (+crt-static): glibc linked statically
# corrupted its heap under load ("malloc(): unaligned tcache chunk
# detected", "double free or corruption") with 64 clients saving 1 MiB
# states concurrently (fault-tests --only memory), as a static PIE and as a
# plain static executable alike; the same code linked dynamically ran clean.
# A store must not crash under load, so the package links glibc dynamically.
#
# Building with
# an explicit --target puts it in target/x86_64-unknown-linux-gnu/release/,
# and RUSTFLAGS then apply only to that target (not build scripts or proc
# macros), so the ordinary target/debug and target/release caches are left
# alone.
#
# Needs: cargo, a C compiler, perl and make (OpenSSL's build), and cargo-deb
# (installed from crates.io if missing). The package version comes from
# Cargo.toml (Debian revision 1).
set -Eeuo pipefail

TARGET=x86_64-unknown-linux-gnu
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build-static: error: %s\n' "$*" >&2; exit 1; }

build_deb=1
for arg in "$@"; do
    case "$arg" in
        --no-deb) build_deb=0 ;;
        -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $arg" ;;
    esac
done

[ "$(uname -m)" = x86_64 ] || die "this script builds on x86_64 hosts only"
for tool in cargo cc perl make file readelf; do
    command -v "$tool" >/dev/null || die "'$tool' is missing (apt-get install build-essential perl file binutils)"
done

target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target_dir" ] || die "cannot find cargo's target directory"
bin="$target_dir/$TARGET/release/flow-store"

say "building the $TARGET release binary (vendored OpenSSL; the first build compiles OpenSSL, a few minutes)"
# Keep any RUSTFLAGS the caller set (e.g. -D warnings in CI). cargo-deb
# strips the packaged copy.
cargo build --release --target "$TARGET" --features vendored-openssl --bin flow-store

[ -x "$bin" ] || die "cargo did not produce $bin"
say "file: $(file -b "$bin")"
# Only glibc's own libraries may be needed: no libssl or libcrypto.
needed=$(readelf -d "$bin" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')
for lib in $needed; do
    case "$lib" in
        libc.so.6|libm.so.6|libgcc_s.so.1|ld-linux-x86-64.so.2) ;;
        *) die "$bin needs $lib; only glibc's libraries are allowed (is OpenSSL vendored?)" ;;
    esac
done
say "shared libraries: $needed(OpenSSL linked in)"

if [ "$build_deb" = 0 ]; then
    echo "$bin"
    exit 0
fi

if ! command -v cargo-deb >/dev/null; then
    say "installing cargo-deb from crates.io"
    cargo install cargo-deb --locked
fi

version=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"name":"flow-store","version":"\([^"]*\)".*/\1/p')
changelog_version=$(sed -n '1s/^flow-store (\([^)]*\)).*/\1/p' packaging/debian/changelog)
if [ "$changelog_version" != "$version-1" ]; then
    say "warning: packaging/debian/changelog starts at $changelog_version, the package is $version-1; add an entry"
fi

say "building the .deb"
# --no-build: package exactly the binary checked above. --target makes
# cargo-deb read target/$TARGET/release/ for the target/release/ assets.
deb_out=$(cargo deb --no-build --target "$TARGET" --output "$target_dir/debian/" 2>&1) ||
    { printf '%s\n' "$deb_out" >&2; die "cargo deb failed"; }
printf '%s\n' "$deb_out" >&2
deb=$(printf '%s\n' "$deb_out" | grep '\.deb$' | tail -n 1)
[ -f "$deb" ] || die "cargo deb did not report a .deb path"

# cargo-deb writes no DEBIAN/md5sums; add it (conffiles excluded, as
# dh_md5sums does) so `dpkg --verify flow-store` can check installed files.
say "adding md5sums"
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
dpkg-deb -R "$deb" "$unpacked/pkg"
(
    cd "$unpacked/pkg"
    find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort |
        grep -vxF -f <(sed 's|^/||' DEBIAN/conffiles 2>/dev/null) |
        tr '\n' '\0' | xargs -0 md5sum >DEBIAN/md5sums
)
chmod 0644 "$unpacked/pkg/DEBIAN/md5sums"
touch -r "$unpacked/pkg/etc" "$unpacked/pkg"
dpkg-deb --root-owner-group -Zxz -b "$unpacked/pkg" "$deb" >/dev/null

if command -v lintian >/dev/null; then
    say "lintian"
    lintian --info "$deb" >&2 || say "warning: lintian reported problems (above)"
fi

say "done: $deb"
echo "$deb"

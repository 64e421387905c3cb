#!/usr/bin/env bash
# Build the static x86_64 flow-store binary and its .deb.
#
#   packaging/build-static.sh            # binary + .deb; prints the .deb path last
#   packaging/build-static.sh --no-deb   # binary only
#
# The binary is linked statically against glibc (+crt-static) and against
# OpenSSL built from source, so the package has no shared-library
# dependencies (only adduser, systemd, init-system-helpers, procps). `file`
# calls it "static-pie linked": no interpreter, no shared libraries, and it is
# still loaded at a random address (ASLR).
#
# OpenSSL is built in a step of its own, without crt-static. With crt-static
# on, the cc crate hands `-static` to OpenSSL's Configure, and Configure then
# silently disables threads (`disable('static', 'pic', 'threads')`): every
# lock inside libcrypto becomes a no-op. Under concurrent requests that
# corrupted the heap ("malloc(): unaligned tcache chunk detected") and made
# valid signatures fail to verify. So step 1 builds OpenSSL (feature
# vendored-openssl, i.e. openssl-src, threads on) under
# $target_dir/openssl-threads and checks OPENSSL_THREADS is defined; step 2
# links the static binary against it (OPENSSL_DIR, OPENSSL_STATIC).
# tests/package_e2e.rs puts the result under concurrent load
# (`fault-tests --quick --only memory,writers --binary BIN`), the load that
# caught the thread-less build.
#
# Both steps use an explicit --target, so their output goes to
# target/x86_64-unknown-linux-gnu/release/ and RUSTFLAGS apply only to that
# target (not build scripts or proc macros); the ordinary target/debug and
# target/release caches are left alone.
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
        -h|--help) sed -n '2,/^set -E/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
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

openssl_target_dir="$target_dir/openssl-threads"
say "step 1: OpenSSL from source with threads (first time: a few minutes; cached in $openssl_target_dir)"
# `cargo check` runs openssl-sys's build script (which builds OpenSSL with
# openssl-src) but only type-checks the Rust code: no second full compile.
CARGO_TARGET_DIR="$openssl_target_dir" \
    cargo check --release --target "$TARGET" --lib --features vendored-openssl
# openssl-src installs into the build script's OUT_DIR; take the newest one.
openssl_dir=$(ls -1dt "$openssl_target_dir/$TARGET"/release/build/openssl-sys-*/out/openssl-build/install 2>/dev/null | head -n 1)
[ -n "$openssl_dir" ] && [ -f "$openssl_dir/include/openssl/configuration.h" ] ||
    die "step 1 left no OpenSSL installation under $openssl_target_dir"
grep -Eq '^# *define OPENSSL_THREADS' "$openssl_dir/include/openssl/configuration.h" ||
    die "the OpenSSL in $openssl_dir was built without threads; remove $openssl_target_dir and retry"
say "OpenSSL with threads: $openssl_dir"

say "step 2: static $TARGET binary (glibc +crt-static, OpenSSL from step 1)"
# Keep any RUSTFLAGS the caller set (e.g. -D warnings in CI), add crt-static.
# cargo-deb strips the packaged copy.
OPENSSL_DIR="$openssl_dir" OPENSSL_STATIC=1 \
    RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
    cargo build --release --target "$TARGET" --bin flow-store

[ -x "$bin" ] || die "cargo did not produce $bin"
file_out=$(file -b "$bin")
say "file: $file_out"
case "$file_out" in
    *"statically linked"*|*"static-pie linked"*) ;;
    *) die "$bin is not statically linked" ;;
esac
# Whatever `file` calls it, check the substance: no program interpreter and
# no shared-library dependency.
if readelf -lW "$bin" | grep 'INTERP' >/dev/null; then
    die "$bin needs a dynamic loader: $(readelf -lW "$bin" | grep -A1 INTERP)"
fi
if readelf -d "$bin" | grep 'NEEDED' >/dev/null; then
    die "$bin has shared-library dependencies: $(readelf -d "$bin" | grep NEEDED)"
fi
say "statically linked: no interpreter, no shared libraries"

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

say "man pages and shell completions, from the binary's own clap definitions"
# Beside the binary, where cargo-deb's target/release/ assets point.
generated=$(dirname "$bin")
rm -rf "$generated/man" "$generated/completions"
"$bin" generate-docs --man "$generated/man" --completions "$generated/completions" >/dev/null ||
    die "flow-store generate-docs failed"
# Debian wants compressed pages (no timestamp: reproducible) and the bash
# completion named after the command.
gzip -9n "$generated"/man/*.8
mv "$generated/completions/flow-store.bash" "$generated/completions/flow-store"

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

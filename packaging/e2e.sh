#!/usr/bin/env bash
# End-to-end test of the flow-store .deb on a freshly booted Debian bookworm.
#
# Proves the operator's path: install the .deb with apt into a minimal
# bookworm root file system, import a store's keys (`flow-store keys import`
# of a store JSON made here), place a certificate, boot the system with
# systemd-nspawn, and check that flow-store.service is active, serves the
# platform over TLS (`flow-store simulate` from the host, the binary taken
# from the package), logs the requests to the journal, reloads in place (and
# keeps its certificate when the new file is broken), restarts, refuses a
# broken config with the `check` message, keeps an edited config and restarts
# on upgrade, keeps config, keys and data across `apt remove` + install, and
# that purge removes /etc/flow-store but keeps /var/lib/flow-store. It also
# checks that the service serves on 127.0.0.1:443 as its unprivileged user
# (when that port is free on the host), that systemd's watchdog restarts it
# when its database wedges (a blob directory made immutable; acknowledged
# states survive), and that the static binary resolves
# a host name without opening any shared object (no glibc NSS module, so no
# second libc in the process).
#
# Usage (as root; CI runs it from .ci/run):
#   packaging/e2e.sh
#
# Environment:
#   FLOW_STORE_DEB        test this .deb instead of building one with
#                         packaging/build-static.sh
#   FLOW_STORE_E2E_CACHE  cache directory (default: target/e2e-cache). It keeps
#                         the pristine debootstrap root file system as
#                         rootfs-bookworm-<hash>.tar.zst; delete it to rebuild.
#   FLOW_STORE_E2E_MIRROR Debian mirror (default: http://deb.debian.org/debian)
#   FLOW_STORE_E2E_TIMEOUT whole-run limit in seconds (default: 2400)
#   FLOW_STORE_E2E_KEEP=1 keep the work directory for inspection on failure
#   FLOW_STORE_E2E_REQUEST_LOG  extended regexp that a request to the store
#                         leaves in `journalctl -u flow-store` (default:
#                         /states/)
#
# The container shares the host's network; the store listens on a free port
# on 127.0.0.1 only. Work happens in target/e2e-work.XXXXXX, removed on exit.
set -Eeuo pipefail
# Under pipefail `producer | grep -q PATTERN` fails whenever grep finds its
# line and exits before the producer wrote its last one (the producer gets
# EPIPE or SIGPIPE): the greps below read to the end, into /dev/null.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$REPO/packaging/e2e.sh"

# --- Bound the whole run: re-execute under timeout(1) once. The inner run's
# EXIT trap cleans up when timeout sends SIGTERM.
if [ -z "${FLOW_STORE_E2E_INNER:-}" ]; then
    limit=${FLOW_STORE_E2E_TIMEOUT:-2400}
    rc=0
    FLOW_STORE_E2E_INNER=1 timeout --kill-after=60 "$limit" bash "$SELF" "$@" || rc=$?
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        echo "e2e: FAILED: the run took longer than ${limit}s (FLOW_STORE_E2E_TIMEOUT)" >&2
    fi
    exit "$rc"
fi

SUITE=bookworm
MIRROR=${FLOW_STORE_E2E_MIRROR:-http://deb.debian.org/debian}
INCLUDE=systemd,systemd-sysv,adduser,dbus,ca-certificates,procps
CACHE_DIR=${FLOW_STORE_E2E_CACHE:-$REPO/target/e2e-cache}
REQUEST_LOG=${FLOW_STORE_E2E_REQUEST_LOG:-/states/}
CONF=/etc/flow-store/config.toml

STARTED=$(date +%s)
STEP=0
WORK=""
NSPAWN_PID=""
IMMUTABLE=""
LEADER=""
ROOTFS_PID=""

# --- Output -----------------------------------------------------------------
step() {
    STEP=$((STEP + 1))
    printf '\n==> [%s +%ss] %d. %s\n' "$(date +%T)" "$(($(date +%s) - STARTED))" "$STEP" "$*"
}
info() { printf '    %s\n' "$*"; }
die() {
    printf '\ne2e: FAILED at step %d: %s\n' "$STEP" "$*" >&2
    exit 1
}
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR

# --- Container helpers ------------------------------------------------------
# Run a command in the root file system before boot (not booted: no systemd).
# systemd-nspawn without --boot gives it /proc, /dev and /sys and leaves no
# mounts behind on the host.
# (Where /run is not a tmpfs, as on hosts whose PID 1 is not systemd, nspawn
# complains on exit that it will not clean its propagation directory there;
# that line is noise and is dropped.)
in_root() {
    timeout 300 systemd-nspawn --quiet --register=no --keep-unit --pipe \
        -D "$ROOT" -E DEBIAN_FRONTEND=noninteractive -- "$@" </dev/null \
        2> >(grep -v 'Attempted to remove disk file system' >&2 || true)
}

# Run a command inside the booted container (all its namespaces but the
# network, which it shares with the host), with a clean environment.
in_ct() {
    timeout "${CT_TIMEOUT:-120}" nsenter --target "$LEADER" --mount --uts --ipc --pid --cgroup -- \
        env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 SYSTEMD_PAGER= SYSTEMD_COLORS=0 DEBIAN_FRONTEND=noninteractive \
        "$@" </dev/null
}

service_state() { in_ct systemctl is-active flow-store.service 2>/dev/null || true; }

journal() { in_ct journalctl -u flow-store.service --no-pager -o short-precise "$@" || true; }

show_journal() {
    echo "---- journalctl -u flow-store (last 40 lines) ----" >&2
    journal -n 40 >&2
    echo "---- end of journal ----" >&2
}

# Wait until flow-store.service is active; fail at once when it failed.
nrestarts() { in_ct systemctl show -P NRestarts flow-store.service 2>/dev/null || echo 0; }

wait_active() {
    local deadline=$(($(date +%s) + ${1:-90})) state restarts
    restarts=$(nrestarts)
    while :; do
        state=$(service_state)
        case "$state" in
            active) info "flow-store.service is active"; return 0 ;;
            failed) show_journal; die "flow-store.service failed to start" ;;
        esac
        # Restart=on-failure hides a failing start as "activating" again.
        if [ "$(nrestarts)" != "$restarts" ]; then
            show_journal; die "flow-store.service failed and is being restarted by systemd"
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            show_journal
            die "flow-store.service not active after ${1:-90}s (state: ${state:-unknown})"
        fi
        sleep 1
    done
}

simulate() {
    timeout 120 "$HOST_BIN" simulate \
        --url "https://127.0.0.1:$PORT/api/storage/1" \
        --platform-key "$KEYS/platform.jwk" --receiver-key "$KEYS/receiver.jwk" \
        --ca "$TLS/ca.pem" ||
        die "flow-store simulate failed against https://127.0.0.1:$PORT/api/storage/1"
    info "simulate passed (save, load, update, delete over TLS)"
}

# One state saved early and kept: every later step checks it is still
# there (reload, restart, upgrade, remove + install).
KEPT_TENANT=$(cat /proc/sys/kernel/random/uuid)
KEPT_STATE=$(cat /proc/sys/kernel/random/uuid)
kept_state() {
    timeout 120 "$HOST_BIN" simulate --mode "$1" --tenant "$KEPT_TENANT" --state "$KEPT_STATE" \
        --url "https://127.0.0.1:$PORT/api/storage/1" \
        --platform-key "$KEYS/platform.jwk" --receiver-key "$KEYS/receiver.jwk" \
        --ca "$TLS/ca.pem" >"$WORK/kept.log" 2>&1 ||
        { cat "$WORK/kept.log" >&2; die "simulate --mode $1 of the kept state $KEPT_STATE failed ${2:-}"; }
    info "kept state $KEPT_STATE: $1 ok ${2:-}"
}

boot() {
    : >"$WORK/console.log"
    systemd-nspawn --boot --keep-unit --register=no --quiet \
        --console=read-only --machine=flow-store-e2e -D "$ROOT" \
        >>"$WORK/console.log" 2>&1 </dev/null &
    NSPAWN_PID=$!
    info "systemd-nspawn pid $NSPAWN_PID, console log $WORK/console.log"
    # The container's PID 1 (systemd) is a child of systemd-nspawn: the one
    # that is PID 1 in its own PID namespace (NSpid ends in 1). Early on,
    # nspawn has another, short-lived child too.
    local deadline=$(($(date +%s) + 30)) pid
    LEADER=""
    while [ -z "$LEADER" ]; do
        kill -0 "$NSPAWN_PID" 2>/dev/null || { tail -n 20 "$WORK/console.log" >&2; die "systemd-nspawn exited"; }
        [ "$(date +%s)" -lt "$deadline" ] || die "no container PID 1 after 30s"
        for pid in $(pgrep -P "$NSPAWN_PID" || true); do
            if awk '$1 == "NSpid:" && NF > 2 && $NF == 1 { found = 1 } END { exit !found }' \
                "/proc/$pid/status" 2>/dev/null; then
                LEADER=$pid
            fi
        done
        [ -n "$LEADER" ] || sleep 0.2
    done
    info "container PID 1 is host pid $LEADER"
    # Wait for the container's systemd to answer (state may be "degraded").
    deadline=$(($(date +%s) + 90))
    until in_ct systemctl is-system-running --wait >/dev/null 2>&1 ||
        [ "$(in_ct systemctl is-system-running 2>/dev/null || true)" = degraded ]; do
        kill -0 "$NSPAWN_PID" 2>/dev/null || { tail -n 20 "$WORK/console.log" >&2; die "container stopped while booting"; }
        [ "$(date +%s)" -lt "$deadline" ] || { tail -n 20 "$WORK/console.log" >&2; die "container did not finish booting in 90s"; }
        sleep 1
    done
    info "container booted: $(in_ct systemctl is-system-running 2>/dev/null || true)"
}

# Power the container off cleanly; escalate only if it does not stop.
poweroff() {
    [ -n "$NSPAWN_PID" ] || return 0
    if kill -0 "$NSPAWN_PID" 2>/dev/null; then
        if [ -n "$LEADER" ]; then
            CT_TIMEOUT=20 in_ct systemctl --no-block poweroff >/dev/null 2>&1 ||
                kill -s SIGRTMIN+4 "$LEADER" 2>/dev/null || true
        fi
        for _ in $(seq 60); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 1; done
        if kill -0 "$NSPAWN_PID" 2>/dev/null; then
            echo "e2e: container did not power off in 60s; terminating systemd-nspawn" >&2
            kill -TERM "$NSPAWN_PID" 2>/dev/null || true
            sleep 10
            kill -KILL "$NSPAWN_PID" 2>/dev/null || true
        fi
    fi
    wait "$NSPAWN_PID" 2>/dev/null || true
    NSPAWN_PID=""
    LEADER=""
}

# Terminates $1 and everything it started (debootstrap under a subshell).
kill_tree() {
    local child
    for child in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$child"; done
    kill -TERM "$1" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - ERR
    set +e
    if [ -n "$ROOTFS_PID" ]; then
        kill_tree "$ROOTFS_PID"
        wait "$ROOTFS_PID" 2>/dev/null
    fi
    poweroff
    if [ -n "$IMMUTABLE" ]; then
        chattr -i "$IMMUTABLE" 2>/dev/null
    fi
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "$rc" != 0 ] && [ "${FLOW_STORE_E2E_KEEP:-}" = 1 ]; then
            echo "e2e: kept $WORK for inspection (FLOW_STORE_E2E_KEEP=1)" >&2
        else
            rm -rf --one-file-system "$WORK"
        fi
    fi
    if [ "$rc" = 0 ]; then
        printf '\ne2e: PASSED in %ss\n' "$(($(date +%s) - STARTED))"
    fi
}
trap cleanup EXIT
trap 'exit 143' TERM INT

# --- Preconditions -------------------------------------------------------
step "checking tools"
[ "$(id -u)" = 0 ] || die "run as root (debootstrap, systemd-nspawn and nsenter need it)"
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
command -v zstd >/dev/null || missing+=(zstd)
command -v openssl >/dev/null || missing+=(openssl)
command -v nsenter >/dev/null || missing+=(util-linux)
command -v pgrep >/dev/null || missing+=(procps)
command -v strace >/dev/null || missing+=(strace)
command -v chattr >/dev/null || missing+=(e2fsprogs)
if [ "${#missing[@]}" -gt 0 ]; then
    info "installing ${missing[*]}"
    timeout 600 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v python3 >/dev/null || die "python3 is needed to write the test JWKs"

mkdir -p "$CACHE_DIR"
# Work directories of runs killed so hard that their cleanup could not run
# (older than any run may last) go first.
find "$REPO/target" -maxdepth 1 -name 'e2e-work.*' -mmin +$((${FLOW_STORE_E2E_TIMEOUT:-2400} / 60 + 5)) \
    -exec rm -rf --one-file-system {} + 2>/dev/null || true
WORK=$(mktemp -d "$REPO/target/e2e-work.XXXXXX")
ROOT="$WORK/rootfs"
KEYS="$WORK/keys"
TLS="$WORK/tls"
mkdir -p "$KEYS" "$TLS"
info "work directory $WORK"

# --- Pristine root file system (cached), made while the package builds ---
# debootstrap waits on the network, the build on the CPU: they overlap.
key=$(printf '%s\n' "$SUITE" "$MIRROR" "$INCLUDE" minbase v1 | sha256sum | cut -c1-12)
TARBALL="$CACHE_DIR/rootfs-$SUITE-$key.tar.zst"
rootfs_tarball() {
    (
        # One builder at a time; a second run waits for the first one's tarball.
        flock -w 1500 9 || die "cache lock $CACHE_DIR/.lock busy for 25 minutes"
        if [ -f "$TARBALL" ]; then
            info "cached: $TARBALL"
            exit 0
        fi
        info "not cached: debootstrap $SUITE from $MIRROR (a few minutes)"
        tmp=$(mktemp -d "$CACHE_DIR/debootstrap.XXXXXX")
        trap 'rm -rf --one-file-system "$tmp"' EXIT
        t0=$(date +%s)
        if ! timeout 1200 debootstrap --variant=minbase --include="$INCLUDE" \
            "$SUITE" "$tmp/root" "$MIRROR" >"$tmp/debootstrap.log" 2>&1; then
            tail -n 30 "$tmp/debootstrap.log" >&2
            [ ! -f "$tmp/root/debootstrap/debootstrap.log" ] || tail -n 30 "$tmp/root/debootstrap/debootstrap.log" >&2
            die "debootstrap failed"
        fi
        rm -rf "$tmp/root/var/cache/apt/archives/"*.deb
        info "debootstrap took $(($(date +%s) - t0))s; writing $TARBALL"
        tar --numeric-owner --xattrs --xattrs-include='*' -C "$tmp/root" -c . |
            zstd -q -T0 -o "$tmp/rootfs.tar.zst"
        mv "$tmp/rootfs.tar.zst" "$TARBALL"
    ) 9>"$CACHE_DIR/.lock"
}
ROOTFS_LOG="$WORK/rootfs.log"
rootfs_tarball >"$ROOTFS_LOG" 2>&1 &
ROOTFS_PID=$!

# --- The package ---------------------------------------------------------
if [ -n "${FLOW_STORE_DEB:-}" ]; then
    step "using the given package $FLOW_STORE_DEB"
    DEB=$(readlink -f "$FLOW_STORE_DEB")
else
    step "building the static binary and the .deb (packaging/build-static.sh)"
    DEB=$(timeout 2400 "$REPO/packaging/build-static.sh" | tail -n 1)
fi
[ -f "$DEB" ] || die "no package at '$DEB'"
info "package: $DEB"
dpkg-deb --field "$DEB" Package Version Depends | sed 's/^/    /'
# The host plays the platform with the very binary the package ships.
dpkg-deb -x "$DEB" "$WORK/pkg"
HOST_BIN="$WORK/pkg/usr/bin/flow-store"
[ -x "$HOST_BIN" ] || die "the package has no usr/bin/flow-store"

step "pristine Debian $SUITE root file system"
wait "$ROOTFS_PID" || { ROOTFS_PID=""; cat "$ROOTFS_LOG" >&2; die "the root file system could not be made"; }
ROOTFS_PID=""
cat "$ROOTFS_LOG"
# Older tarballs (another suite or package list) are not needed any more.
find "$CACHE_DIR" -maxdepth 1 -name 'rootfs-*.tar.zst' ! -name "${TARBALL##*/}" -delete

mkdir "$ROOT"
zstd -q -dc "$TARBALL" | tar --numeric-owner --xattrs --xattrs-include='*' -C "$ROOT" -x
info "root file system at $ROOT"
# Boot faster and quieter: no login prompt on the console.
in_root systemctl mask --quiet console-getty.service getty@.service
echo flow-store-e2e >"$ROOT/etc/hostname"

# --- Install the package as an operator would ----------------------------
step "apt-get install ./${DEB##*/} inside the root file system"
cp "$DEB" "$ROOT/root/"
in_root bash -c "cd /root && apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends ./${DEB##*/}" \
    >"$WORK/install.log" 2>&1 || { cat "$WORK/install.log" >&2; die "apt-get install of the package failed"; }
sed 's/^/    | /' "$WORK/install.log" | tail -n 12
in_root test -x /usr/bin/flow-store || die "/usr/bin/flow-store not installed"
in_root getent passwd flow-store >/dev/null || die "no flow-store system user"
for d in /etc/flow-store/keys /etc/flow-store/tls; do
    got=$(in_root stat -c '%U:%G %a' "$d")
    [ "$got" = "root:flow-store 750" ] || die "$d is '$got', expected 'root:flow-store 750'"
done
info "binary, system user and root:flow-store 0750 key/tls directories in place"
in_root systemctl is-enabled --quiet flow-store.service || die "flow-store.service is not enabled"
in_root systemd-analyze verify flow-store.service || die "systemd-analyze verify flow-store.service failed"
info "unit enabled, systemd-analyze verify clean"

# --- Test keys, store JSON and certificate -------------------------------
step "generating test keys (P-384 JWKs), the store JSON and a TLS certificate"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
STORE_ID=$(cat /proc/sys/kernel/random/uuid)
python3 - "$KEYS" "$STORE_ID" "https://127.0.0.1:$PORT/api/storage/1" <<'PY'
"""Write two P-384 JWKs (openssl generates, we only encode) and the JSON the
platform answers to POST api/admin/1/stores: the platform key without its
private part, the receiver key with it, each as a JSON string."""
import base64, json, re, subprocess, sys, uuid

out, store_id, endpoint = sys.argv[1:4]

def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

def jwk():
    pem = subprocess.run(["openssl", "genpkey", "-algorithm", "EC",
                          "-pkeyopt", "ec_paramgen_curve:P-384"],
                         capture_output=True, check=True).stdout
    text = subprocess.run(["openssl", "pkey", "-noout", "-text"], input=pem,
                          capture_output=True, check=True).stdout.decode()
    def block(name):
        m = re.search(name + r":\s*\n((?:[ \t]+[0-9a-f:]+\n)+)", text)
        return bytes.fromhex(re.sub(r"[\s:]", "", m.group(1)))
    d = block("priv").lstrip(b"\0").rjust(48, b"\0")
    pub = block("pub")
    assert pub[0] == 4 and len(pub) == 97, "unexpected EC point encoding"
    return {"kty": "EC", "crv": "P-384", "kid": str(uuid.uuid4()),
            "x": b64u(pub[1:49]), "y": b64u(pub[49:]), "d": b64u(d)}

platform, receiver = jwk(), jwk()
for name, key in (("platform", platform), ("receiver", receiver)):
    with open(f"{out}/{name}.jwk", "w") as f:
        json.dump(key, f)
public_platform = {k: v for k, v in platform.items() if k != "d"}
with open(f"{out}/store.json", "w") as f:
    json.dump({"id": store_id, "name": "e2e", "endpoint": endpoint,
               "platformKey": json.dumps(public_platform),
               "receiverKey": json.dumps(receiver)}, f, indent=2)
print(f"    platform kid {platform['kid']}, receiver kid {receiver['kid']}")
PY
# A test CA and a server certificate for 127.0.0.1 signed by it, so simulate
# verifies the chain (--ca) instead of skipping verification.
(
    cd "$TLS"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=flow-store e2e test CA" -keyout ca.key -out ca.pem \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=127.0.0.1" -keyout key.pem -out server.csr 2>/dev/null
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile server.ext -out cert.pem 2>/dev/null
)
info "store $STORE_ID on port $PORT; certificate for 127.0.0.1 signed by a test CA"

# --- Configure the store inside the root file system ---------------------
step "flow-store keys import, certificate, listen address"
cp "$KEYS/store.json" "$ROOT/root/store.json"
in_root flow-store keys import /root/store.json || die "flow-store keys import failed"
in_root flow-store keys list || die "flow-store keys list failed"
install -m 0640 "$TLS/cert.pem" "$ROOT/etc/flow-store/tls/cert.pem"
install -m 0640 "$TLS/key.pem" "$ROOT/etc/flow-store/tls/key.pem"
in_root chown root:flow-store /etc/flow-store/tls/cert.pem /etc/flow-store/tls/key.pem
grep -q '^listen = "0.0.0.0:8443"$' "$ROOT$CONF" || die "the packaged config has no 'listen = \"0.0.0.0:8443\"' line"
sed -i "s/^listen = \"0.0.0.0:8443\"$/listen = \"127.0.0.1:$PORT\"/" "$ROOT$CONF"
# The container shares the host's network: metrics on a free port, not 9464.
METRICS_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
grep -q '^#listen = "127.0.0.1:9464"$' "$ROOT$CONF" || die "the packaged config has no '#listen = \"127.0.0.1:9464\"' line under [metrics]"
sed -i "s/^#listen = \"127.0.0.1:9464\"$/listen = \"127.0.0.1:$METRICS_PORT\"/" "$ROOT$CONF"
cp -p "$ROOT$CONF" "$WORK/config.good.toml"
in_root flow-store check || die "flow-store check failed before boot"
info "flow-store check passes"

# --- Boot ----------------------------------------------------------------
step "booting the root file system with systemd-nspawn --boot"
boot
wait_active 90
in_ct systemd-analyze security --no-pager flow-store.service | tail -n 1 | sed 's/^/    /' || true

# --- Play the platform ---------------------------------------------------
step "flow-store simulate from the host over TLS"
simulate
log=$(journal)
printf '%s\n' "$log" | grep -E -- "$REQUEST_LOG" >/dev/null ||
    { show_journal; die "the journal of flow-store.service shows no request (pattern '$REQUEST_LOG')"; }
info "journalctl -u flow-store shows the requests:"
printf '%s\n' "$log" | grep -E -- "$REQUEST_LOG" | tail -n 4 | sed 's/^/    | /'
kept_state save

step "a host name lookup in the static binary opens no shared object"
# glibc linked statically would dlopen() the host's NSS modules (and the
# host's libc.so.6 with them) for sources such as mymachines or resolve;
# src/main.rs pins lookups to the built-in files and dns. A name under
# .invalid never resolves, so every configured source gets asked.
NOHOST="flow-store-e2e-$STORE_ID.invalid"
nss_out=$(timeout 60 strace -f -qq -e trace=openat,open -o "$WORK/nss.trace" "$HOST_BIN" simulate \
    --url "https://$NOHOST:$PORT/api/storage/1" \
    --platform-key "$KEYS/platform.jwk" --receiver-key "$KEYS/receiver.jwk" \
    --ca "$TLS/ca.pem" 2>&1) && die "simulate reached $NOHOST, which cannot exist"
printf '%s\n' "$nss_out" | grep "failed to lookup address" >/dev/null ||
    { printf '%s\n' "$nss_out" >&2; die "simulate against $NOHOST did not fail on the name lookup"; }
if grep -E '"[^"]*\.so(\.[0-9]+)*"' "$WORK/nss.trace" | grep -Ev '= -1 ' >&2; then
    die "the static binary opened the shared objects above while looking up a host name"
fi
info "lookup of $NOHOST failed cleanly, no shared object opened"

# Something only this run put there, to prove the data survives below.
in_ct sh -c 'echo "e2e $1" >/var/lib/flow-store/e2e-marker && chown flow-store:flow-store /var/lib/flow-store/e2e-marker' sh "$STORE_ID"
data_before=$(in_ct find /var/lib/flow-store -mindepth 1 -maxdepth 1 -printf '%f\n' | sort)
info "data directory holds: $(printf '%s ' $data_before)"

# --- Reload and restart --------------------------------------------------
step "systemctl reload flow-store (and a reload with a broken certificate)"
main_pid=$(in_ct systemctl show -P MainPID flow-store.service)
since=$(in_ct date '+%Y-%m-%d %H:%M:%S')
in_ct systemctl reload flow-store.service || { show_journal; die "systemctl reload failed"; }
sleep 1
wait_active 30
[ "$(in_ct systemctl show -P MainPID flow-store.service)" = "$main_pid" ] ||
    die "reload replaced the process (MainPID changed)"
journal --since "$since" _PID="$main_pid" | grep -i 'reload' >/dev/null ||
    { show_journal; die "flow-store logged nothing about the reload"; }
info "reloaded in place (same MainPID):"
journal --since "$since" _PID="$main_pid" | grep -i 'reload' | tail -n 2 | sed 's/^/    | /'
simulate
kept_state load "after reload"
# A broken certificate file: the reload keeps the old one, says why, and the
# store goes on serving.
cp -p "$ROOT/etc/flow-store/tls/cert.pem" "$WORK/cert.good.pem"
echo "not a certificate" >"$ROOT/etc/flow-store/tls/cert.pem"
since=$(in_ct date '+%Y-%m-%d %H:%M:%S')
in_ct systemctl reload flow-store.service || { show_journal; die "systemctl reload with a broken certificate failed"; }
sleep 1
wait_active 30
journal --since "$since" _PID="$main_pid" | grep -Ei 'keep|kept' >/dev/null ||
    { show_journal; die "a reload with a broken certificate did not log that it kept the old one"; }
info "broken certificate on reload, the journal says:"
journal --since "$since" _PID="$main_pid" | grep -Ei 'keep|kept' | tail -n 2 | sed 's/^/    | /'
simulate
cp -p "$WORK/cert.good.pem" "$ROOT/etc/flow-store/tls/cert.pem"
in_ct systemctl reload flow-store.service || { show_journal; die "reload with the restored certificate failed"; }
wait_active 30

step "systemctl restart flow-store"
in_ct systemctl restart flow-store.service || { show_journal; die "systemctl restart failed"; }
wait_active 30
simulate
kept_state load "after restart"
in_ct test -f /var/lib/flow-store/e2e-marker || die "data lost across restart"

step "listen on port 443 as the unprivileged service user (CAP_NET_BIND_SERVICE)"
# The container shares the host's network: use 127.0.0.1:443 only if free.
if python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 443))' 2>/dev/null; then
    sed -i "s/^listen = \"127.0.0.1:$PORT\"$/listen = \"127.0.0.1:443\"/" "$ROOT$CONF"
    grep -q '^listen = "127.0.0.1:443"$' "$ROOT$CONF" || die "could not set listen to 127.0.0.1:443"
    in_ct systemctl restart flow-store.service || { show_journal; die "restart with listen on port 443 failed"; }
    wait_active 30
    main_pid=$(in_ct systemctl show -P MainPID flow-store.service)
    user=$(in_ct ps -o user= -p "$main_pid" | tr -d ' ')
    [ "$user" = flow-store ] || die "the service runs as '$user', not flow-store"
    saved_port=$PORT
    PORT=443
    simulate
    PORT=$saved_port
    info "served on 127.0.0.1:443 as user $user"
    cp -p "$WORK/config.good.toml" "$ROOT$CONF"
    in_ct systemctl restart flow-store.service || { show_journal; die "restart back on port $PORT failed"; }
    wait_active 30
else
    info "SKIPPED: 127.0.0.1:443 is in use on this host"
fi

# --- Operating: status, an online backup, /metrics, restore -------------
step "flow-store status, an online backup of the running service, /metrics, the backup timer, restore after stop"
# Saves since the last restart, for the metrics below.
simulate
in_ct flow-store status >"$WORK/status.txt" 2>&1 || { cat "$WORK/status.txt" >&2; show_journal; die "flow-store status failed against the running service"; }
sed 's/^/    | /' "$WORK/status.txt" | head -n 12
in_ct flow-store status --json | grep -E '"healthy": *true' >/dev/null || die "flow-store status --json does not say healthy"
in_ct flow-store backup --output /root/e2e.backup >"$WORK/backup.txt" 2>&1 ||
    { cat "$WORK/backup.txt" >&2; show_journal; die "flow-store backup from the running service failed"; }
tail -n 2 "$WORK/backup.txt" | sed 's/^/    | /'
in_ct flow-store backup verify /root/e2e.backup >"$WORK/verify.txt" 2>&1 ||
    { cat "$WORK/verify.txt" >&2; die "flow-store backup verify refused the backup it just made"; }
[ "$(stat -c %a "$ROOT/root/e2e.backup")" = 600 ] || die "the backup file is not mode 0600"
info "online backup made and verified: $(tail -n 1 "$WORK/verify.txt")"
# Scraped from the host (the container shares its network), with bash alone.
exec 3<>"/dev/tcp/127.0.0.1/$METRICS_PORT" || die "nothing listens on the metrics port $METRICS_PORT"
printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
metrics=$(timeout 10 cat <&3); exec 3>&-
printf '%s\n' "$metrics" | grep -E '^flow_store_states_saved_total [1-9]' >/dev/null ||
    die "/metrics shows no saved states (flow_store_states_saved_total)"
printf '%s\n' "$metrics" | grep -E '^flow_store_last_backup_success_timestamp_seconds [1-9]' >/dev/null ||
    die "/metrics shows no successful backup after one was made"
info "/metrics on 127.0.0.1:$METRICS_PORT: $(printf '%s\n' "$metrics" | grep -c '^flow_store_') flow_store_* samples, the backup counted"
[ "$(in_ct systemctl is-enabled flow-store-backup.timer 2>/dev/null || true)" = disabled ] ||
    die "flow-store-backup.timer is not installed disabled"
in_ct systemctl start flow-store-backup.service || { in_ct journalctl -u flow-store-backup.service --no-pager -n 30 >&2; die "flow-store-backup.service failed"; }
in_ct sh -c 'ls /var/backups/flow-store/*' >/dev/null 2>&1 || die "flow-store-backup.service wrote nothing to /var/backups/flow-store"
info "flow-store-backup.service wrote $(in_ct sh -c 'ls /var/backups/flow-store' | head -n 1)"
in_ct systemctl stop flow-store.service || die "systemctl stop failed"
in_ct mv /var/lib/flow-store /var/lib/flow-store.before-restore
in_ct flow-store restore /root/e2e.backup >"$WORK/restore.txt" 2>&1 ||
    { cat "$WORK/restore.txt" >&2; die "flow-store restore into the stopped service's missing data directory failed"; }
in_ct systemctl start flow-store.service || { show_journal; die "the service does not start on the restored data directory"; }
wait_active 30
kept_state load "after restore"
# The marker file is not a state: it comes back from the old directory.
in_ct cp -p /var/lib/flow-store.before-restore/e2e-marker /var/lib/flow-store/e2e-marker
in_ct rm -rf /var/lib/flow-store.before-restore

# --- A wedged database: the systemd watchdog restarts the service -------
step "a wedged database gets flow-store restarted by the systemd watchdog"
# sled 0.34 never returns from a flush after a blob file could not be
# created; the daemon then stops feeding the watchdog (docs/reliability.md,
# item 10). A drop-in shortens WatchdogSec from 60 s to 10 s for this step.
DROPIN_DIR="$ROOT/etc/systemd/system/flow-store.service.d"
mkdir -p "$DROPIN_DIR"
printf '[Service]\nWatchdogSec=10s\n' >"$DROPIN_DIR/e2e-watchdog.conf"
in_ct systemctl daemon-reload
in_ct systemctl restart flow-store.service || { show_journal; die "restart with WatchdogSec=10s failed"; }
wait_active 30
# big_state save|load STATE-ID: a 512 KiB state, above sled's blob threshold.
big_state() {
    timeout 120 "$HOST_BIN" simulate --mode "$1" --tenant "$KEPT_TENANT" --state "$2" \
        --pad-kib 512 --url "https://127.0.0.1:$PORT/api/storage/1" \
        --platform-key "$KEYS/platform.jwk" --receiver-key "$KEYS/receiver.jwk" \
        --ca "$TLS/ca.pem" >"$WORK/big.log" 2>&1
}
# The first large state creates the database's blobs/ directory.
BIG_STATE=$(cat /proc/sys/kernel/random/uuid)
big_state save "$BIG_STATE" || { cat "$WORK/big.log" >&2; die "saving a 512 KiB state failed"; }
BLOBS="$ROOT/var/lib/flow-store/blobs"
if [ -d "$BLOBS" ] && chattr +i "$BLOBS" 2>/dev/null; then
    IMMUTABLE=$BLOBS
    old_pid=$(in_ct systemctl show -P MainPID flow-store.service)
    restarts=$(nrestarts)
    since=$(in_ct date '+%Y-%m-%d %H:%M:%S')
    big_state save "$(cat /proc/sys/kernel/random/uuid)" &&
        die "a 512 KiB save succeeded although blobs/ is immutable"
    info "the save that needed a new blob file failed: $(grep -m1 -i 'fail' "$WORK/big.log")"
    deadline=$(($(date +%s) + 120))
    until [ "$(nrestarts)" != "$restarts" ]; do
        [ "$(date +%s)" -lt "$deadline" ] ||
            { show_journal; die "systemd did not restart the wedged flow-store within 120 s"; }
        sleep 1
    done
    chattr -i "$BLOBS"
    IMMUTABLE=""
    wait_active 60
    new_pid=$(in_ct systemctl show -P MainPID flow-store.service)
    [ "$new_pid" != "$old_pid" ] || die "NRestarts grew but MainPID is still $old_pid"
    log=$(in_ct journalctl --no-pager -o short-precise --since "$since" || true)
    printf '%s\n' "$log" | grep -i 'watchdog timeout' >/dev/null ||
        { show_journal; die "the journal does not show systemd's watchdog timeout"; }
    info "systemd's watchdog restarted flow-store (pid $old_pid -> $new_pid):"
    printf '%s\n' "$log" | grep -Ei 'no longer feeding|watchdog timeout|Scheduled restart' |
        head -n 4 | sed 's/^/    | /'
    big_state load "$BIG_STATE" || { cat "$WORK/big.log" >&2; die "the 512 KiB state saved before the wedge is gone"; }
    kept_state load "after the watchdog restart"
    simulate
else
    info "SKIPPED: cannot make $BLOBS immutable here (chattr needs ext4 or a similar file system)"
fi
rm -f "$DROPIN_DIR/e2e-watchdog.conf"
in_ct systemctl daemon-reload
in_ct systemctl restart flow-store.service || { show_journal; die "restart without the watchdog drop-in failed"; }
wait_active 30

# --- A broken config fails fast -----------------------------------------
step "a broken config (unknown key) makes systemctl restart fail with the check message"
sed -i '/^\[server\]$/a e2e_unknown_key = true' "$ROOT$CONF"
since=$(in_ct date '+%Y-%m-%d %H:%M:%S')
if in_ct systemctl restart flow-store.service 2>/dev/null; then
    die "systemctl restart succeeded with an unknown key in the config"
fi
info "systemctl restart failed, as it must"
sleep 1
log=$(journal --since "$since")
printf '%s\n' "$log" | grep 'e2e_unknown_key' >/dev/null ||
    { show_journal; die "the journal does not name the unknown key e2e_unknown_key"; }
info "the journal names the problem:"
printf '%s\n' "$log" | grep 'e2e_unknown_key' | head -n 3 | sed 's/^/    | /'
cp -p "$WORK/config.good.toml" "$ROOT$CONF"
# Restart=on-failure may have retried meanwhile: clear the start-rate counter.
in_ct systemctl reset-failed flow-store.service || true
in_ct systemctl restart flow-store.service || { show_journal; die "restart with the restored config failed"; }
wait_active 30
info "restored config: active again"

# --- Upgrade keeps the edited config and restarts the service ----------
step "upgrade to a newer package version keeps the edited config and restarts the service"
# The same package under a higher version, as a release would be.
version=$(dpkg-deb --field "$DEB" Version)
dpkg-deb -R "$DEB" "$WORK/upgrade"
sed -i "s/^Version: .*/Version: $version+e2e1/" "$WORK/upgrade/DEBIAN/control"
dpkg-deb --root-owner-group -Znone -b "$WORK/upgrade" "$ROOT/root/flow-store_upgrade.deb" >/dev/null
conf_before=$(sha256sum <"$ROOT$CONF")
main_pid=$(in_ct systemctl show -P MainPID flow-store.service)
CT_TIMEOUT=300 in_ct bash -c "cd /root && apt-get install -y -q -o Dpkg::Use-Pty=0 ./flow-store_upgrade.deb" \
    >"$WORK/upgrade.log" 2>&1 || { cat "$WORK/upgrade.log" >&2; die "upgrade failed"; }
[ "$(in_ct dpkg-query -W -f '${Version}' flow-store)" = "$version+e2e1" ] || die "upgrade did not install $version+e2e1"
[ "$(sha256sum <"$ROOT$CONF")" = "$conf_before" ] || die "upgrade changed the edited $CONF"
wait_active 30
[ "$(in_ct systemctl show -P MainPID flow-store.service)" != "$main_pid" ] ||
    die "upgrade did not restart flow-store.service (MainPID unchanged)"
simulate
kept_state load "after upgrade"
info "upgraded to $version+e2e1: config kept, service restarted and serving"

# --- apt remove + install keeps config, keys and data -------------------
step "apt-get remove flow-store, then install the first version again"
CT_TIMEOUT=300 in_ct apt-get remove -y -q -o Dpkg::Use-Pty=0 flow-store >"$WORK/remove.log" 2>&1 ||
    { cat "$WORK/remove.log" >&2; die "apt-get remove failed"; }
state=$(service_state)
[ "$state" != active ] || die "flow-store.service still active after apt-get remove"
in_ct test -f "$CONF" || die "apt-get remove deleted $CONF"
in_ct test -f "/etc/flow-store/keys/$STORE_ID-receiver.jwk" || die "apt-get remove deleted the receiver key"
in_ct test -f /var/lib/flow-store/e2e-marker || die "apt-get remove deleted data in /var/lib/flow-store"
info "removed: service stopped ($state); config, keys and data kept"
CT_TIMEOUT=300 in_ct bash -c "cd /root && apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends ./${DEB##*/}" \
    >"$WORK/reinstall.log" 2>&1 || { cat "$WORK/reinstall.log" >&2; die "reinstall failed"; }
in_ct systemctl is-enabled --quiet flow-store.service || die "not enabled after reinstall"
in_ct systemctl start flow-store.service || { show_journal; die "start after reinstall failed"; }
wait_active 30
data_after=$(in_ct find /var/lib/flow-store -mindepth 1 -maxdepth 1 -printf '%f\n' | sort)
# The database may add snapshot files meanwhile; nothing may go missing.
lost=$(comm -23 <(printf '%s\n' "$data_before") <(printf '%s\n' "$data_after"))
[ -z "$lost" ] ||
    die "files in /var/lib/flow-store lost across remove/install: $(printf '%s ' $lost)"
in_ct grep -q "e2e $STORE_ID" /var/lib/flow-store/e2e-marker || die "marker file changed"
simulate
kept_state load "after apt remove + install"
info "reinstalled: same data, config and keys; store serves"

# --- apt purge keeps the data and says so -------------------------------
step "apt-get purge flow-store keeps /var/lib/flow-store and says so"
CT_TIMEOUT=300 in_ct apt-get purge -y -q -o Dpkg::Use-Pty=0 flow-store >"$WORK/purge.log" 2>&1 ||
    { cat "$WORK/purge.log" >&2; die "apt-get purge failed"; }
in_ct test ! -e /etc/flow-store || die "purge left /etc/flow-store behind"
in_ct test -f /var/lib/flow-store/e2e-marker || die "purge deleted /var/lib/flow-store"
grep -q '/var/lib/flow-store' "$WORK/purge.log" || die "purge did not say where the data stayed"
grep 'flow-store:' "$WORK/purge.log" | sed 's/^/    | /'

# --- Power off ----------------------------------------------------------
step "powering the container off"
t0=$(date +%s)
poweroff
info "container stopped in $(($(date +%s) - t0))s"

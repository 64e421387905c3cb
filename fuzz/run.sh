#!/usr/bin/env bash
# Runs every fuzz target of flow-store for a set time and reports.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]        (default 60)
#
# Needs the nightly toolchain (`rustup toolchain install nightly`); installs
# cargo-fuzz if missing. Each target starts from its committed seed corpus
# (fuzz/corpus/<target>/, read only); inputs the fuzzer finds go to a
# temporary directory, so the committed corpus never grows by itself. Limits:
# -rss_limit_mb=1024 (bounded memory), -timeout=10 (no input may take 10 s).
#
# Prints per target: executions, exec/s, coverage at start -> end, new
# inputs, crashes. Exits 1 if any target crashed, hung, ran out of memory or
# leaked, printing the artifact and the command that reproduces it; exits 2
# if the toolchain or the build is missing or broken.
#
# Environment:
#   FUZZ_TARGETS      targets to run (default: all five)
#   FUZZ_KEEP_CORPUS  directory to keep the new inputs in (default: discarded)
#   CARGO_BUILD_JOBS  build parallelism (default: cargo's, every core)
#   FUZZ_CODEGEN_UNITS  codegen units of the fuzz build (default: cargo-fuzz's,
#                     1: the fastest fuzzing). `cargo test`'s 20-second smoke
#                     run sets 16, since the build is most of that run.
set -uo pipefail

SECONDS_PER_TARGET="${1:-60}"
case "$SECONDS_PER_TARGET" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET]" >&2; exit 2 ;;
esac
TARGETS="${FUZZ_TARGETS:-request_signature state_token request_body timestamp config}"

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$FUZZ_DIR" || exit 2

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "run.sh: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "run.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked >&2 || { echo "run.sh: cannot install cargo-fuzz" >&2; exit 2; }
fi

started=$(date +%s)
# -a: debug assertions (and so overflow checks) on, so arithmetic overflow
# is a finding too. Release optimizations, AddressSanitizer (the default).
codegen=()
if [ -n "${FUZZ_CODEGEN_UNITS:-}" ]; then
    case "$FUZZ_CODEGEN_UNITS" in
        *[!0-9]* | 0) echo "run.sh: FUZZ_CODEGEN_UNITS must be a positive number" >&2; exit 2 ;;
    esac
    codegen=(--codegen-units "$FUZZ_CODEGEN_UNITS")
fi
if ! cargo +nightly fuzz build -a "${codegen[@]}" >&2; then
    echo "run.sh: the fuzz build failed" >&2
    exit 2
fi
build_seconds=$(( $(date +%s) - started ))
HOST="$(rustc +nightly -vV | sed -n "s/^host: //p")"
BIN_DIR="$FUZZ_DIR/target/$HOST/release"

work="$(mktemp -d "${TMPDIR:-/tmp}/flow-store-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT

failed=0
summary=()
total_execs=0
for target in $TARGETS; do
    if [ ! -d "corpus/$target" ]; then
        echo "run.sh: no such target: $target" >&2
        exit 2
    fi
    new_corpus="$work/corpus/$target"
    artifacts="$FUZZ_DIR/artifacts/$target"
    mkdir -p "$new_corpus" "$artifacts"
    log="$work/$target.log"
    before="$(ls -A "$artifacts")"
    dict=()
    [ -f "dicts/$target.dict" ] && dict=("-dict=dicts/$target.dict")

    echo "run.sh: fuzzing $target for ${SECONDS_PER_TARGET}s" >&2
    t0=$(date +%s)
    # The binary built above, run directly: `cargo fuzz run` would rebuild
    # (and so change the code under test) if src/ changed in the meantime.
    "$BIN_DIR/$target" -artifact_prefix="$artifacts/" "$new_corpus" "corpus/$target" \
        -max_total_time="$SECONDS_PER_TARGET" \
        -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 \
        "${dict[@]}" >"$log" 2>&1
    status=$?
    wall=$(( $(date +%s) - t0 ))

    final_stat() { grep -m1 "^stat::$1:" "$log" | awk '{print $2}'; }
    execs="$(final_stat number_of_executed_units)"; execs="${execs:-0}"
    rate="$(final_stat average_exec_per_sec)"; rate="${rate:-0}"
    new_units="$(final_stat new_units_added)"; new_units="${new_units:-0}"
    peak_rss="$(final_stat peak_rss_mb)"; peak_rss="${peak_rss:-?}"
    cov_start="$(grep -m1 -E '[[:space:]]INITED[[:space:]]' "$log" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')"
    cov_end="$(grep -E '[[:space:]](DONE|NEW|REDUCE|pulse|INITED)[[:space:]]' "$log" | tail -1 | sed -n 's/.* cov: \([0-9]*\).*/\1/p')"
    total_execs=$(( total_execs + execs ))

    new_artifacts=()
    while IFS= read -r f; do
        [ -n "$f" ] && ! grep -qxF "$f" <<<"$before" && new_artifacts+=("$artifacts/$f")
    done < <(ls -A "$artifacts")

    crashes=${#new_artifacts[@]}
    if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes="?"   # libFuzzer failed without writing an artifact
    fi
    line="$(printf '%-18s executions %10s  exec/s %7s  cov %5s -> %-5s  new inputs %5s  peak RSS %5s MB  crashes %s  (%ss)' \
        "$target" "$execs" "$rate" "${cov_start:-?}" "${cov_end:-?}" "$new_units" "$peak_rss" "$crashes" "$wall")"
    summary+=("$line")
    echo "$line"

    if [ "$status" -ne 0 ] || [ ${#new_artifacts[@]} -gt 0 ]; then
        failed=1
        echo "---- $target FAILED (libFuzzer exit $status); end of its log:"
        grep -v '# Uses:' "$log" | tail -40
        for a in "${new_artifacts[@]}"; do
            echo "artifact:  $a"
            echo "reproduce: (cd $FUZZ_DIR && cargo +nightly fuzz run -a $target $a)"
            echo "minimize:  (cd $FUZZ_DIR && cargo +nightly fuzz tmin -a $target $a)"
        done
        echo "----"
    fi
    if [ -n "${FUZZ_KEEP_CORPUS:-}" ]; then
        mkdir -p "$FUZZ_KEEP_CORPUS/$target"
        cp -n "$new_corpus"/* "$FUZZ_KEEP_CORPUS/$target/" 2>/dev/null || true
    fi
done

echo
echo "== fuzz summary: ${SECONDS_PER_TARGET}s per target, build ${build_seconds}s, total $(( $(date +%s) - started ))s"
for line in "${summary[@]}"; do echo "$line"; done
echo "total executions: $total_execs"
if [ "$failed" -ne 0 ]; then
    echo "RESULT: FAILED (a target crashed, hung, leaked or ran out of memory; see above)"
    exit 1
fi
echo "RESULT: ok (no crash, no timeout, no out-of-memory)"

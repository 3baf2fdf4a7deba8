#!/usr/bin/env bash
# mailforge's delivery against acceptance on a many-core machine with no network (issue 21).
# One command, under 8 minutes; see bench/device/README.md. Tables go to $OUT.
#   BENCH_DEVICE_QUICK=1  tiny parameters: proves the script end to end in a minute or two
#   PYTHON                the interpreter (default /opt/torch/.venv/bin/python3)
#   CC                    the C compiler for the Cython core (default /usr/bin/gcc)
#   BENCH_DEVICE_PROFILE  seconds of py-spy (its wheel carried in .whl/) over the whole server
#                         tree during the first sweep's first point; raw stacks to $OUT
#   BENCH_DEVICE_TUNE     bench.tune's arguments instead of the two sweeps below, e.g.
#                         "--workers 8 --delivery-workers 4,8 --set queue.in_flow_delay=0"
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON:-/opt/torch/.venv/bin/python3}
export CC=${CC:-/usr/bin/gcc}
OUT=${OUT:-$REPO/device-out}
QUICK=${BENCH_DEVICE_QUICK:-0}
# The whole script stays under 8 minutes: the tuning sweep gets what is left of this budget.
BUDGET=${BENCH_DEVICE_BUDGET:-450}
STARTED=$SECONDS
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mailforge-device.XXXXXX")
SINK_PID=
cleanup() {
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

log() { echo "[$(date +%T) +$((SECONDS - STARTED))s] $*" | tee -a "$OUT/run.log" >&2; }

log "machine: $(nproc) cores, $(uname -r), $("$PYTHON" -V 2>&1), work dir $WORK"
df -T "$WORK" | tee -a "$OUT/run.log" >&2

# 1. Runtime dependencies the image lacks, from the wheels carried in .whl/ (private dir).
MISSING=$("$PYTHON" - "$REPO"/.whl/*.whl <<'EOF'
import importlib.metadata
import sys
for wheel in sys.argv[1:]:
    try:
        importlib.metadata.version(wheel.rsplit("/", 1)[-1].split("-")[0])
    except importlib.metadata.PackageNotFoundError:
        print(wheel)
EOF
)
log "installing into $WORK/site the wheels this Python lacks: ${MISSING:-none}"
if [ -n "$MISSING" ]; then
    # shellcheck disable=SC2086  # one wheel path per word
    "$PYTHON" -m pip install --quiet --no-index --no-deps --target "$WORK/site" $MISSING
fi
export PYTHONPATH="$REPO/src:$REPO:$WORK/site"

# 2. The Cython core, built in place with the system's compiler.
log "building the Cython core with $CC"
(cd "$REPO" && "$PYTHON" setup.py --quiet build_ext --inplace --build-temp "$WORK/build") \
    >>"$OUT/build.log" 2>&1
IMPLEMENTATION=$("$PYTHON" -c 'from mailforge import speedups; print(speedups.IMPLEMENTATION)')
log "mailforge speedups: $IMPLEMENTATION"
mkdir -p "$WORK/bin"
printf '#!/bin/sh\nexec "%s" -m mailforge "$@"\n' "$PYTHON" >"$WORK/bin/mailforge"

# 3. Postfix's smtp-source and smtp-sink from the .debs, unpacked here (never into /) and run
#    through the unpacked glibc's loader with the unpacked libraries.
log "unpacking $(ls "$REPO"/.debs/*.deb | wc -l) .debs"
mkdir -p "$WORK/root" "$WORK/ar"
for deb in "$REPO"/.debs/*.deb; do
    if command -v dpkg-deb >/dev/null; then
        dpkg-deb -x "$deb" "$WORK/root"
    else  # a .deb is an ar archive around data.tar.*
        (cd "$WORK/ar" && rm -f data.tar.* && ar x "$deb" && tar -xf data.tar.* -C "$WORK/root")
    fi
done
LOADER="$WORK/root/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
LIBS="$WORK/root/usr/lib/postfix:$WORK/root/lib/x86_64-linux-gnu:$WORK/root/usr/lib/x86_64-linux-gnu"
for tool in smtp-source smtp-sink; do
    printf '#!/bin/sh\nexec "%s" --library-path "%s" "%s" "$@"\n' \
        "$LOADER" "$LIBS" "$WORK/root/usr/sbin/$tool" >"$WORK/bin/$tool"
done
chmod +x "$WORK/bin"/*
export PATH="$WORK/bin:$PATH"
export TMPDIR="$WORK"  # the servers' data dirs: on the disk the work dir is on

if [ "$QUICK" = 1 ]; then
    CEILING=(-m 500 -s 10) FSRATE=(--writers 1,2 --seconds 0.5)
    TUNE=(--workers 1,2 --delivery-workers 1,2 --mailboxes 1,20 --clients 8 --messages 200
          --client-processes 2 --deliver-timeout 20)
    TUNE_MORE=(--workers 1 --delivery-workers 1 --mailboxes 1 --clients 4 --messages 100
               --client-processes 1 --deliver-timeout 20)
else
    CEILING=(-m 20000 -s 200) FSRATE=(--writers 1,2,4,8,16 --seconds 2)
    # The issue's claim first (8 SMTP workers, delivery 2/4/8, 1 and 1,000 mailboxes), then the
    # scaling table's other SMTP worker counts: the whole product does not fit the budget.
    TUNE=(--workers 8 --delivery-workers 2,4,8 --mailboxes 1,1000 --clients 200
          --messages 6000 --client-processes 4 --deliver-timeout 20)
    TUNE_MORE=(--workers 1,4,12,16 --delivery-workers 4 --mailboxes 1 --clients 200
               --messages 6000 --client-processes 4 --deliver-timeout 20)
fi

# 4. The SMTP ceiling of this machine: smtp-source into smtp-sink (keeps nothing).
PORT=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
smtp-sink -u nobody "127.0.0.1:$PORT" 1024 >/dev/null 2>&1 &
SINK_PID=$!
sleep 0.5
t0=$(date +%s.%N)
timeout 60 smtp-source -l 1024 "${CEILING[@]}" -f load@client.bench.test -t bench1@bench.test \
    -M client.bench.test "127.0.0.1:$PORT" >/dev/null 2>>"$OUT/run.log" || log "smtp-source: exit $?"
t1=$(date +%s.%N)
kill "$SINK_PID" 2>/dev/null || true
SINK_PID=
"$PYTHON" -c 'import sys; t0, t1, n = map(float, sys.argv[1:4]); print(f"smtp-source -> smtp-sink (SMTP ceiling, a new connection per message): {n / (t1 - t0):,.0f} msg/s")' \
    "$t0" "$t1" "${CEILING[1]}" | tee "$OUT/ceiling.txt" >&2

# 5. The file system's own rate (create + write + fdatasync + rename), 1 to 16 writers.
log "bench.fsrate ${FSRATE[*]}"
(cd "$REPO" && "$PYTHON" -m bench.fsrate "${FSRATE[@]}" --dir "$WORK") | tee "$OUT/fsrate.txt" >&2

if [ -n "${BENCH_DEVICE_TUNE:-}" ]; then
    read -r -a TUNE <<<"$BENCH_DEVICE_TUNE"
    TUNE_MORE=()
fi

# 6. Accepted against delivered msg/s per (SMTP workers, delivery workers, mailboxes): the
#    issue's claim gets two thirds of what is left, the other worker counts the rest.
if [ -n "${BENCH_DEVICE_PROFILE:-}" ]; then
    (   # the first `serve` of the sweep, once it has run a while under load
        until PID=$(pgrep -f -o 'mailforge .*serve'); do sleep 0.5; done
        sleep 8
        log "py-spy of $PID and its children for ${BENCH_DEVICE_PROFILE}s"
        "$WORK/site/bin/py-spy" record -p "$PID" --subprocesses --nonblocking -r 100 \
            -d "$BENCH_DEVICE_PROFILE" -f raw -o "$OUT/profile.txt" >>"$OUT/run.log" 2>&1 \
            || log "py-spy: exit $?"
    ) &
fi
LEFT=$((BUDGET - (SECONDS - STARTED)))
log "bench.tune ${TUNE[*]} (timeout $((LEFT * 2 / 3))s)"
(cd "$REPO" && "$PYTHON" -m bench.tune --protocols smtp --threads 8 "${TUNE[@]}" \
    --timeout "$((LEFT * 2 / 3))" --out "$OUT/tuning.png") >"$OUT/tune.txt" 2>>"$OUT/run.log" \
    || log "bench.tune: exit $?"
cat "$OUT/tune.txt" >&2
LEFT=$((BUDGET - (SECONDS - STARTED)))
if [ "$LEFT" -gt 30 ] && [ "${#TUNE_MORE[@]}" -gt 0 ]; then
    log "bench.tune ${TUNE_MORE[*]} (timeout ${LEFT}s)"
    (cd "$REPO" && "$PYTHON" -m bench.tune --protocols smtp --threads 8 "${TUNE_MORE[@]}" \
        --timeout "$LEFT" --out "$OUT/tuning-more.png") >"$OUT/tune-more.txt" 2>>"$OUT/run.log" \
        || log "bench.tune: exit $?"
    cat "$OUT/tune-more.txt" >&2
fi
log "done; tables in $OUT"

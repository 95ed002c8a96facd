#!/usr/bin/env bash
# Profiling helper for issue #18 (see the README, "Cost at the operating point"): one bounded `run --once` of BIN against a
# stand-in on 127.0.0.1, RATE deletions/s (1000000 = full speed), ROWS rows, log level LEVEL;
# MODE perf (PERFOPTS, e.g. "-e sched:sched_wakeup --call-graph dwarf,16384"), strace, or none
# (/usr/bin/time: CPU and context switches of the whole process). Env: CONC, BATCH, BURST.
# Usage: prof.sh BIN RATE ROWS LEVEL [perf|strace|none] TAG
# One bounded run --once against a stand-in on 127.0.0.1; prints CPU and context switches per deletion.
set -euo pipefail
BIN=$1 RATE=$2 ROWS=$3 LEVEL=$4 MODE=${5:-none} TAG=${6:-run}
D=${PROF_DIR:-/tmp/reaper-prof}/$TAG; rm -rf "$D"; mkdir -p "$D"
PORT=$(( 20000 + RANDOM % 20000 ))
"$BIN" stand-in --listen 127.0.0.1:$PORT --apikey k > "$D/standin.log" 2>&1 &
SPID=$!
trap 'kill $SPID 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$PORT/__standin/stats" && break; sleep 0.1; done
export SESSION_REAPER_DATABASE__URL="sqlite://$D/r.db" SESSION_REAPER_API__BASE_URL="http://127.0.0.1:$PORT" SESSION_REAPER_API__APIKEY=k
export SESSION_REAPER_WORKER__CONCURRENCY=${CONC:-64} SESSION_REAPER_WORKER__BATCH_SIZE=${BATCH:-256}
export SESSION_REAPER_WORKER__RATE_PER_SECOND=$RATE SESSION_REAPER_WORKER__BURST=${BURST:-20} SESSION_REAPER_LOG__LEVEL=$LEVEL
"$BIN" migrate > /dev/null 2>&1
seq 1 "$ROWS" | sed 's/^/1s/' | "$BIN" enqueue > /dev/null 2>&1
LIMIT=$(( 60 + ROWS / (RATE < 1000 ? RATE : 1000) * 2 ))
case $MODE in
  perf) timeout $LIMIT perf record ${PERFOPTS:--F 999 -g} -o "$D/perf.data" -- "$BIN" run --once 2> "$D/daemon.log" > /dev/null & ;;
  strace) timeout $LIMIT strace -f -c -o "$D/strace.txt" "$BIN" run --once 2> "$D/daemon.log" > /dev/null & ;;
  *) timeout $LIMIT /usr/bin/time -f "TIME %e %U %S %w %c %M" -o "$D/time.txt" "$BIN" run --once 2> "$D/daemon.log" > /dev/null & ;;
esac
WPID=$!
sleep 0.3
DPID=$(pgrep -P $WPID -n || true); [ "$MODE" = perf ] && DPID=$(pgrep -P "$DPID" -n || echo "$DPID")
[ "$MODE" = none ] && DPID=$(pgrep -P "$DPID" -n || echo "$DPID")
# sample every thread's switches until exit (last sample before exit kept)
last=""
while kill -0 "$DPID" 2>/dev/null; do
  s=$(for t in /proc/$DPID/task/*; do c=$(cat $t/comm 2>/dev/null); v=$(awk '/^voluntary/{print $2}' $t/status 2>/dev/null); n=$(awk '/^nonvoluntary/{print $2}' $t/status 2>/dev/null); echo "$c $v $n"; done; awk '{print "CPU", $14, $15}' /proc/$DPID/stat 2>/dev/null || true)
  [ -n "$s" ] && last=$s
  sleep 0.2
done
wait $WPID || echo "exit $?"
echo "$last" > "$D/switches.txt"
DEL=$(sqlite3 "$D/r.db" "select count(*) from reaper_sessions where state='deleted'")
echo "deleted $DEL"
awk -v n="$DEL" '$1=="CPU"{t=$2+$3; printf "cpu_ticks %d  cpu_ms_per_deletion(approx, last sample) %.3f\n", t, t*10/n; next} {c[$1]+=$2; nv[$1]+=$3; V+=$2; N+=$3} END{for(k in c) printf "  %-16s vol %7d  nonvol %6d\n", k, c[k], nv[k]; printf "total vol %d (%.2f/deletion) nonvol %d (%.2f/deletion)\n", V, V/n, N, N/n}' "$D/switches.txt"
[ -f "$D/time.txt" ] && awk -v n="$DEL" '$1=="TIME"{printf "wall %.2f s user %.2f sys %.2f  CPU per deletion %.3f ms  vol %d (%.2f/del) invol %d (%.2f/del) maxrss %d KiB\n", $2,$3,$4,($3+$4)*1000/n,$5,$5/n,$6,$6/n,$7}' "$D/time.txt"

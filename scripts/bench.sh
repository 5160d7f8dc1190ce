#!/usr/bin/env bash
# bench.sh - loopback benchmark: luahook next to an nginx `return 200;` ceiling.
#
#   scripts/bench.sh                                  # everything, ~4 min
#   DURATION=5 REPS=2 WORKLOADS="W1 W3" scripts/bench.sh
#
# What it does: installs wrk and nginx (scripts/setup.sh), builds luahook
# (scripts/build.sh), starts every target on its own 127.0.0.1 port, then for
# each workload warms each target up and measures them alternately (the order
# rotates every repetition, so drift on a shared machine hits both alike).
# Targets run pinned to CPU $SERVER_CPU, wrk (one thread) to CPU $CLIENT_CPU;
# with fewer than 2 CPUs both run unpinned.
#
# Targets (bench/ holds their files):
#   ceiling   nginx, 1 process, `return 200;` (bench/nginx-ceiling.conf.in)
#   luahook        build/luahook run bench/handler.lua --dedup-window 0
#   luahook_call   the same plus one http.post per event to the ceiling's nginx
#                  (bench/handler-outbound.lua)
# Workloads (keep-alive POSTs to /api/events, wrk -t1 --latency):
#   W1  bench/body1.json  (1 event)    $CONNS connections       throughput
#   W2  bench/body10.json (10 events)  $CONNS connections       batch throughput
#   W3  bench/body1.json  (1 event)    $LAT_CONNS connections   latency
#
# Knobs (environment):
#   DURATION (10)  seconds per measured run     REPS (3)       runs per target and workload
#   WARMUP (3)     seconds of warm-up per target and workload (0 = none)
#   WORKLOADS ("W1 W2 W3")   CONNS (50)   LAT_CONNS (10)
#   TARGETS ("ceiling luahook luahook_call")   SECTIONS ("throughput reload")
#   RELOADS (20): saves in the reload section   BASE_PORT (18180): target i listens on BASE_PORT+i
#   SERVER_CPU (0)  CLIENT_CPU (1)   SKIP_BUILD (0; 1 = skip setup.sh and build.sh)
#   QUIET_MAX (15)  QUIET_WAIT (300): before each run, wait until other processes
#                  use at most QUIET_MAX % of one core; all waits together last at
#                  most QUIET_WAIT s (then it measures anyway: see the "other" column)
#   OTHER_MAX (10)  RETRIES (2): a run during which other processes used more than
#                  OTHER_MAX % of one core is "disturbed" and done again (at most
#                  RETRIES more times, while QUIET_WAIT is not spent); medians use the
#                  undisturbed runs when there are any
#   OUT_DIR (bench-results/<timestamp>)
#
# Output: OUT_DIR/table.md (also printed), runs.tsv (one line per run),
# raw/*.txt (wrk output), logs/*.log (server output), env.txt (machine, versions).
# Exit status: 0, or 1 when something failed or a run saw socket errors / non-2xx.
#
# Sections: throughput (the table of targets x workloads) and reload (the time from
# saving the handler to the new code serving, under load; bench/reload.mjs).
# Extending it:
#   - a new target: define target_NAME below (it must `exec` a server listening
#     on 127.0.0.1:$PORT that answers 200 to a POST of bench/body1.json) and add
#     NAME to TARGETS; it gets a row per workload and a ratio to the ceiling.
#   - a new workload: add a case to workload_info.
#   - a new kind of measurement: define section_NAME (it may use start_target,
#     stop_target, run_wrk and measure, and appends markdown to "$TABLE") and add
#     NAME to SECTIONS (default "throughput").
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench

DURATION=${DURATION:-10}
REPS=${REPS:-3}
WARMUP=${WARMUP:-3}
WORKLOADS=${WORKLOADS:-"W1 W2 W3"}
CONNS=${CONNS:-50}
LAT_CONNS=${LAT_CONNS:-10}
TARGETS=${TARGETS:-"ceiling luahook luahook_call"}
SECTIONS=${SECTIONS:-"throughput reload"}
BASE_PORT=${BASE_PORT:-18180}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SKIP_BUILD=${SKIP_BUILD:-0}
QUIET_MAX=${QUIET_MAX:-15}
QUIET_WAIT=${QUIET_WAIT:-300}
OTHER_MAX=${OTHER_MAX:-10}
RETRIES=${RETRIES:-2}
OUT_DIR=${OUT_DIR:-$ROOT/bench-results/$(date +%Y%m%d-%H%M%S)}
URL_PATH=/api/events
LUAHOOK=${BUILD_DIR:-$ROOT/build}/luahook

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for k in DURATION REPS WARMUP CONNS LAT_CONNS BASE_PORT QUIET_MAX QUIET_WAIT OTHER_MAX RETRIES; do
  [[ ${!k} =~ ^[0-9]+$ ]] || die "$k must be a whole number (got '${!k}')"
done
(( DURATION > 0 && REPS > 0 && CONNS > 0 && LAT_CONNS > 0 )) || die "DURATION, REPS, CONNS and LAT_CONNS must be > 0"

# ------------------------------------------------------------------ cleanup
TMP=""
WRK_PID=""
declare -A TPID=() TPORT=()

cleanup() {
  local name
  [[ -n "$WRK_PID" ]] && kill -TERM "$WRK_PID" 2>/dev/null && wait "$WRK_PID" 2>/dev/null
  for name in "${!TPID[@]}"; do stop_target "$name"; done
  [[ -n "$TMP" ]] && rm -rf "$TMP"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# ------------------------------------------------------------------ setup and build
if [[ "$SKIP_BUILD" != 1 ]]; then
  LUAHOOK_SETUP_EXTRA="${LUAHOOK_SETUP_EXTRA:+$LUAHOOK_SETUP_EXTRA }wrk nginx" \
    "$ROOT/scripts/setup.sh" || die "scripts/setup.sh failed"
  log "building luahook (scripts/build.sh)"
  "$ROOT/scripts/build.sh" || die "scripts/build.sh failed"
fi
for tool in wrk nginx curl awk; do
  command -v "$tool" >/dev/null || die "missing $tool (run without SKIP_BUILD=1 to install it)"
done
[[ -x "$LUAHOOK" ]] || die "no luahook binary at $LUAHOOK"

PINNED=0
if (( $(nproc) >= 2 )) && command -v taskset >/dev/null &&
   taskset -c "$SERVER_CPU,$CLIENT_CPU" true 2>/dev/null && [[ "$SERVER_CPU" != "$CLIENT_CPU" ]]; then
  PINNED=1
  CLIENT_PIN=(taskset -c "$CLIENT_CPU")
else
  log "fewer than 2 usable CPUs (or no taskset): server and wrk run unpinned"
  CLIENT_PIN=()
fi

mkdir -p "$OUT_DIR/raw" "$OUT_DIR/logs" || die "cannot create $OUT_DIR"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/luahook-bench.XXXXXX") || die "mktemp failed"
TSV=$OUT_DIR/runs.tsv
TABLE=$OUT_DIR/table.md
printf 'target\tworkload\tconns\trep\trps\tevents_s\tp50_us\tp99_us\tp999_us\tpeak_rss_kb\terrors\tnon2xx\trequests\tsrv_cpu_pct\twrk_cpu_pct\tother_cpu_pct\tdisturbed\n' > "$TSV"
: > "$TABLE"

# ------------------------------------------------------------------ targets
# target_NAME runs in a subshell that is already pinned; it must exec the server
# so that the PID bench.sh holds is the server's. $PORT and $TDIR (a private
# scratch directory) are set.
target_ceiling() {
  sed -e "s|@PORT@|$PORT|g" -e "s|@DIR@|$TDIR|g" "$BENCH/nginx-ceiling.conf.in" > "$TDIR/nginx.conf" || exit 1
  local elog=()   # -e (nginx >= 1.19.5): no start-up message to the packaged error log
  nginx -h 2>&1 | grep -q -- '-e filename' && elog=(-e "$TDIR/error.log")
  exec nginx -p "$TDIR" "${elog[@]}" -c "$TDIR/nginx.conf" -g 'daemon off; master_process off;'
}

# wrk sends the same body again and again, so its events have the same ids: with
# the dedup window on, luahook would skip every handler after the first request.
# The other receivers run theirs every time, and so must luahook here.
target_luahook() {
  exec "$LUAHOOK" run "$BENCH/handler.lua" --listen "127.0.0.1:$PORT" --log-level warn \
    --dedup-window 0
}

# The same handler plus one outbound POST per event, to the ceiling's nginx (which
# then shares CPU $SERVER_CPU with luahook: read the row as "what a call costs on
# one core").
target_luahook_call() {
  local sink=${TPORT[ceiling]:-}
  [[ -n "$sink" ]] || { echo "luahook_call needs the ceiling target as its sink" >&2; exit 1; }
  SINK_URL="http://127.0.0.1:$sink/sink" exec "$LUAHOOK" run "$BENCH/handler-outbound.lua" \
    --listen "127.0.0.1:$PORT" --log-level warn --dedup-window 0
}

i=0
for name in $TARGETS; do
  declare -F "target_$name" >/dev/null || die "unknown target '$name' (define target_$name)"
  TPORT[$name]=$((BASE_PORT + i)); i=$((i + 1))
done

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for name in $TARGETS; do   # refuse to run before starting anything
  port_open "${TPORT[$name]}" && die "port ${TPORT[$name]} (for $name) is already taken; set BASE_PORT"
done

probe() {   # probe PORT -> HTTP status of one POST of body1.json
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST \
    -H 'Content-Type: application/json' -H 'aeg-event-type: Notification' \
    --data-binary "@$BENCH/body1.json" "http://127.0.0.1:$1$URL_PATH"
}

# start_target NAME: start it pinned on its port, wait until it accepts, check
# that it answers 200 to one delivery. Exits the script on failure.
start_target() {
  local name=$1 port=${TPORT[$1]} pid code n
  port_open "$port" && die "port $port (for $name) is already taken; set BASE_PORT"
  mkdir -p "$TMP/$name"
  (
    [[ $PINNED == 1 ]] && taskset -pc "$SERVER_CPU" "$BASHPID" >/dev/null
    PORT=$port TDIR=$TMP/$name "target_$name"
  ) >"$OUT_DIR/logs/$name.log" 2>&1 &
  pid=$!
  TPID[$name]=$pid
  for n in $(seq 1 100); do   # at most ~10 s
    port_open "$port" && break
    kill -0 "$pid" 2>/dev/null || { cat "$OUT_DIR/logs/$name.log" >&2; die "$name exited during start-up"; }
    sleep 0.1
  done
  port_open "$port" || die "$name did not listen on 127.0.0.1:$port within 10 s"
  code=$(probe "$port")
  if [[ "$code" != 200 ]]; then
    sleep 0.2
    kill -0 "$pid" 2>/dev/null || { wait "$pid"; die "$name died (exit status $?) on a probe delivery; see $OUT_DIR/logs/$name.log"; }
    die "$name answered '$code' (not 200) to a probe delivery; see $OUT_DIR/logs/$name.log"
  fi
  log "started $name: pid $pid, 127.0.0.1:$port, idle RSS $(rss_kb VmRSS "$pid") kB"
}

# stop_target NAME: TERM, wait up to 5 s, then KILL. Only touches the PID it started.
stop_target() {
  local name=$1 pid=${TPID[$1]:-} n
  [[ -n "$pid" ]] || return 0
  kill -TERM "$pid" 2>/dev/null
  for n in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then log "$name (pid $pid) ignored TERM, killing it"; kill -KILL "$pid" 2>/dev/null; fi
  wait "$pid" 2>/dev/null
  unset "TPID[$name]"
}

# server_ticks NAME -> CPU ticks of the server under test; luahook_call's sink (the
# ceiling's nginx) is part of what it measures, so its CPU is counted with it.
server_ticks() {
  local t a b
  read -r a t <<< "$(cpu_ticks "${TPID[$1]}")"
  if [[ $1 == luahook_call && -n "${TPID[ceiling]:-}" ]]; then
    read -r b t <<< "$(cpu_ticks "${TPID[ceiling]}")"
    a=$(( ${a:-0} + ${b:-0} ))
  fi
  echo "${a:-0} 0"
}

rss_kb() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$2/status" 2>/dev/null || echo 0; }

# cpu_ticks PID -> "own children": utime+stime, and cutime+cstime (reaped children)
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13, $14 + $15 }'; }
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
# busy_ticks -> user+nice+system CPU time of the whole machine (all CPUs) from /proc/stat
busy_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4; exit }' /proc/stat; }

# wait_quiet: before a measured run, wait until other processes use at most
# QUIET_MAX % of one core (over 1 s; our targets are idle then). The waits of a
# session share a budget of QUIET_WAIT s; once it is spent, runs start at once
# and the table's "other" CPU column shows what they shared the machine with.
QUIET_LEFT=$QUIET_WAIT
wait_quiet() {
  local waited=0 a b pct
  while :; do
    a=$(busy_ticks); sleep 1; b=$(busy_ticks)
    pct=$(( (b - a) * 100 / CLK_TCK ))
    (( pct <= QUIET_MAX )) && { (( waited )) && log "quiet after ${waited}s"; return 0; }
    if (( QUIET_LEFT <= 0 )); then
      (( waited )) && log "QUIET_WAIT (${QUIET_WAIT}s) spent, other processes use ${pct}% CPU: measuring anyway"
      return 0
    fi
    (( waited == 0 )) && log "other processes use ${pct}% CPU: waiting for a quiet machine (${QUIET_LEFT}s of QUIET_WAIT left)"
    sleep 2; waited=$((waited + 3)); QUIET_LEFT=$((QUIET_LEFT - 3))
  done
}

# ------------------------------------------------------------------ workloads
workload_info() {   # workload_info W -> WL_BODY WL_EVENTS WL_CONNS
  case "$1" in
    W1) WL_BODY=$BENCH/body1.json;  WL_EVENTS=1;  WL_CONNS=$CONNS ;;
    W2) WL_BODY=$BENCH/body10.json; WL_EVENTS=10; WL_CONNS=$CONNS ;;
    W3) WL_BODY=$BENCH/body1.json;  WL_EVENTS=1;  WL_CONNS=$LAT_CONNS ;;
    *) return 1 ;;
  esac
}

# run_wrk SECONDS CONNS BODY PORT OUTFILE: one wrk run (one thread, pinned), in the
# background so that a signal reaches the trap at once; bounded by timeout.
run_wrk() {
  local secs=$1 conns=$2 body=$3 port=$4 out=$5 rc
  BODY=$body timeout $((secs + 30)) "${CLIENT_PIN[@]}" wrk -t1 -c"$conns" -d"${secs}s" \
    --timeout 5s --latency -s "$BENCH/wrk-post.lua" "http://127.0.0.1:$port$URL_PATH" >"$out" 2>&1 &
  WRK_PID=$!
  wait "$WRK_PID"; rc=$?
  WRK_PID=""
  return $rc
}

# measure NAME WL REP [ATTEMPT]: one measured run of target NAME (already started) with
# workload WL; appends a line to runs.tsv. Returns 2 when the run was disturbed
# (other processes used more than OTHER_MAX % CPU during it), else 0.
measure() {
  local name=$1 wl=$2 rep=$3 pid=${TPID[$1]} port=${TPORT[$1]} raw line hwm s0 s1 w0 w1 m0 m1 x
  workload_info "$wl" || die "unknown workload $wl"
  raw=$OUT_DIR/raw/$name-$wl-$rep${4:+-retry$4}.txt
  echo 5 > "/proc/$pid/clear_refs" 2>/dev/null   # reset VmHWM to the current RSS
  # CPU used by the server, and by wrk: it is the only child this shell reaps
  # during the run, so it shows up in the shell's children times.
  read -r s0 x <<< "$(server_ticks "$name")"; read -r x w0 <<< "$(cpu_ticks $$)"; m0=$(busy_ticks)
  run_wrk "$DURATION" "$WL_CONNS" "$WL_BODY" "$port" "$raw" || log "wrk exited non-zero for $name $wl #$rep"
  m1=$(busy_ticks); read -r s1 x <<< "$(server_ticks "$name")"; read -r x w1 <<< "$(cpu_ticks $$)"
  hwm=$(rss_kb VmHWM "$pid")
  kill -0 "$pid" 2>/dev/null || die "$name (pid $pid) died during $wl; see $OUT_DIR/logs/$name.log"
  line=$(grep '^BENCH ' "$raw") || die "no result from wrk for $name $wl #$rep: $(tail -3 "$raw" | tr '\n' ' ')"
  line=$(awk -v name="$name" -v wl="$wl" -v c="$WL_CONNS" -v rep="$rep" -v ev="$WL_EVENTS" -v hwm="${hwm:-0}" \
      -v srv=$(( ${s1:-0} - ${s0:-0} )) -v wrk=$(( ${w1:-0} - ${w0:-0} )) -v all=$(( ${m1:-0} - ${m0:-0} )) -v hz="$CLK_TCK" -v omax="$OTHER_MAX" '
    { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
    END {
      rps = v["requests"] / (v["duration_us"] / 1e6)
      secs = v["duration_us"] / 1e6
      other = (all > srv + wrk) ? 100 * (all - srv - wrk) / hz / secs : 0
      printf "%s\t%s\t%d\t%d\t%.1f\t%.1f\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.0f\t%.0f\t%.0f\t%d\n", name, wl, c, rep, rps, rps * ev,
        v["p50_us"], v["p99_us"], v["p999_us"], hwm,
        v["err_connect"] + v["err_read"] + v["err_write"] + v["err_timeout"], v["non2xx"], v["requests"],
        100 * srv / hz / secs, 100 * wrk / hz / secs, other, (other > omax) ? 1 : 0
    }' <<< "$line")
  echo "$line" >> "$TSV"
  awk -F'\t' '{ printf "%s %s #%s: %.0f req/s, p50 %.2f ms, p99 %.2f ms, peak RSS %.1f MiB, CPU server %d%% wrk %d%% other %d%%, errors %d, non-2xx %d%s\n",
    $1, $2, $4, $5, $7 / 1000, $8 / 1000, $10 / 1024, $14, $15, $16, $11, $12, $17 ? " (disturbed)" : "" }' <<< "$line" |
    while read -r l; do log "$l"; done
  [[ $(cut -f17 <<< "$line") == 1 ]] && return 2
  return 0
}

# ------------------------------------------------------------------ table
render_throughput() {   # runs.tsv -> markdown
  # Medians over the undisturbed runs of each row (over all of them if every run
  # was disturbed); errors and requests count every run.
  awk -F'\t' '
    function median(s,   a, n, i, j, t) {
      n = split(s, a, " ")
      for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
      return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    FNR == 1 { next }
    NR == FNR { if ($17 == 0) clean[$1 SUBSEP $2]++; next }   # first pass: count undisturbed runs
    {
      k = $1 SUBSEP $2
      if (!(k in total)) { order[++nk] = k; conns[k] = $3 }
      total[k]++; err[k] += $11; bad[k] += $12; reqs += $13
      if ($17 == 1 && (k in clean)) next
      n[k]++; rps[k] = rps[k] " " $5; evs[k] = evs[k] " " $6; p50[k] = p50[k] " " $7
      p99[k] = p99[k] " " $8; p999[k] = p999[k] " " $9; hwm[k] = hwm[k] " " $10
      scpu[k] = scpu[k] " " $14; wcpu[k] = wcpu[k] " " $15; ocpu[k] = ocpu[k] " " $16
      if (!(k in lo) || $5 + 0 < lo[k]) lo[k] = $5 + 0
      if (!(k in hi) || $5 + 0 > hi[k]) hi[k] = $5 + 0
    }
    END {
      for (i = 1; i <= nk; i++) { k = order[i]; m[k] = median(rps[k]) }
      print "| target | workload | conns | req/s | events/s | p50 ms | p99 ms | p99.9 ms | peak RSS MiB | errors | non-2xx | vs ceiling | runs | spread % | CPU % server / wrk / other |"
      print "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
      for (i = 1; i <= nk; i++) {
        k = order[i]; split(k, f, SUBSEP); c = "ceiling" SUBSEP f[2]
        ratio = (c in m && m[c] > 0) ? sprintf("%.2f", m[k] / m[c]) : "-"
        runs = !(k in clean) ? n[k] " noisy" : (n[k] == total[k]) ? n[k] : n[k] " of " total[k]
        if (!(k in clean)) noisy++
        printf "| %s | %s | %d | %.0f | %.0f | %.2f | %.2f | %.2f | %.1f | %d | %d | %s | %s | %.0f | %.0f / %.0f / %.0f |\n",
          f[1], f[2], conns[k], m[k], median(evs[k]), median(p50[k]) / 1000, median(p99[k]) / 1000,
          median(p999[k]) / 1000, median(hwm[k]) / 1024, err[k], bad[k], ratio, runs,
          (m[k] > 0 ? 100 * (hi[k] - lo[k]) / m[k] : 0), median(scpu[k]), median(wcpu[k]), median(ocpu[k])
        if (f[1] != "ceiling" && ratio != "-") sum[f[1]] = sum[f[1]] (sum[f[1]] == "" ? "" : ", ") f[2] " " ratio
        toterr += err[k] + bad[k]
      }
      print ""
      for (t in sum) printf "%s / ceiling, median req/s: %s\n\n", t, sum[t]
      if (noisy) printf "Noise: %d row(s) had no undisturbed run (\"noisy\"): do not trust their numbers.\n\n", noisy
      if (toterr == 0) printf "Responses: all %d requests sent in measured runs got a 2xx answer; no socket errors.\n", reqs
      else printf "Responses: WARNING: %d socket errors + non-2xx answers (see raw/ and logs/).\n", toterr
    }' "$TSV" "$TSV"
}

# ------------------------------------------------------------------ sections
section_throughput() {
  local name wl rep order t attempt
  for name in $TARGETS; do start_target "$name"; done
  for wl in $WORKLOADS; do
    workload_info "$wl" || die "unknown workload '$wl' (known: W1 W2 W3)"
    if (( WARMUP > 0 )); then
      for name in $TARGETS; do
        log "$name $wl: warm-up ${WARMUP}s"
        run_wrk "$WARMUP" "$WL_CONNS" "$WL_BODY" "${TPORT[$name]}" "$OUT_DIR/raw/$name-$wl-warmup.txt"
      done
    fi
    read -r -a order <<< "$TARGETS"
    for rep in $(seq 1 "$REPS"); do
      for t in "${order[@]}"; do
        for attempt in $(seq 0 "$RETRIES"); do
          wait_quiet
          measure "$t" "$wl" "$rep" "${attempt#0}" && break
          (( QUIET_LEFT > 0 )) || break   # the machine stays busy: retrying would not help
          (( attempt < RETRIES )) && log "  $t $wl #$rep disturbed by other processes: doing it again"
        done
      done
      order=("${order[@]:1}" "${order[0]}")   # rotate: A B, B A, ...
    done
  done
  for name in $TARGETS; do stop_target "$name"; done
  {
    echo "### Throughput and latency"
    echo
    render_throughput
  } >> "$TABLE"
}

# Reload: RELOADS saves of the handler (three save styles in turn) while four
# clients keep posting events; the time from each save to /healthz reporting the
# new generation, and every answer that was not 200 (there must be none).
section_reload() {
  local raw=$OUT_DIR/raw/reload.txt line
  command -v node >/dev/null || die "node is needed for the reload section"
  log "reload: ${RELOADS:-20} saves under load"
  node "$BENCH/reload.mjs" "$LUAHOOK" "${RELOADS:-20}" > "$raw" 2>&1 || log "reload: some requests failed"
  line=$(grep '^RESULT ' "$raw") || die "no result from bench/reload.mjs: $(tail -3 "$raw" | tr '\n' ' ')"
  {
    echo "### Reload under load"
    echo
    echo "| saves | median ms (save -> new code serving) | worst ms | requests during the saves | failed |"
    echo "|--:|--:|--:|--:|--:|"
    awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
           printf "| %s | %s | %s | %s | %s |\n", v["saves"], v["median_ms"], v["worst_ms"], v["requests"], v["failed"] }' <<< "$line"
    echo
  } >> "$TABLE"
  log "reload: $line"
}

for s in $SECTIONS; do
  declare -F "section_$s" >/dev/null || die "unknown section '$s' (define section_$s)"
done

# ------------------------------------------------------------------ main
{
  echo "date: $(date -Is)"
  echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "luahook: $("$LUAHOOK" version 2>&1 | head -1)"
  echo "nginx: $(nginx -v 2>&1)"
  echo "wrk: $(wrk -v 2>&1 | head -1)"
  echo "cpu: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "kernel: $(uname -r)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "pinned: $PINNED (server CPU $SERVER_CPU, wrk CPU $CLIENT_CPU)"
  echo "settings: DURATION=$DURATION REPS=$REPS WARMUP=$WARMUP WORKLOADS='$WORKLOADS' CONNS=$CONNS LAT_CONNS=$LAT_CONNS TARGETS='$TARGETS' SECTIONS='$SECTIONS'"
} > "$OUT_DIR/env.txt"
log "results -> $OUT_DIR"

for s in $SECTIONS; do "section_$s"; done

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT_DIR/env.txt"
if (( PINNED )); then pin="server pinned to CPU $SERVER_CPU, wrk (1 thread) to CPU $CLIENT_CPU"
else pin="unpinned (fewer than 2 CPUs), wrk 1 thread"; fi
{
  echo
  echo "Medians of $REPS runs of ${DURATION}s per row (warm-up ${WARMUP}s), targets alternating; $pin."
  echo "runs = runs used; \"2 of 3\" = one run was disturbed (other processes > ${OTHER_MAX}% CPU) and left out."
  echo "spread % = (max - min) / median of req/s; errors = socket errors (connect/read/write/timeout) and non-2xx ="
  echo "answers with status >= 400 as wrk counts them, both summed over runs; CPU % = CPU time / wall"
  echo "time (100 = one core) of the server, of wrk, and of everything else on the machine (user+system; other"
  echo "processes). A high 'other' means the run shared its CPUs and its numbers are noise. $(grep '^git' "$OUT_DIR/env.txt")"
} >> "$TABLE"
cat "$TABLE"
grep -q '^Responses: WARNING' "$TABLE" && exit 1
exit 0

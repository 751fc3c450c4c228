#!/usr/bin/env bash
# bench/perf_lib.sh — the machinery of bench/perf_run, sourced by it and by
# bench/dcb_run (not run by itself): PostgreSQL programs as the postgres user,
# a throwaway cluster on a free port, the CPU accounting of a cluster's
# processes, one timed pgbench run with its tps, CPU, WAL and pgbench counters
# appended to $results (run_one), and the medians and paired ratios of those
# runs (summarize, msm, ratio, cell, cellr).  See bench/README.md,
# "Performance runner", for what is measured and how.
#
# The caller sets bench_name (the prefix of messages), die, work (the
# throwaway directory: sockets, scripts/, logs/), pgbin, ncpu, hz, and before
# run_one: port, pm, DB, psql_q, results, DURATION, MAX_TRIES, STREAMS, gencat,
# REPS (relay and stop_relay only for a contender named es_outbox), and
# pgbench_args (more pgbench options for every run; empty by default).
# shellcheck shell=bash disable=SC2154,SC2034

# PostgreSQL programs run as "postgres" when we are root (PostgreSQL refuses
# to run as root), as ourselves otherwise.  Ignore the caller's libpq env.
if [ "$(id -u)" -eq 0 ]; then
	as_pg() { runuser -u postgres -- env -u PGHOST -u PGPORT -u PGDATABASE -u PGUSER -u PGOPTIONS "$@"; }
else
	as_pg() { env -u PGHOST -u PGPORT -u PGDATABASE -u PGUSER -u PGOPTIONS "$@"; }
fi

# A port is "in use" when something accepts TCP connections on it or a
# PostgreSQL socket with that number exists in the usual places.
port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
	[ -e "/tmp/.s.PGSQL.$1" ] || [ -e "/var/run/postgresql/.s.PGSQL.$1" ]
}

# init_cluster DATADIR: initdb as the benchmark wants it (trust locally)
init_cluster() {
	as_pg "$pgbin/initdb" -D "$1" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
		-E UTF8 --locale=C.UTF-8 --no-sync >"$1.initdb.log" 2>&1 || { cat "$1.initdb.log" >&2; die "initdb failed"; }
}

# start_cluster DATADIR: writes the benchmark settings into an initdb'ed
# DATADIR on a free port of port_lo..port_hi (never 55432) and starts it,
# logging to DATADIR.log; sets port, pm (the postmaster's pid) and started=1.
# Uses work (the socket directory), pgbin, max_connections, preload_line and
# SHARED_BUFFERS.
start_cluster() {
	local data=$1 conf="$1/postgresql.conf" p
	port=""
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		p=$((port_lo + RANDOM % (port_hi - port_lo + 1)))
		[ "$p" -eq 55432 ] && continue
		port_in_use "$p" && continue
		sed -i '/^# es_ext perf settings/,$d' "$conf"
		cat >>"$conf" <<-EOF
	# es_ext perf settings
	port = $p
	listen_addresses = '127.0.0.1'
	unix_socket_directories = '$work'
	max_connections = $max_connections
	$preload_line
	shared_buffers = $SHARED_BUFFERS
	max_wal_size = 8GB
	min_wal_size = 1GB
	checkpoint_timeout = 30min
	checkpoint_completion_target = 0.9
	synchronous_commit = off
	jit = off
	log_checkpoints = on
	EOF
		if as_pg "$pgbin/pg_ctl" -D "$data" -l "$data.log" -w -t 60 start >/dev/null 2>&1 8>&- 9>&-; then
			port=$p
			started=1
			break
		fi
		echo "$bench_name: could not start on port $p, trying another" >&2
	done
	[ -n "$port" ] || die "could not start a cluster (see $data.log)"
	pm=$(head -n 1 "$data/postmaster.pid")
}

# --- CPU accounting ---------------------------------------------------------
# cluster_ticks: CPU ticks of the cluster's processes: the postmaster's own
# and those of its children it has reaped (cutime, cstime: every backend
# that has exited), plus the user and system ticks of its living children
# (auxiliary processes, background workers, backends still running).
cluster_ticks() {
	{ cat /proc/[0-9]*/stat 2>/dev/null || true; } | sed -E 's/ \(.*\) / /' |
		awk -v pm="$pm" '$1 == pm || $3 == pm { s += $13 + $14 + $15 + $16 } END { printf "%d\n", s }'
}
# machine_ticks: busy ticks of the whole machine (user nice system irq softirq)
machine_ticks() { awk '/^cpu / { printf "%d\n", $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
# client_backends: the process titles of the cluster's client backends
# (builtins only in the usual case: forks are slow on a loaded machine)
client_backends() {
	local c children="" title
	# the kernel's list of children when it has one (CONFIG_PROC_CHILDREN)
	if [ -r "/proc/$pm/task/$pm/children" ]; then
		read -r children <"/proc/$pm/task/$pm/children" || true
	else
		children=$({ cat /proc/[0-9]*/stat 2>/dev/null || true; } | sed -E 's/ \(.*\) / /' | awk -v pm="$pm" '$3 == pm { print $1 }')
	fi
	for c in $children; do
		title=""
		{ IFS= read -r -d '' title <"/proc/$c/cmdline"; } 2>/dev/null || true
		case $title in
		*"[local]"* | *127.0.0.1*) echo "$c $title" ;;
		esac
	done
}
# wait until the cluster has no client backend left (pgbench's exit first)
wait_backends() {
	local _
	for _ in $(seq 1 200); do
		[ -z "$(client_backends)" ] && return 0
		sleep 0.05
	done
	echo "$bench_name: WARNING: client backends still running after 10 s: $(client_backends | tr '\n' ';')" >&2
}

pgbench_args=()

loadavg() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?"; }

# run_one REP GROUP CLIENTS SYNC NAME SCRIPT BATCH [STREAMS [DB]]
run_one() {
	local rep=$1 group=$2 clients=$3 sync=$4 name=$5 script=$6 batch=$7 streams=${8:-$STREAMS} db=${9:-$DB}
	local user=postgres threads out="$work/logs/$group-$name-r$1.txt" tfile="$work/logs/$group-$name-r$1.time"
	local rc=0 tps processed failed retried aborted lsn0 lsn1 fpi0 fpi1 c0 c1 m0 m1 wal pgb_u pgb_s
	[ "$db" = message_store ] && user=message_store
	threads=$((clients < ncpu ? clients : ncpu))
	[ "$name" = es_outbox ] && psql_q -d "$DB" -c "SELECT es.es_outbox_route('account')" >/dev/null
	psql_q -d "$DB" -c CHECKPOINT
	read -r lsn0 fpi0 < <(psql_q -d "$DB" -At -F ' ' -c "SELECT pg_current_wal_lsn(), wal_fpi FROM pg_stat_wal")
	wait_backends
	c0=$(cluster_ticks)
	m0=$(machine_ticks)
	# the outbox's consumer runs during the run (its CPU and its backend's count)
	if [ "$name" = es_outbox ] && [ -x "$relay" ]; then
		"$relay" -d "host=$work port=$port user=postgres dbname=$DB" -g perf_g -b 500 -c 5 \
			>/dev/null 2>>"$work/logs/relay.log" &
		relay_pid=$!
	fi
	local TIMEFORMAT='%3U %3S'
	{ time as_pg env PGOPTIONS="-c synchronous_commit=$sync" "$pgbin/pgbench" -h "$work" -p "$port" -U "$user" \
		-n -M prepared -c "$clients" -j "$threads" -T "$DURATION" --max-tries="$MAX_TRIES" \
		-D streams="$streams" -D batch="$batch" -D gencat="$gencat" "${pgbench_args[@]}" \
		-f "$work/scripts/$script" "$db" >"$out" 2>&1; } 2>"$tfile" || rc=$?
	if [ "$name" = es_outbox ]; then
		stop_relay
	fi
	wait_backends
	m1=$(machine_ticks)
	c1=$(cluster_ticks)
	read -r lsn1 fpi1 < <(psql_q -d "$DB" -At -F ' ' -c "SELECT pg_current_wal_lsn(), wal_fpi FROM pg_stat_wal")
	wal=$(psql_q -d "$DB" -At -c "SELECT pg_wal_lsn_diff('$lsn1', '$lsn0')::bigint")
	[ "$name" = es_outbox ] && psql_q -d "$DB" -c "SELECT es.es_outbox_unroute('account')" >/dev/null
	read -r pgb_u pgb_s <"$tfile" || true
	tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$out")
	processed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
	failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")
	retried=$(sed -n 's/^number of transactions retried: \([0-9]*\).*/\1/p' "$out")
	aborted=$(grep -c 'aborted' "$out" || true)
	if [ -z "$tps" ] || [ -z "$processed" ] || [ "$processed" = 0 ] || [ "$rc" -ne 0 ] || [ "$aborted" -gt 0 ]; then
		echo "$bench_name: WARNING: $group/$name had errors (exit $rc), see below" >&2
		grep -v '^pgbench: client [0-9]* executing' "$out" | tail -n 15 >&2
		rc=$((rc == 0 ? 1 : rc))
	fi
	# group name rep clients batch sync tps processed failed retried rc wal
	# cluster_ticks machine_ticks pgbench_cpu_s fpi
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$group" "$name" "$rep" \
		"$clients" "$batch" "$sync" "${tps:-0}" "${processed:-0}" "${failed:-0}" "${retried:-0}" "$rc" \
		"${wal:-0}" "$((c1 - c0))" "$((m1 - m0))" "$(awk -v u="${pgb_u:-0}" -v s="${pgb_s:-0}" 'BEGIN { print u + s }')" \
		"$((${fpi1:-0} - ${fpi0:-0}))" >>"$results"
	awk -v g="$group" -v n="$name" -v r="$rep" -v R="$REPS" -v t="${tps:-0}" -v b="$batch" -v p="${processed:-0}" \
		-v w="${wal:-0}" -v c="$((c1 - c0))" -v hz="$hz" -v me="$bench_name" 'BEGIN {
		ev = p * b; if (ev == 0) ev = 1
		printf "%s: [rep %d/%d] %-8s %-10s %9.0f tps %9.0f events/s %7.1f µs/event %6.0f WAL B/event\n",
			me, r, R, g, n, t, t * b, c * 1e6 / hz / ev, w / ev }'
}

# summarize: derived.tsv and stats.tsv in $work from the runs in $results
summarize() {
	# derived.tsv: group name rep tps events/s cluster-CPU-µs/event
	# machine-minus-pgbench-CPU-µs/event WAL-B/event FPI/1000-events rc failed
	derived="$work/derived.tsv"
	awk -F'\t' -v OFS='\t' -v hz="$hz" '{
		ev = $8 * $5; if (ev == 0) ev = 1
		print $1, $2, $3, $7, $7 * $5, $13 * 1e6 / hz / ev, ($14 * 1e6 / hz - $15 * 1e6) / ev, $12 / ev, $16 * 1000 / ev, $11, $9
	}' "$results" >"$derived"

	# stats.tsv: group name col median min max, for every column of derived.tsv
	stats="$work/stats.tsv"
	awk -F'\t' -v OFS='\t' '
		{ k = $1 "\t" $2; n[k]++; for (c = 4; c <= 9; c++) v[k, c, n[k]] = $c }
		END {
			for (k in n) for (c = 4; c <= 9; c++) {
				m = n[k]
				for (i = 1; i <= m; i++) a[i] = v[k, c, i]
				for (i = 2; i <= m; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
				med = (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
				printf "%s\t%d\t%.6f\t%.6f\t%.6f\n", k, c, med, a[1], a[m]
			}
		}' "$derived" >"$stats"
}
# msm GROUP NAME COL -> "median min max" over the repetitions ("" when none)
msm() {
	awk -F'\t' -v g="$1" -v n="$2" -v c="$3" '$1 == g && $2 == n && $3 == c { print $4, $5, $6; exit }' "$stats"
}
# ratio GROUP A B COL -> "median min max" of A/B paired by repetition
ratio() {
	awk -F'\t' -v g="$1" -v x="$2" -v y="$3" -v c="$4" '
		$1 == g && $2 == x { a[$3] = $c }
		$1 == g && $2 == y { b[$3] = $c }
		END { for (k in a) if ((k in b) && b[k] != 0) print a[k] / b[k] }' "$derived" |
		sort -g | awk '{ a[NR] = $1 } END {
			if (NR == 0) exit
			med = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
			printf "%.4f %.4f %.4f\n", med, a[1], a[NR] }'
}
# cell GROUP NAME COL [DECIMALS] -> the median, formatted (— when not measured)
cell() {
	local m
	m=$(msm "$1" "$2" "$3")
	if [ -z "$m" ]; then echo "—"; return; fi
	awk -v m="${m%% *}" -v d="${4:-0}" 'BEGIN { s = sprintf("%." d "f", m)
		if (d == 0) { o = ""; while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) }; s = s o }
		print s }'
}
cellr() { # the median and the min–max
	local m
	m=$(msm "$1" "$2" "$3")
	[ -z "$m" ] && { echo "—"; return; }
	awk -v a="${m%% *}" -v r="${m#* }" -v d="${4:-0}" 'BEGIN { split(r, x, " ")
		printf "%." d "f (%." d "f–%." d "f)\n", a, x[1], x[2] }'
}

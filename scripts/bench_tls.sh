#!/bin/bash
# What TLS 1.3 costs the data path (issue: TLS encryption).
#
#   RMIG=build/rmig scripts/bench_tls.sh OUTDIR
#
# A sim guest of TLS_SIZE (2G) idle non-zero data, migrated over loopback
# TCP on TLS_CHANNELS (2) streams into a `recv --prealloc` destination (as
# make bench's round-1 row: the link, not the destination's fresh memory),
# plaintext (--psk-file --no-tls) and TLS (--psk-file --tls), alternating,
# TLS_RUNS (7) times each, medians compared. Without --verify: digests
# would add the same cost to both.
#
# Measured per run: round 1's bandwidth (the sender's round event); CPU per
# GiB moved on each side: the sender's summary cpu_ms (getrusage of the
# process over the migration, without the sim backend's filling of guest
# memory), the receiver's summary cpu_ms less the CPU it spent before it
# started receiving (read from /proc/PID/stat at its "listening" and
# "receiving" events: preallocation is not the data path's cost).
#
# Ceiling: AES-128-GCM (TLS_AES_128_GCM_SHA256, the suite the handshake
# picks) on one core, `openssl speed -elapsed -seconds 3 -evp aes-128-gcm`
# at 16384-byte blocks (a full TLS record's plaintext), turned into
# core-seconds per GiB; beside it, for information, AES-128-GCM as records
# use it (-aead), sealing and opening.
# Targets: the CPU TLS adds per GiB on each side, (TLS - plaintext), within
# 1.3x of the ceiling's core-s/GiB; TLS round 1 at least 0.6 of plaintext.
# Both ends share this machine's cores: the table also gives each mode's
# CPU bound, cores / (sender + receiver CPU per GiB), whose ratio caps TLS /
# plaintext where both are CPU-bound.
#
# Prints markdown on stdout and writes OUTDIR/tls.json. Exit 0 when every
# run migrated, 1 otherwise, 2 on usage errors.
set -u
[ $# -eq 1 ] || { echo "usage: RMIG=build/rmig $0 OUTDIR" >&2; exit 2; }
OUT=$1
RMIG=${RMIG:-build/rmig}
SIZE=${TLS_SIZE:-2G}
CH=${TLS_CHANNELS:-2}
RUNS=${TLS_RUNS:-7}
COOL=${TLS_COOL_S:-3}
mkdir -p "$OUT/runs" || exit 2
status=0
HZ=$(getconf CLK_TCK)
bytes=$(numfmt --from=iec "$SIZE")
gib=$(awk -v b="$bytes" 'BEGIN { print b / 1073741824 }')
psk="$OUT/psk"
(umask 077 && head -c 32 /dev/urandom >"$psk")

# The crypto ceiling: bytes per second of one core at 16384-byte blocks,
# measured once per pair of runs (this VM's speed swings): medians. Beside
# it, for information, the same cipher as TLS records use it (-aead: nonce,
# header, 16 KiB, tag for each record), sealing and opening, and what
# each core gets while every core runs it at once (taskset -c N): during
# the runs both ends keep all cores busy. On a quiet machine that costs
# about 3 % per core (3875 against 4012 MB/s); much more means something
# else is running.
cores=$(nproc)
speed_enc="openssl speed -elapsed -seconds 3 -evp aes-128-gcm"
speed_busy="openssl speed -elapsed -seconds 3 -bytes 16384 -evp aes-128-gcm"
speed_seal="openssl speed -elapsed -seconds 3 -bytes 16384 -aead -evp aes-128-gcm"
speed_open="openssl speed -elapsed -seconds 3 -bytes 16384 -aead -decrypt -evp aes-128-gcm"
speed_Bps() { $1 2>/dev/null | awk '/^AES-128-GCM/ { v = $NF; sub(/k$/, "", v); print v * 1000 }'; }
busy_Bps() { # the mean of one per core, all at once
	for c in $(seq 0 $((cores - 1))); do
		taskset -c "$c" $speed_busy 2>/dev/null | awk '/^AES-128-GCM/ { v = $NF; sub(/k$/, "", v); print v * 1000 }' &
	done
	wait
}
ceilings() {
	speed_Bps "$speed_enc" >>"$OUT/ceiling.Bps"
	speed_Bps "$speed_seal" >>"$OUT/seal.Bps"
	speed_Bps "$speed_open" >>"$OUT/open.Bps"
	busy_Bps | awk '{ s += $1 } END { if (NR) print s / NR }' >>"$OUT/busy.Bps"
}

# CPU seconds of process PID so far (utime + stime).
proc_cpu() { awk -v hz="$HZ" '{ sub(/^.*\) /, ""); printf "%.3f", ($12 + $13) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# Wait until FILE has a line with WORD, then print PID's CPU seconds.
cpu_at() { # PID FILE WORD
	grep -m1 -q -- "$3" < <(tail --pid="$1" -n +1 -f "$2" 2>/dev/null)
	proc_cpu "$1"
}

send_cmd() { echo "$RMIG send --json --transport tcp --channels $CH --no-verify --psk-file K $1 --backend sim:size=$SIZE,dirty-rate=0,zero=0% 127.0.0.1:PORT"; }
recv_cmd() { echo "$RMIG recv --listen 127.0.0.1:0 --json --transport tcp --prealloc --psk-file K $1"; }

# One migration; MODE is --no-tls or --tls. Figures appended to $OUT/KIND.*
migrate() { # KIND MODE RUN
	local name=$1.$3 kind=$1 mode=$2 port= rpid at_listen at_recv
	local r="$OUT/runs/$name.recv" s="$OUT/runs/$name.send"
	sleep "$COOL"
	"$RMIG" recv --listen 127.0.0.1:0 --json --transport tcp --prealloc --psk-file "$psk" \
		"$mode" >"$r" 2>&1 &
	rpid=$!
	at_listen=$(cpu_at "$rpid" "$r" '"listening"')
	port=$(jq -r 'select(.event=="listening") | .port' "$r" 2>/dev/null)
	cpu_at "$rpid" "$r" '"receiving"' >"$OUT/runs/$name.at_recv" &
	timeout 600 "$RMIG" send --json --transport tcp --channels "$CH" --no-verify \
		--psk-file "$psk" "$mode" --backend "sim:size=$SIZE,dirty-rate=0,zero=0%" \
		"127.0.0.1:$port" >"$s" 2>&1
	wait
	at_recv=$(cat "$OUT/runs/$name.at_recv")
	jq -e 'select(.event=="summary") | select(.result=="migrated")' "$s" >/dev/null ||
		{ echo "bench_tls: $name did not migrate: $(tail -n1 "$s")" >&2; status=1; return; }
	jq -r 'select(.event=="round" and .round==1) | .bandwidth' "$s" >>"$OUT/$kind.bw"
	jq -r 'select(.event=="summary") | .cpu_ms / 1000' "$s" >>"$OUT/$kind.cpu_send"
	jq -r --argjson pre "$(awk -v a="$at_recv" -v b="$at_listen" 'BEGIN { print a - b }')" \
		'select(.event=="summary") | .cpu_ms / 1000 - $pre' "$r" >>"$OUT/$kind.cpu_recv"
	jq -r 'select(.event=="summary") | .tls' "$s" >>"$OUT/$kind.sealing"
}

for i in $(seq "$RUNS"); do
	migrate plain --no-tls "$i"
	migrate tls --tls "$i"
	ceilings
done

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : 0) }'; }
range() { sort -g "$1" | awk -v d="$2" -v div="${3:-1}" 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.*f..%.*f", d, lo / div, d, hi / div }'; }
per_gib() { median <"$1" | awk -v g="$gib" '{ printf "%.3f", $1 / g }'; }
mbs() { median <"$1" | awk '{ printf "%.0f", $1 / 1e6 }'; }
mb() { awk -v b="${1:-0}" 'BEGIN { printf "%.0f", b / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
sub_() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
met() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN { ok = (op == "<=" ? v <= t : v >= t); print (ok ? "met" : "not met") }'; }
for f in bw cpu_send cpu_recv sealing; do touch "$OUT/plain.$f" "$OUT/tls.$f"; done
core_s() { awk -v b="$1" 'BEGIN { printf "%.3f", (b > 0 ? 1073741824 / b : 0) }'; }
enc_Bps=$(median <"$OUT/ceiling.Bps")
seal_Bps=$(median <"$OUT/seal.Bps")
open_Bps=$(median <"$OUT/open.Bps")
ceil_s=$(core_s "${enc_Bps:-0}")
busy_s=$(core_s "$(median <"$OUT/busy.Bps")")

p_bw=$(mbs "$OUT/plain.bw")
t_bw=$(mbs "$OUT/tls.bw")
bw_ratio=$(ratio "$t_bw" "$p_bw")
p_send=$(per_gib "$OUT/plain.cpu_send")
t_send=$(per_gib "$OUT/tls.cpu_send")
p_recv=$(per_gib "$OUT/plain.cpu_recv")
t_recv=$(per_gib "$OUT/tls.cpu_recv")
add_send=$(sub_ "$t_send" "$p_send")
add_recv=$(sub_ "$t_recv" "$p_recv")
sealing=$(sort -u "$OUT/tls.sealing" | paste -sd/)
bound() { awk -v c="$cores" -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (a + b > 0 ? c / (a + b) * 1073741824 / 1e6 : 0) }'; }
p_bound=$(bound "$p_send" "$p_recv")
t_bound=$(bound "$t_send" "$t_recv")
n_plain=$(wc -l <"$OUT/plain.bw")
n_tls=$(wc -l <"$OUT/tls.bw")
gib_range() { range "$1" 2 "$gib"; }

echo "$SIZE idle sim guest, $CH streams, loopback TCP, into \`recv --prealloc\`; $n_plain plaintext and $n_tls TLS runs, alternating; medians (range). TLS sealed by: ${sealing:-?}. CPU per GiB: process CPU over the migration, divided by the GiB moved; the receiver's without its preallocation."
echo
echo "| | plaintext | TLS 1.3 | TLS / plaintext | target |"
echo "|---|---|---|---|---|"
echo "| round 1, MB/s | $p_bw ($(range "$OUT/plain.bw" 0 1e6)) | $t_bw ($(range "$OUT/tls.bw" 0 1e6)) | $bw_ratio | ≥ 0.6: $(met "$bw_ratio" 0.6 '>=') |"
echo "| sender CPU, s/GiB | $p_send ($(gib_range "$OUT/plain.cpu_send")) | $t_send ($(gib_range "$OUT/tls.cpu_send")) | $(ratio "$t_send" "$p_send") | |"
echo "| receiver CPU, s/GiB | $p_recv ($(gib_range "$OUT/plain.cpu_recv")) | $t_recv ($(gib_range "$OUT/tls.cpu_recv")) | $(ratio "$t_recv" "$p_recv") | |"
echo "| CPU bound on $cores cores: $cores / (sender + receiver s/GiB), MB/s | $p_bound | $t_bound | $(ratio "$t_bound" "$p_bound") | |"
echo
echo "Sender and receiver share this machine's $cores cores: where both modes are CPU-bound, TLS / plaintext cannot exceed the ratio of the CPU bounds."
echo
echo "Crypto ceiling: AES-128-GCM on one core at 16384-byte blocks, median of $(wc -l <"$OUT/ceiling.Bps") measured between the runs ($(range "$OUT/ceiling.Bps" 0 1e6) MB/s): $(mb "$enc_Bps") MB/s = $ceil_s core-s/GiB. As TLS records use it (\`-aead\`: nonce, header, data and tag per 16 KiB record): sealing $(mb "$seal_Bps") MB/s = $(core_s "${seal_Bps:-0}") core-s/GiB, opening $(mb "$open_Bps") MB/s = $(core_s "${open_Bps:-0}") core-s/GiB. With every core running it at once: $(mb "$(median <"$OUT/busy.Bps")") MB/s per core = $busy_s core-s/GiB. Added = TLS minus plaintext CPU per GiB (medians); the target is added ≤ 1.3 × the ceiling (one core); raw = TLS CPU per GiB against plaintext + ceiling. Over loopback part of one side's TCP work runs in the other's process (softirqs): the sum of both sides is the sturdier figure."
echo
echo "| side | added by TLS, s/GiB | ceiling (one core), core-s/GiB | added / ceiling | target ≤ 1.3 | added / ceiling with all cores busy | raw TLS / (plaintext + ceiling) |"
echo "|---|---|---|---|---|---|---|"
row() { # NAME ADDED TLS PLAIN CEILINGS
	local r
	r=$(ratio "$2" "$(awk -v c="$ceil_s" -v n="$5" 'BEGIN { print c * n }')")
	echo "| $1 | $2 | $(awk -v c="$ceil_s" -v n="$5" 'BEGIN { printf "%.3f", c * n }') | $r | $(met "$r" 1.3 '<=') | $(ratio "$2" "$(awk -v c="$busy_s" -v n="$5" 'BEGIN { print c * n }')") | $(ratio "$3" "$(awk -v a="$4" -v c="$ceil_s" -v n="$5" 'BEGIN { print a + c * n }')") |"
}
row sender "$add_send" "$t_send" "$p_send" 1
row receiver "$add_recv" "$t_recv" "$p_recv" 1
row "both (sum; 2 × ceiling)" "$(sub_ "$(awk -v a="$t_send" -v b="$t_recv" 'BEGIN { print a + b }')" "$(awk -v a="$p_send" -v b="$p_recv" 'BEGIN { print a + b }')")" \
	"$(awk -v a="$t_send" -v b="$t_recv" 'BEGIN { print a + b }')" "$(awk -v a="$p_send" -v b="$p_recv" 'BEGIN { print a + b }')" 2
echo
echo "Commands (K: a 32-byte key file, mode 0600; PORT: the receiver's):"
echo
echo '```'
echo "$speed_enc   # the ceiling: its 16384 bytes column"
echo "$speed_seal   # sealing records"
echo "$speed_open   # opening records"
echo "taskset -c N $speed_busy   # on every core N at once"
echo "$(recv_cmd --no-tls)   # plaintext"
echo "$(send_cmd --no-tls)"
echo "$(recv_cmd --tls)   # TLS"
echo "$(send_cmd --tls)"
echo '```'

arr() { jq -s . "$1"; }
jq -n --arg size "$SIZE" --argjson channels "$CH" --argjson runs "$RUNS" \
	--arg speed "$speed_enc" --argjson enc "${enc_Bps:-0}" --argjson seal "${seal_Bps:-0}" \
	--argjson open "${open_Bps:-0}" --argjson ceil_runs "$(arr "$OUT/ceiling.Bps")" \
	--argjson busy_runs "$(arr "$OUT/busy.Bps")" --argjson busy_s "$busy_s" \
	--argjson ceil "$ceil_s" --argjson p_bw "$(arr "$OUT/plain.bw")" \
	--argjson t_bw "$(arr "$OUT/tls.bw")" \
	--argjson p_send "$(arr "$OUT/plain.cpu_send")" --argjson t_send "$(arr "$OUT/tls.cpu_send")" \
	--argjson p_recv "$(arr "$OUT/plain.cpu_recv")" --argjson t_recv "$(arr "$OUT/tls.cpu_recv")" \
	--argjson bw_ratio "$bw_ratio" --argjson add_send "$add_send" --argjson add_recv "$add_recv" \
	--argjson cores "$cores" --argjson p_bound "$p_bound" --argjson t_bound "$t_bound" \
	--arg sealing "$sealing" --argjson seal_runs "$(arr "$OUT/seal.Bps")" \
	--argjson open_runs "$(arr "$OUT/open.Bps")" \
	'{size: $size, channels: $channels, runs: $runs, sealing: $sealing,
	  ceiling: {command: $speed, aes128gcm_Bps: $enc, runs_Bps: $ceil_runs, core_s_per_gib: $ceil,
		    records_seal_Bps: $seal, records_open_Bps: $open,
		    records_seal_runs_Bps: $seal_runs, records_open_runs_Bps: $open_runs,
		    all_cores_busy_runs_Bps: $busy_runs, all_cores_busy_core_s_per_gib: $busy_s},
	  plaintext: {round1_Bps: $p_bw, cpu_send_s: $p_send, cpu_recv_s: $p_recv},
	  tls: {round1_Bps: $t_bw, cpu_send_s: $t_send, cpu_recv_s: $t_recv},
	  tls_over_plaintext_bw: $bw_ratio, cores: $cores,
	  cpu_bound_Bps: {plaintext: ($p_bound * 1e6), tls: ($t_bound * 1e6)},
	  added_s_per_gib: {send: $add_send, recv: $add_recv}}' >"$OUT/tls.json"
exit $status

# shellcheck shell=bash
# shellcheck disable=SC2016 # single-quoted sh -c scripts expand inside the container, on purpose
# Test hosts: Debian 12 containers with systemd as PID 1 on a private bridge.
#
# Sourced by test scripts (scripts/test-testbed, scripts/test-deploy); needs root and Debian.
#
#   . scripts/lib/testbed.sh
#   tb_init my-test            # run id, work dir, EXIT trap that calls tb_cleanup
#   tb_rootfs                  # cached debootstrap rootfs ($TB_ROOTFS, $TB_ROOTFS_CACHED)
#   tb_proxy                   # bridge br-tb<id>, host address .1, apt-cacher-ng on it, input guard
#   tb_boot app 2              # container "app" at <prefix>.2, booted (or tb_start + tb_wait)
#   tb_boot obs 3
#   tb_netns outside 9         # a plain network namespace on the bridge
#   tb_exec app systemctl status nginx
#   tb_probe outside app 80    # prints open|closed
#
# Every resource carries the run id: bridge br-tb<id>, netns chomtb-<id>-NAME, machines
# tb<id>-HOST, nft table inet chomtb_<id>, work dir $TB_RUNS/run-<id>. The work dir records
# what was started (pid files), so tb_cleanup, and tb_sweep for runs whose owner died, remove
# exactly what a run made. Containers reach nothing but the apt proxy: no default route, no
# NAT, no DNS, and an nft input rule on the bridge that refuses every host port but the proxy's.

# Sourcing twice would forget an active run's state.
[ -z "${TB_LIB_LOADED:-}" ] || return 0
TB_LIB_LOADED=1

TB_CACHE=${CHOM_TESTBED_CACHE:-/var/cache/chom-testbed}
TB_RUNS=${CHOM_TESTBED_RUNS:-/var/tmp/chom-testbed}
TB_SUITE=bookworm
# What a minimal Debian server has, plus what the deploy needs to reach it (sshd, python3).
TB_PACKAGES=(systemd systemd-sysv dbus iproute2 ca-certificates openssh-server python3
    procps netbase curl gnupg less cron logrotate)
# Bump when the rootfs post-processing changes: it is part of the cache key.
TB_RECIPE=1
TB_COPY=${CHOM_TESTBED_COPY:-overlay}      # overlay | copy (cp -a)
TB_BOOT_TIMEOUT=${CHOM_TESTBED_BOOT_TIMEOUT:-180}
TB_PROBE_TIMEOUT=3
TB_PROXY_PORT=3142
TB_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

TB_ID=
TB_WORK=
TB_CLEANUP=()
TB_HOSTS=()
TB_NETNS_NAMES=()
declare -gA TB_ADDR=() TB_NSPAWN=() TB_INIT=() TB_NETNS=() TB_TIMES=()

# === logging and timing ===

tb_log() { printf 'testbed%s: %s\n' "${TB_ID:+[$TB_ID]}" "$*" >&2; }
tb_err() { tb_log "error: $*"; }

tb__now_us() { local t=${EPOCHREALTIME/[.,]/}; printf '%s' "$((10#$t))"; }

# Seconds since a tb__now_us stamp, as N.NN.
tb__since() {
    local d=$(($(tb__now_us) - $1))
    printf '%d.%02d' "$((d / 1000000))" "$((d % 1000000 / 10000))"
}

# Runs CMD..., prints one line with the step's duration, records it in TB_TIMES[LABEL].
tb_timed() { # LABEL CMD...
    local label=$1 t0 rc=0
    shift
    t0=$(tb__now_us)
    "$@" || rc=$?
    TB_TIMES[$label]=$(tb__since "$t0")
    if [ "$rc" = 0 ]; then
        tb_log "$(printf '%-24s %7ss' "$label" "${TB_TIMES[$label]}")"
    else
        tb_log "$(printf '%-24s %7ss  FAILED (status %s)' "$label" "${TB_TIMES[$label]}" "$rc")"
    fi
    return "$rc"
}

# Polls CMD... every 0.2 s until it succeeds; fails after SECONDS.
tb_wait_for() { # SECONDS CMD...
    local deadline=$(($(tb__now_us) + $1 * 1000000))
    shift
    until "$@"; do
        [ "$(tb__now_us)" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# === validation ===

tb__valid_name() { [[ ${1:-} =~ ^[a-z][a-z0-9-]{0,15}$ ]] && [ "$1" != tb-proxy ]; }

tb__need_run() {
    [ -n "$TB_ID" ] || { tb_err "call tb_init first"; return 1; }
}

tb__need_host() { # HOST
    tb__need_run || return 1
    [ -n "${TB_INIT[${1:-}]:-}" ] || { tb_err "no booted host '${1:-}'"; return 1; }
}

# A full address in the run's subnet from "N" (last octet) or "A.B.C.N".
tb__addr() { # ADDR
    local a=${1:-}
    [ -n "${TB_PREFIX:-}" ] || { tb_err "call tb_proxy first"; return 1; }
    [[ $a =~ ^[0-9]{1,3}$ ]] && a=$TB_PREFIX.$a
    if [[ ! $a =~ ^([0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})\.([0-9]{1,3})$ ]] ||
        [ "${BASH_REMATCH[1]}" != "$TB_PREFIX" ] || [ "${BASH_REMATCH[2]}" -lt 2 ] ||
        [ "${BASH_REMATCH[2]}" -gt 254 ]; then
        tb_err "address '$1' is not N or $TB_PREFIX.N with N in 2..254"
        return 1
    fi
    local h
    for h in "${!TB_ADDR[@]}"; do
        [ "${TB_ADDR[$h]}" != "$a" ] || { tb_err "address $a is taken by $h"; return 1; }
    done
    printf '%s' "$a"
}

# === processes ===

# Field N of /proc/PID/stat counted after the command name (1 = state, 20 = start time).
tb__stat_field() { # PID N
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    local -a f
    read -r -a f <<<"$stat"
    printf '%s' "${f[$2 - 1]}"
}

# Start time of PID in clock ticks, to tell a PID from a reused one.
tb__starttime() { tb__stat_field "$1" 20; }

# True when PID is alive and its command line contains MARK (so a reused PID is never signalled).
tb__pid_is() { # PID MARK
    [[ ${1:-} =~ ^[0-9]+$ ]] || return 1
    local cmd
    cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
    [[ $cmd == *"$2"* ]]
}

# True when no PID is running (gone, or a zombie its parent has not reaped yet).
tb__none_alive() { # PID...
    local p state
    for p in "$@"; do
        state=$(tb__stat_field "$p" 1) || continue
        [ "$state" = Z ] || return 1
    done
}

# TERM each PID carrying MARK, wait up to SECONDS for all, then KILL the rest.
tb__stop_pids() { # SECONDS MARK PID...
    local secs=$1 mark=$2 p live=()
    shift 2
    for p in "$@"; do tb__pid_is "$p" "$mark" && live+=("$p"); done
    [ "${#live[@]}" -gt 0 ] || return 0
    kill -TERM "${live[@]}" 2>/dev/null || true
    tb_wait_for "$secs" tb__none_alive "${live[@]}" && return 0
    for p in "${live[@]}"; do tb__pid_is "$p" "$mark" && kill -KILL "$p" 2>/dev/null; done
    tb_wait_for 10 tb__none_alive "${live[@]}"
}

# === host packages ===

# Installs what the testbed needs on the host; leaves no service enabled or started.
tb__host_tools() {
    local need=() t
    declare -A pkg=([systemd-nspawn]=systemd-container [debootstrap]=debootstrap
        [apt-cacher-ng]=apt-cacher-ng [nft]=nftables [ip]=iproute2 [nsenter]=util-linux
        [setpriv]=util-linux [flock]=util-linux [timeout]=coreutils [python3]=python3)
    for t in "${!pkg[@]}"; do command -v "$t" >/dev/null || need+=("${pkg[$t]}"); done
    [ "${#need[@]}" -gt 0 ] || return 0
    mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
    tb_log "installing on the host: ${need[*]}"
    local made_policy=false
    # Package scripts must not start daemons (apt-cacher-ng would listen on every address).
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# chom-testbed temporary\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        made_policy=true
    fi
    local rc=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${need[@]}"; } >"$TB_RUNS/host-apt.log" 2>&1 || rc=$?
    ! $made_policy || rm -f /usr/sbin/policy-rc.d
    [ "$rc" = 0 ] || { tb_err "apt-get install ${need[*]} failed: see $TB_RUNS/host-apt.log"; return 1; }
    # The testbed runs its own apt-cacher-ng instances; the packaged one stays off.
    if [[ " ${need[*]} " == *" apt-cacher-ng "* ]]; then
        systemctl disable apt-cacher-ng.service >/dev/null 2>&1 || true
    fi
}

# === run lifecycle ===

# Starts a run: id, work dir, sweep of dead runs' leftovers, EXIT trap calling tb_cleanup.
tb_init() { # NAME
    local name=${1:-}
    [[ $name =~ ^[a-z][a-z0-9-]{0,31}$ ]] || { tb_err "tb_init NAME: NAME must match ^[a-z][a-z0-9-]{0,31}\$"; return 2; }
    [ -z "$TB_ID" ] || { tb_err "tb_init: run $TB_ID is already active"; return 1; }
    [ "$(id -u)" = 0 ] || { tb_err "the testbed needs root (network namespaces, bridges, nspawn)"; return 1; }
    # 0711: apt-cacher-ng's user must reach its files in the run dir, but list nothing.
    mkdir -p "$TB_RUNS" "$TB_CACHE" && chmod 0711 "$TB_RUNS" || return 1
    tb__host_tools || return 1
    tb_sweep || true
    local id='' i
    for i in 1 2 3 4 5; do
        id=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
        mkdir -m 0711 "$TB_RUNS/run-$id" 2>/dev/null && break
        id=''
    done
    [ -n "$id" ] || { tb_err "could not make a run directory under $TB_RUNS"; return 1; }
    TB_ID=$id
    TB_WORK=$TB_RUNS/run-$id
    TB_BRIDGE=br-tb$id
    TB_NFT_TABLE=chomtb_$id
    printf '%s %s %s\n' "$$" "$(tb__starttime $$)" "$name" >"$TB_WORK/owner"
    trap 'tb_cleanup' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    tb_log "run $id ($name): work dir $TB_WORK"
}

# Registers CMD... to run (in reverse order of registration) first thing in tb_cleanup.
tb_defer() { TB_CLEANUP+=("$(printf '%q ' "$@")"); }

# Removes everything this run made. Idempotent; safe from an EXIT trap.
tb_cleanup() {
    [ -n "$TB_ID" ] || return 0
    local i
    for ((i = ${#TB_CLEANUP[@]} - 1; i >= 0; i--)); do
        eval "${TB_CLEANUP[i]}" || tb_log "cleanup: '${TB_CLEANUP[i]}' failed"
    done
    TB_CLEANUP=()
    tb_timed cleanup tb__teardown "$TB_ID" || true
    [ -z "${TB_ROOTFS_FD:-}" ] || exec {TB_ROOTFS_FD}>&-
    [ -z "${TB_APT_FD:-}" ] || exec {TB_APT_FD}>&-
    TB_ROOTFS_FD='' TB_APT_FD='' TB_ID='' TB_WORK='' TB_PREFIX='' TB_PROXY_ADDR=''
    TB_HOSTS=() TB_NETNS_NAMES=() TB_ADDR=() TB_NSPAWN=() TB_INIT=() TB_NETNS=()
}

# Mount points at or under DIR, deepest first.
tb__mounts_under() { # DIR
    awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

# Tears down run ID from what its work dir recorded, then by name (bridge, netns, nft, veths).
tb__teardown() { # ID
    local id=$1 dir=$TB_RUNS/run-$1 f pids=() inits=()
    for f in "$dir"/hosts/*/nspawn.pid; do [ -f "$f" ] && pids+=("$(cat "$f")"); done
    for f in "$dir"/hosts/*/init.pid; do [ -f "$f" ] && inits+=("$(cat "$f")"); done
    # nspawn turns TERM into a clean poweroff of the container; killing its init (the PID that
    # was recorded, if it is still that process) ends a container that did not stop.
    tb__stop_pids 20 "tb$id-" "${pids[@]}" || true
    local pid start
    for f in "${inits[@]}"; do
        read -r pid start <<<"$f"
        [ "$(tb__starttime "$pid" 2>/dev/null)" = "$start" ] && kill -KILL "$pid" 2>/dev/null
    done
    [ -f "$dir/acng.pid" ] && tb__stop_pids 10 "run-$id" "$(cat "$dir/acng.pid")"
    [ -f "$dir/listener.pid" ] && tb__stop_pids 5 "run-$id" "$(cat "$dir/listener.pid")"
    local ns
    while read -r ns _; do
        [[ $ns == chomtb-$id-* ]] && ip netns del "$ns"
    done < <(ip netns list 2>/dev/null)
    local link
    while read -r link; do
        ip link del "$link" 2>/dev/null || true
    done < <(ip -o link show 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' |
        grep -E "^(br-tb|vn-tb|vp-tb)$id")
    nft list table inet "chomtb_$id" >/dev/null 2>&1 && nft delete table inet "chomtb_$id"
    local m
    for m in $(tb__mounts_under "$dir"); do umount "$m" 2>/dev/null || umount -l "$m"; done
    if [ -d "$dir" ]; then
        [ -z "$(tb__mounts_under "$dir")" ] || { tb_err "mounts left under $dir: not deleting it"; return 1; }
        rm -rf --one-file-system "$dir"
    fi
    [ -z "$(tb_leftovers "$id")" ]
}

# Prints one line per resource of run ID that still exists (nothing when it is all gone).
tb_leftovers() { # ID
    local id=$1 p
    [ ! -e "$TB_RUNS/run-$id" ] || echo "work dir $TB_RUNS/run-$id"
    # Best effort under set -e -o pipefail: an empty grep is the good case.
    ip -o link show 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' |
        grep -E "^(br-tb|vn-tb|vp-tb|vb-tb)$id" | sed 's/^/link /' || true
    ip netns list 2>/dev/null | awk '{ print $1 }' | grep -F "chomtb-$id-" | sed 's/^/netns /' || true
    ! nft list table inet "chomtb_$id" >/dev/null 2>&1 || echo "nft table inet chomtb_$id"
    tb__mounts_under "$TB_RUNS/run-$id" | sed 's/^/mount /'
    local cmd
    for p in /proc/[0-9]*; do
        cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
        [[ $cmd == *"tb$id-"* || $cmd == *"run-$id"* ]] && echo "process ${p#/proc/}: ${cmd:0:120}"
    done
    return 0
}

# Tears down runs whose owner process is gone (killed scripts), and testbed-named network
# objects that belong to no run directory at all.
tb_sweep() {
    local lock dir id owner start
    exec {lock}>"$TB_RUNS/.sweep.lock"
    # Waits for a concurrent sweep, so that a sweep that returns has seen every dead run.
    flock -w 60 "$lock" || { exec {lock}>&-; tb_err "timed out waiting for $TB_RUNS/.sweep.lock"; return 1; }
    for dir in "$TB_RUNS"/run-*; do
        [ -d "$dir" ] || continue
        id=${dir##*/run-}
        [[ $id =~ ^[0-9a-f]{6}$ ]] || continue
        if read -r owner start _ <"$dir/owner" 2>/dev/null; then
            [ "$(tb__starttime "$owner" 2>/dev/null)" = "$start" ] && continue
        elif [ -n "$(find "$dir" -maxdepth 0 -mmin -5)" ]; then
            continue # being created
        fi
        tb_log "sweeping leftovers of dead run $id"
        tb__teardown "$id" || tb_err "could not remove everything of run $id"
    done
    local name
    while read -r name; do
        [ -d "$TB_RUNS/run-${name:5:6}" ] || { tb_log "sweeping orphan link $name"; ip link del "$name"; }
    done < <(ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | grep -E '^(br|vn|vp)-tb[0-9a-f]{6}')
    while read -r name _; do
        [[ $name =~ ^chomtb-([0-9a-f]{6})- ]] || continue
        [ -d "$TB_RUNS/run-${BASH_REMATCH[1]}" ] || { tb_log "sweeping orphan netns $name"; ip netns del "$name"; }
    done < <(ip netns list 2>/dev/null)
    local family
    while read -r _ family name; do
        [ "$family" = inet ] || continue
        [[ $name =~ ^chomtb_([0-9a-f]{6})$ ]] || continue
        [ -d "$TB_RUNS/run-${BASH_REMATCH[1]}" ] || { tb_log "sweeping orphan nft table $name"; nft delete table inet "$name"; }
    done < <(nft list tables 2>/dev/null)
    if grep -q '^# chom-testbed temporary' /usr/sbin/policy-rc.d 2>/dev/null; then
        rm -f /usr/sbin/policy-rc.d
    fi
    exec {lock}>&-
}

# === root file system ===

# The http URI the host's apt uses for SUITE (one-line and deb822 sources), or nothing.
tb__host_mirror() { # SUITE
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk -v s="$1" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) while (i <= NF && $i !~ /\]$/) i++;
            if ($2 ~ /^\[/) i++; if ($(i + 1) == s && $i ~ /^http:/) { print $i; exit } }'
    cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk -v s="$1" 'function flush() { if (ok && uri ~ /^http:/) { print uri; exit } ok = 0; uri = "" }
            /^[[:space:]]*$/ { flush(); next }
            tolower($1) == "uris:" { uri = $2 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == s) ok = 1 }
            END { flush() }'
}

tb__mirrors() {
    [ -z "${TB_MIRROR:-}" ] || return 0
    TB_MIRROR=${CHOM_TESTBED_MIRROR:-$(tb__host_mirror "$TB_SUITE" | head -n1)}
    TB_MIRROR=${TB_MIRROR:-http://deb.debian.org/debian}
    TB_SECURITY_MIRROR=${CHOM_TESTBED_SECURITY_MIRROR:-$(tb__host_mirror "$TB_SUITE-security" | head -n1)}
    TB_SECURITY_MIRROR=${TB_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
    TB_MIRROR=${TB_MIRROR%/} TB_SECURITY_MIRROR=${TB_SECURITY_MIRROR%/}
}

# Cache key: everything that changes the tree's content.
tb__rootfs_key() {
    printf 'recipe=%s suite=%s mirror=%s security=%s packages=%s\n' "$TB_RECIPE" "$TB_SUITE" \
        "$TB_MIRROR" "$TB_SECURITY_MIRROR" "${TB_PACKAGES[*]}" | sha256sum | cut -c1-16
}

# Sets TB_ROOTFS (a cached tree, never written to) and TB_ROOTFS_CACHED (true|false). Holds a
# shared lock on it until tb_cleanup so that pruning never removes a tree a run still uses.
tb_rootfs() { tb_timed rootfs tb__rootfs; }

tb__rootfs() {
    tb__need_run || return 1
    tb__mirrors
    local key dir fd
    key=$(tb__rootfs_key)
    dir=$TB_CACHE/rootfs/$key
    mkdir -p "$TB_CACHE/rootfs" || return 1
    [ -z "${TB_ROOTFS_FD:-}" ] || exec {TB_ROOTFS_FD}>&-
    exec {fd}>"$dir.lock"
    TB_ROOTFS_FD=$fd
    if flock -s -w 900 "$fd" && [ -d "$dir" ]; then
        TB_ROOTFS_CACHED=true
    else
        flock -x -w 900 "$fd" || { tb_err "timed out waiting for the rootfs lock $dir.lock"; return 1; }
        if [ -d "$dir" ]; then
            TB_ROOTFS_CACHED=true
        else
            TB_ROOTFS_CACHED=false
            tb_timed debootstrap tb__rootfs_build "$dir" || return 1
        fi
        flock -s "$fd"
    fi
    touch "$dir.lock" # last use, for pruning
    TB_ROOTFS=$dir
    tb_log "rootfs $dir (cached: $TB_ROOTFS_CACHED)"
    tb__rootfs_prune "$key"
}

tb__rootfs_build() { # DIR
    local dir=$1 tmp=$1.tmp log=$1.build.log m
    for m in $(tb__mounts_under "$tmp"); do umount -l "$m"; done
    rm -rf --one-file-system "$tmp"
    tb_log "debootstrap $TB_SUITE from $TB_MIRROR (log: $log)"
    if ! debootstrap --variant=minbase --include="$(IFS=,; echo "${TB_PACKAGES[*]}")" \
        "$TB_SUITE" "$tmp" "$TB_MIRROR" >"$log" 2>&1; then
        tb_err "debootstrap failed; last lines of $log:"
        tail -n 15 "$log" >&2
        return 1
    fi
    for m in $(tb__mounts_under "$tmp"); do umount -l "$m"; done
    # Per-host identity (machine id, ssh host keys, hostname) is made for each copy instead.
    : >"$tmp/etc/machine-id"
    [ -L "$tmp/var/lib/dbus/machine-id" ] || rm -f "$tmp/var/lib/dbus/machine-id"
    rm -f "$tmp"/etc/ssh/ssh_host_* "$tmp/etc/hostname"
    rm -f "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/cache/apt/*.bin
    cat >"$tmp/etc/apt/sources.list" <<SRC
deb $TB_MIRROR $TB_SUITE main
deb $TB_MIRROR $TB_SUITE-updates main
deb $TB_SECURITY_MIRROR $TB_SUITE-security main
SRC
    # host0 gets a static address from systemd-networkd (written per copy); nothing else to set up.
    chroot "$tmp" systemctl enable --quiet systemd-networkd.service >>"$log" 2>&1 || return 1
    mv "$tmp" "$dir"
}

# Keeps the two most recently used other trees; removes older ones no run holds.
tb__rootfs_prune() { # KEEP_KEY
    local lock old fd
    while read -r lock; do
        old=${lock%.lock}
        exec {fd}>"$lock"
        if flock -n -x "$fd"; then
            tb_log "pruning unused rootfs $old"
            rm -rf --one-file-system "$old" "$old.tmp" "$old.build.log" && rm -f "$lock"
        fi
        exec {fd}>&-
    done < <(find "$TB_CACHE/rootfs" -maxdepth 1 -name '*.lock' ! -name "$1.lock" -printf '%T@ %p\n' |
        sort -rn | tail -n +3 | cut -d' ' -f2-)
}

# === bridge and apt proxy ===

# Makes the bridge (a free 10.213.X.0/24, host at .1), the input guard, and apt-cacher-ng on
# the host's bridge address. Sets TB_PREFIX (10.213.X), TB_PROXY_ADDR and TB_BRIDGE.
tb_proxy() { tb_timed proxy tb__proxy; }

tb__proxy() {
    tb__need_run || return 1
    [ -z "${TB_PREFIX:-}" ] || { tb_err "tb_proxy: already set up ($TB_PREFIX.0/24)"; return 1; }
    tb__mirrors
    tb__bridge || return 1
    tb__guard || return 1
    tb__acng || return 1
}

# True when no address or route of the host is in PREFIX.0/24 (the default route aside).
tb__subnet_free() { # PREFIX
    ! ip -4 -o addr show | grep -qF " $1." &&
        [ -z "$(ip -4 route show to match "$1.1" | awk '$1 != "default"')" ]
}

tb__bridge() {
    local lock x i start
    # Serialises subnet choice between parallel runs.
    exec {lock}>"$TB_RUNS/.net.lock"
    flock -w 60 "$lock" || { exec {lock}>&-; tb_err "timed out waiting for $TB_RUNS/.net.lock"; return 1; }
    start=$((16#$TB_ID % 200))
    for ((i = 0; i < 200; i++)); do
        x=$(((start + i) % 200 + 20))
        tb__subnet_free "10.213.$x" && break
        x=''
    done
    if [ -z "$x" ]; then
        exec {lock}>&-
        tb_err "no free 10.213.X.0/24 subnet"
        return 1
    fi
    TB_PREFIX=10.213.$x
    TB_PROXY_ADDR=$TB_PREFIX.1
    local rc=0
    {
        ip link add "$TB_BRIDGE" type bridge &&
            # The host routes nothing from the bridge and keeps no IPv6 on it.
            echo 0 >"/proc/sys/net/ipv4/conf/$TB_BRIDGE/forwarding" &&
            echo 1 >"/proc/sys/net/ipv6/conf/$TB_BRIDGE/disable_ipv6" &&
            ip addr add "$TB_PROXY_ADDR/24" dev "$TB_BRIDGE" &&
            ip link set "$TB_BRIDGE" up
    } || rc=$?
    exec {lock}>&-
    [ "$rc" = 0 ] || { tb_err "could not set up bridge $TB_BRIDGE"; return 1; }
    tb_log "bridge $TB_BRIDGE $TB_PREFIX.0/24, host (apt proxy) $TB_PROXY_ADDR"
}

# Packets from the bridge to the host reach the proxy port and nothing else (the host may have
# services on 0.0.0.0). Bridged traffic between the hosts does not pass the input hook.
tb__guard() {
    nft -f - <<NFT || { tb_err "could not load nft table inet $TB_NFT_TABLE"; return 1; }
table inet $TB_NFT_TABLE {
    chain input {
        type filter hook input priority -10; policy accept;
        iifname "$TB_BRIDGE" ct state established,related accept
        iifname "$TB_BRIDGE" ip daddr $TB_PROXY_ADDR tcp dport $TB_PROXY_PORT accept
        iifname "$TB_BRIDGE" meta l4proto tcp reject with tcp reset
        iifname "$TB_BRIDGE" drop
    }
}
NFT
}

# apt-cacher-ng as its own user, bound to the bridge address only, own config and socket.
# The cache under $TB_CACHE/apt persists; a parallel run that finds it in use gets a private one.
tb__acng() {
    local conf=$TB_WORK/acng-conf cache=$TB_CACHE/apt logdir=$TB_WORK/acng-log fd user=apt-cacher-ng
    id "$user" >/dev/null 2>&1 || { tb_err "user $user missing (is apt-cacher-ng installed?)"; return 1; }
    exec {fd}>"$TB_CACHE/apt.lock"
    if flock -n "$fd"; then
        TB_APT_FD=$fd
    else
        exec {fd}>&-
        cache=$TB_WORK/apt-cache
        tb_log "apt cache $TB_CACHE/apt is used by another run: this run caches in $cache"
    fi
    # The packaged default mirror is not reachable here; use the one the host's apt uses.
    if ! { mkdir -p "$conf" "$cache" "$logdir" "$TB_WORK/acng-run" &&
        cp -a /etc/apt-cacher-ng/. "$conf/" &&
        printf '%s/\n' "$TB_MIRROR" >"$conf/backends_debian" &&
        chown -R "$user:" "$conf" "$logdir" "$TB_WORK/acng-run" &&
        chown "$user:" "$cache"; }; then
        tb_err "could not prepare apt-cacher-ng's config and cache dirs"
        return 1
    fi
    setpriv --reuid="$user" --regid="$user" --init-groups -- \
        apt-cacher-ng -c "$conf" ForeGround=1 "BindAddress=$TB_PROXY_ADDR" "Port=$TB_PROXY_PORT" \
        "CacheDir=$cache" "LogDir=$logdir" "SocketPath=$TB_WORK/acng-run/socket" \
        "PidFile=$TB_WORK/acng-run/pid" UnbufferLogs=1 "ConnectProto=v4 v6" \
        </dev/null >"$TB_WORK/acng.out" 2>&1 &
    echo "$!" >"$TB_WORK/acng.pid"
    if ! tb_wait_for 30 tb__tcp_open "$TB_PROXY_ADDR" "$TB_PROXY_PORT"; then
        tb_err "apt-cacher-ng did not answer on $TB_PROXY_ADDR:$TB_PROXY_PORT; its output:"
        tail -n 20 "$TB_WORK/acng.out" >&2
        return 1
    fi
    tb_log "apt-cacher-ng on $TB_PROXY_ADDR:$TB_PROXY_PORT, cache $cache"
}

tb__tcp_open() { # ADDR PORT (from the current network namespace)
    timeout "$TB_PROBE_TIMEOUT" bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# How many .deb files apt-cacher-ng fetched from upstream in this run (0: all from its cache).
tb_proxy_debs_fetched() {
    awk -F'|' '$2 == "I" && $5 ~ /\.deb$/ { n++ } END { print n + 0 }' \
        "$TB_WORK/acng-log/apt-cacher.log" 2>/dev/null || echo 0
}

# Bytes apt-cacher-ng fetched from upstream and served to the hosts in this run (from its log).
tb_proxy_stats() {
    awk -F'|' '$2 == "I" { fetched += $3 } $2 == "O" { served += $3 }
        END { printf "%d %d\n", fetched, served }' "$TB_WORK/acng-log/apt-cacher.log" 2>/dev/null ||
        echo "0 0"
}

# === hosts ===

# Boots HOST at ADDR ("N" for $TB_PREFIX.N, or the full address) and waits until it runs.
tb_boot() { # HOST ADDR
    tb_start "$@" && tb_wait "$1"
}

# Starts HOST's container without waiting (boot several, then tb_wait each).
tb_start() { tb_timed "start ${1:-}" tb__start "$@"; }

tb__start() { # HOST ADDR
    local host=${1:-} addr
    tb__need_run || return 1
    tb__valid_name "$host" || { tb_err "host name '$host' must match ^[a-z][a-z0-9-]{0,15}\$ (not tb-proxy)"; return 2; }
    [ -z "${TB_ADDR[$host]:-}" ] || { tb_err "'$host' exists already"; return 1; }
    addr=$(tb__addr "${2:-}") || return 2
    [ -n "${TB_ROOTFS:-}" ] || tb_rootfs || return 1
    local hd=$TB_WORK/hosts/$host
    mkdir -p "$hd/upper" "$hd/work" "$hd/root" || return 1
    tb__materialize "$hd" || return 1
    TB_ADDR[$host]=$addr
    TB_HOSTS+=("$host")
    tb__configure_root "$host" "$hd/root" || return 1
    # --register=no/--keep-unit: there is no machined (nor systemd) on the host to register with.
    # --resolv-conf=delete: no DNS inside; names come from /etc/hosts.
    systemd-nspawn --quiet --boot --directory="$hd/root" --machine="tb$TB_ID-$host" \
        --hostname="$host" --register=no --keep-unit --network-bridge="$TB_BRIDGE" \
        --link-journal=no --resolv-conf=delete --timezone=off --console=passive \
        </dev/null >"$hd/console.log" 2>&1 &
    TB_NSPAWN[$host]=$!
    echo "$!" >"$hd/nspawn.pid"
}

# The host's own tree: an overlay on the cached rootfs, or a full copy (CHOM_TESTBED_COPY=copy).
tb__materialize() { # HOSTDIR
    local hd=$1
    case $TB_COPY in
    overlay)
        mount -t overlay "chomtb-$TB_ID" \
            -o "lowerdir=$TB_ROOTFS,upperdir=$hd/upper,workdir=$hd/work" "$hd/root"
        ;;
    copy) cp -a "$TB_ROOTFS/." "$hd/root/" ;;
    *) tb_err "CHOM_TESTBED_COPY must be overlay or copy, not '$TB_COPY'"; return 2 ;;
    esac
}

# Identity and configuration of one copy, written before it boots.
tb__configure_root() { # HOST ROOT
    local host=$1 root=$2
    if ! { printf '%s\n' "$host" >"$root/etc/hostname" &&
        printf '%s\n' "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" >"$root/etc/machine-id" &&
        tb__hosts_file >"$root/etc/hosts" &&
        printf 'Acquire::http::Proxy "http://%s:%s";\n' "$TB_PROXY_ADDR" "$TB_PROXY_PORT" \
            >"$root/etc/apt/apt.conf.d/01chom-testbed-proxy"; }; then
        tb_err "could not write the configuration of $host"
        return 1
    fi
    cat >"$root/etc/systemd/network/10-host0.network" <<NET || return 1
[Match]
Name=host0

[Network]
Address=${TB_ADDR[$host]}/24
LinkLocalAddressing=no
IPv6AcceptRA=no
NET
    if [ -x "$root/usr/bin/ssh-keygen" ]; then
        chroot "$root" ssh-keygen -A >/dev/null || { tb_err "ssh-keygen -A failed in $host"; return 1; }
    fi
}

# /etc/hosts for every host: the testbed's hosts and namespaces by name, no DNS.
tb__hosts_file() {
    local h
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'
    printf 'ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n\n# chom testbed run %s\n' "$TB_ID"
    printf '%s\ttb-proxy\n' "$TB_PROXY_ADDR"
    for h in "${TB_HOSTS[@]}"; do printf '%s\t%s\n' "${TB_ADDR[$h]}" "$h"; done
    for h in "${TB_NETNS_NAMES[@]}"; do printf '%s\t%s\n' "${TB_ADDR[$h]}" "$h"; done
}

# Rewrites /etc/hosts on every booted host.
tb__sync_hosts() {
    local h
    for h in "${!TB_INIT[@]}"; do
        tb__hosts_file | tb_exec "$h" sh -c 'cat >/etc/hosts.new && mv /etc/hosts.new /etc/hosts' ||
            { tb_err "could not write /etc/hosts on $h"; return 1; }
    done
}

# Waits until HOST's systemd says running or degraded and host0 has its address.
tb_wait() { tb_timed "boot ${1:-}" tb__wait "$@"; }

tb__wait() { # HOST
    local host=${1:-} npid pid state='' deadline
    npid=${TB_NSPAWN[$host]:-}
    [ -n "$npid" ] || { tb_err "tb_wait: '$host' was not started"; return 1; }
    deadline=$(($(tb__now_us) + TB_BOOT_TIMEOUT * 1000000))
    until tb__find_init "$host"; do
        tb__alive "$npid" && [ "$(tb__now_us)" -lt "$deadline" ] && { sleep 0.2; continue; }
        tb__boot_failed "$host" "no container init under nspawn $npid"
        return 1
    done
    read -r pid _ <"$TB_WORK/hosts/$host/init.pid"
    TB_INIT[$host]=$pid
    until [ "$state" = running ] || [ "$state" = degraded ]; do
        if ! tb__alive "$npid" || [ "$(tb__now_us)" -ge "$deadline" ]; then
            unset "TB_INIT[$host]"
            tb__boot_failed "$host" "not booted after ${TB_BOOT_TIMEOUT}s (state '$state')"
            return 1
        fi
        sleep 0.2
        state=$(tb_exec "$host" systemctl is-system-running 2>/dev/null) || true
    done
    if [ "$state" = degraded ]; then
        tb_log "$host is degraded; failed units: $(tb_exec "$host" systemctl --failed --plain --no-legend | awk '{ printf "%s ", $1 }')"
    fi
    tb_wait_for 30 tb__has_addr "$pid" "${TB_ADDR[$host]}" ||
        { tb_err "$host: host0 did not get ${TB_ADDR[$host]}"; return 1; }
    tb__sync_hosts
}

tb__boot_failed() { # HOST WHY
    tb_err "$1: $2; last console lines:"
    tail -n 20 "$TB_WORK/hosts/$1/console.log" >&2
}

tb__alive() { # PID
    local state
    state=$(tb__stat_field "$1" 1) && [ "$state" != Z ]
}

tb__has_addr() { # INIT_PID ADDR
    nsenter -t "$1" -n ip -4 -o addr show dev host0 2>/dev/null | grep -qF " $2/"
}

# Records the PID (on the host) of HOST's container init: the child of nspawn whose PID is 1
# in its own namespace.
tb__find_init() { # HOST
    local npid=${TB_NSPAWN[$1]} c nspid f kids=() k
    for f in /proc/"$npid"/task/*/children; do
        [ -e "$f" ] || continue
        read -r -a k 2>/dev/null <"$f" || true
        kids+=("${k[@]}")
    done
    for c in "${kids[@]}"; do
        nspid=$(awk '$1 == "NSpid:" { print $NF }' "/proc/$c/status" 2>/dev/null)
        if [ "$nspid" = 1 ]; then
            echo "$c $(tb__starttime "$c")" >"$TB_WORK/hosts/$1/init.pid"
            return 0
        fi
    done
    return 1
}

# Runs CMD... inside HOST (all its namespaces, a clean environment); returns CMD's status.
# stdin, stdout and stderr pass through.
tb_exec() { # HOST CMD...
    local host=${1:-}
    tb__need_host "$host" || return 125
    shift
    [ "$#" -gt 0 ] || { tb_err "tb_exec HOST CMD...: no command"; return 125; }
    nsenter -t "${TB_INIT[$host]}" -a -- /usr/bin/env -i "PATH=$TB_PATH" HOME=/root \
        LANG=C.UTF-8 TERM=dumb "$@"
}

# Copies SRC from the host into HOST: a file to the file DST (mode kept, parents made), or a
# directory's contents into the directory DST.
tb_copy_in() { # HOST SRC DST
    local host=${1:-} src=${2:-} dst=${3:-}
    tb__need_host "$host" || return 1
    [[ $dst == /* ]] || { tb_err "tb_copy_in: DST must be an absolute path"; return 2; }
    if [ -f "$src" ]; then
        # shellcheck disable=SC2094 # stat reads the mode, the container reads the content
        tb_exec "$host" sh -c 'mkdir -p "$(dirname "$1")" && cat >"$1.tb-new" && chmod "$2" "$1.tb-new" &&
            mv "$1.tb-new" "$1"' sh "$dst" "$(stat -c %a "$src")" <"$src"
    elif [ -d "$src" ]; then
        tar -C "$src" -cf - . | tb_exec "$host" sh -c 'mkdir -p "$1" && tar -C "$1" -xf -' sh "$dst"
    else
        tb_err "tb_copy_in: '$src' is not a file or directory"
        return 2
    fi
}

# Installs PKG... on HOST through the apt proxy (no recommends); a no-op for what is installed.
tb_apt_install() { tb_timed "apt ${1:-} ${*:2}" tb__apt_install "$@"; }

tb__apt_install() { # HOST PKG...
    local host=${1:-} missing=() p log
    tb__need_host "$host" || return 1
    shift
    for p in "$@"; do
        [[ $p =~ ^[a-z0-9][a-z0-9.+-]+$ ]] || { tb_err "not a package name: '$p'"; return 2; }
        tb_exec "$host" dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q ' installed$' ||
            missing+=("$p")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    log=$TB_WORK/hosts/$host/apt.log
    if ! tb_exec "$host" sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        -o DPkg::Lock::Timeout=120 --no-install-recommends "$@"' sh "${missing[@]}" >>"$log" 2>&1; then
        tb_err "apt-get install ${missing[*]} on $host failed; last lines of $log:"
        tail -n 15 "$log" >&2
        return 1
    fi
}

# === ssh between hosts ===

# Lets root on FROM log in as root on TO: openssh-server on TO, a key generated inside FROM,
# authorized on TO, TO's host key pinned in FROM's known_hosts (by name and address).
tb_ssh_trust() { tb_timed "ssh ${1:-}->${2:-}" tb__ssh_trust "$@"; }

tb__ssh_trust() { # FROM TO
    local from=${1:-} to=${2:-} pub hostkey
    tb__need_host "$from" && tb__need_host "$to" || return 1
    tb__apt_install "$to" openssh-server && tb__apt_install "$from" openssh-client || return 1
    tb_exec "$to" systemctl enable --now --quiet ssh.service || { tb_err "sshd does not start on $to"; return 1; }
    pub=$(tb_exec "$from" sh -c 'umask 077; mkdir -p /root/.ssh &&
        { [ -f /root/.ssh/id_ed25519 ] || ssh-keygen -q -t ed25519 -N "" -C "root@$(hostname)" -f /root/.ssh/id_ed25519; } &&
        cat /root/.ssh/id_ed25519.pub') || return 1
    hostkey=$(tb_exec "$to" cat /etc/ssh/ssh_host_ed25519_key.pub | awk '{ print $1, $2 }') || return 1
    [[ $pub =~ ^ssh-ed25519\ [A-Za-z0-9+/=]+\ [^[:space:]]+$ ]] || { tb_err "unexpected public key on $from"; return 1; }
    [[ $hostkey =~ ^ssh-ed25519\ [A-Za-z0-9+/=]+$ ]] || { tb_err "unexpected host key on $to"; return 1; }
    printf '%s\n' "$pub" | tb__append_line "$to" /root/.ssh/authorized_keys || return 1
    printf '%s,%s %s\n' "$to" "${TB_ADDR[$to]}" "$hostkey" | tb__append_line "$from" /root/.ssh/known_hosts || return 1
    local out
    out=$(tb_exec "$from" ssh -o BatchMode=yes -o ConnectTimeout=10 "root@$to" hostname </dev/null) ||
        { tb_err "ssh root@$to from $from failed"; return 1; }
    [ "$out" = "$to" ] || { tb_err "ssh root@$to from $from reached '$out'"; return 1; }
}

# Appends the line on stdin to FILE in HOST unless present (file mode 0600, dir 0700).
tb__append_line() { # HOST FILE
    tb_exec "$1" sh -c 'umask 077; mkdir -p "$(dirname "$1")" && l=$(cat) &&
        { grep -qxF -- "$l" "$1" 2>/dev/null || printf "%s\n" "$l" >>"$1"; }' sh "$2"
}

# === outside namespaces and probes ===

# A plain network namespace NAME on the bridge at ADDR (no container): "the outside world".
tb_netns() { tb_timed "netns ${1:-}" tb__netns "$@"; }

tb__netns() { # NAME ADDR
    local name=${1:-} addr ns idx hv pv
    tb__need_run || return 1
    tb__valid_name "$name" || { tb_err "netns name '$name' must match ^[a-z][a-z0-9-]{0,15}\$"; return 2; }
    [ -z "${TB_ADDR[$name]:-}" ] || { tb_err "'$name' exists already"; return 1; }
    addr=$(tb__addr "${2:-}") || return 2
    idx=${#TB_NETNS_NAMES[@]}
    [ "$idx" -lt 100 ] || { tb_err "at most 100 namespaces per run"; return 1; }
    ns=chomtb-$TB_ID-$name hv=vn-tb$TB_ID$idx pv=vp-tb$TB_ID$idx
    ip netns add "$ns" || return 1
    TB_NETNS[$name]=$ns
    TB_ADDR[$name]=$addr
    TB_NETNS_NAMES+=("$name")
    if ! { ip link add "$hv" type veth peer name "$pv" &&
        ip link set "$pv" netns "$ns" &&
        ip -n "$ns" link set "$pv" name eth0 &&
        ip -n "$ns" addr add "$addr/24" dev eth0 &&
        ip -n "$ns" link set lo up &&
        ip -n "$ns" link set eth0 up &&
        ip link set "$hv" master "$TB_BRIDGE" &&
        ip link set "$hv" up; }; then
        tb_err "could not wire netns $ns"
        return 1
    fi
    tb__sync_hosts
}

# Prints "open" or "closed": whether a TCP connection from FROM (a tb_netns name or a booted
# host) to TARGET:PORT succeeds within TB_PROBE_TIMEOUT seconds. TARGET: a testbed name,
# tb-proxy, or an IPv4 address.
tb_probe() { # FROM TARGET PORT
    local from=${1:-} target=${2:-} port=${3:-} addr run=()
    tb__need_run || return 2
    if ! [[ $port =~ ^[0-9]{1,5}$ ]] || [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
        tb_err "tb_probe: bad port '$port'"
        return 2
    fi
    if [ "$target" = tb-proxy ]; then
        addr=$TB_PROXY_ADDR
    elif [ -n "${TB_ADDR[$target]:-}" ]; then
        addr=${TB_ADDR[$target]}
    elif [[ $target =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]]; then
        addr=$target
    else
        tb_err "tb_probe: unknown target '$target'"
        return 2
    fi
    if [ -n "${TB_NETNS[$from]:-}" ]; then
        run=(ip netns exec "${TB_NETNS[$from]}")
    elif [ -n "${TB_INIT[$from]:-}" ]; then
        run=(nsenter -t "${TB_INIT[$from]}" -n)
    else
        tb_err "tb_probe: unknown source '$from'"
        return 2
    fi
    if "${run[@]}" timeout "$TB_PROBE_TIMEOUT" bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$addr" "$port" 2>/dev/null; then
        echo open
    else
        echo closed
    fi
}

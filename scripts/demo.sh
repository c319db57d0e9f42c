#!/bin/sh
# make demo: the whole cloud on this machine. Starts `kvmstack dev` (a single-server cluster and
# this host's agent in one process), logs in as its admin, uploads the guest kit's kernel and
# initrd as images, creates a flavor and a network, boots two instances on it and shows their
# consoles: each takes a DHCP lease and pings the other.
#
#   scripts/demo.sh [--stop]
#
# With /dev/kvm it runs here and leaves the cloud running (state in kvmstack dev's default data
# directory, the guests waiting on their consoles), ready for the user's own commands; --stop
# uses a throw-away cloud instead, stopped and removed at the end. Without /dev/kvm the script
# runs itself inside the nested test host (tests/kvmhost), and the cloud ends with it.
#
# Plain POSIX sh: the test host has nothing but busybox. It drives only the kvmstack CLI, so
# every step is the command a user would type (each is printed before it runs).
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$top/build/bin}
KIT=${KIT:-$top/build/kit}
keep=1
for arg; do
	case $arg in
	--keep) keep=1 ;;
	--stop) keep=0 ;;
	-h | --help)
		sed -n '2,12s/^# \{0,1\}//p' "$0"
		exit 0
		;;
	*)
		echo "demo: unknown argument $arg (usage: $0 [--stop])" >&2
		exit 2
		;;
	esac
done
for f in "$BIN/kvmstack" "$BIN/vmm" "$KIT/vmlinux" "$KIT/initrd.img"; do
	[ -e "$f" ] || {
		echo "demo: $f missing (make build kit)" >&2
		exit 2
	}
done

if [ ! -c /dev/kvm ] && [ -z "${KVMSTACK_IN_KVMHOST:-}" ]; then
	echo "demo: no /dev/kvm here: the cloud lives in the nested test host and ends with the demo" >&2
	exec "$BIN/kvmhost-run" --file "$BIN/kvmstack" --file "$BIN/vmm" --file "$KIT/vmlinux" \
		--file "$KIT/initrd.img" --file "$top/scripts/demo.sh" -- /bin/sh "$top/scripts/demo.sh"
fi
# In the test host (whose init already keeps its serial line from echoing the runner's
# keepalives) the cloud ends with the demo.
if [ -n "${KVMSTACK_IN_KVMHOST:-}" ]; then keep=0; fi

# A kept cloud is the user's `kvmstack dev` (default ports, data directory and namespace); a
# throw-away one uses ports and a namespace of its own, so that it never meets a running one.
if [ "$keep" = 1 ]; then
	data=${XDG_STATE_HOME:-$HOME/.local/state}/kvmstack/dev
	addr=127.0.0.1:8480 raft=127.0.0.1:8481 netns=kvmstack-dev
	mkdir -p "$data"
else
	data=$(mktemp -d "${TMPDIR:-/tmp}/kvmstack-demo.XXXXXX")
	addr=127.0.0.1:8490 raft=127.0.0.1:8491 netns=kvmstack-demo
	export KVMSTACK_CONFIG_DIR="$data/cli" # the CLI's token cache: not the user's
fi
export KVMSTACK_ADDR=$addr

say() { printf '\n== %s\n' "$*"; }
kvmstack() { "$BIN/kvmstack" "$@"; }
# run prints a kvmstack command (password and guest script elided) and runs it.
run() {
	line='$ kvmstack'
	for a; do
		case $a in *' '*) a="'$a'" ;; esac
		line="$line $a"
	done
	printf '%s\n' "$line" | sed 's/--password [^ ]*/--password ****/; s/kit\.run=[^ '"'"']*/kit.run=<the script above, base64>/'
	kvmstack "$@"
}
# idof prints the id of the named image, flavor or network (empty if there is none).
idof() { kvmstack "$1" list | awk -v n="$2" 'NR > 1 && $2 == n { print $1; exit }'; }

devpid=
stop_cloud() {
	[ -n "$devpid" ] || return 0
	kill "$devpid" 2>/dev/null || true
	wait "$devpid" 2>/dev/null || true
	devpid=
}
cleanup() {
	rc=$?
	if [ "$keep" = 1 ] && [ "$rc" = 0 ]; then
		return
	fi
	# Guests outlive the agent by design (it adopts them on its next start): a throw-away
	# cloud deletes them before it stops.
	if [ -n "$devpid" ]; then
		for id in ${id_a:-} ${id_b:-}; do kvmstack instance delete "$id" >/dev/null 2>&1 || true; done
		# The agent stops their vmm processes and removes their directories.
		n=0
		for id in ${id_a:-} ${id_b:-}; do
			while [ -d "$data/agent/instances/$id" ] && [ $n -lt 150 ]; do
				sleep 0.2
				n=$((n + 1))
			done
		done
	fi
	stop_cloud
	if [ "$keep" = 0 ]; then
		rm -rf "$data"
		# The namespace (bridges, TAPs) goes with its name.
		if command -v ip >/dev/null && ip netns help 2>&1 | grep -q 'ip netns'; then
			ip netns del "$netns" 2>/dev/null || true
		fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

devlog=$data/dev.log
if [ "$keep" = 1 ] && [ -s "$data/admin-password" ] &&
	kvmstack login --password "$(cat "$data/admin-password")" >/dev/null 2>&1; then
	# A kept cloud from an earlier run: use it.
	say "kvmstack dev already runs on $addr (data in $data): using it"
	pw=$(cat "$data/admin-password")
else
	say "starting the cloud: kvmstack dev (server + agent, guests' network in namespace $netns)"
	if [ "$keep" = 1 ]; then
		: >"$devlog"
		setsid "$BIN/kvmstack" dev --data-dir "$data" --http "$addr" --bind "$raft" --netns "$netns" \
			</dev/null >>"$devlog" 2>&1 &
	else
		"$BIN/kvmstack" dev --data-dir "$data" --http "$addr" --bind "$raft" --netns "$netns" \
			</dev/null >"$devlog" 2>&1 &
	fi
	devpid=$!
	start=$(date +%s)
	until grep -q 'kvmstack login' "$devlog" 2>/dev/null; do
		if ! kill -0 "$devpid" 2>/dev/null; then
			cat "$devlog"
			echo "demo: kvmstack dev ended" >&2
			exit 1
		fi
		[ $(($(date +%s) - start)) -lt 60 ] || {
			cat "$devlog"
			echo "demo: kvmstack dev did not start within 60 s" >&2
			exit 1
		}
		sleep 0.2
	done
	sed 's/^/  /' "$devlog"
	pw=$(sed -n 's/.*user admin, password \([^ ]*\) .*/\1/p' "$devlog" | tail -n 1)
	[ -n "$pw" ] || pw=$(cat "$data/admin-password") # not the first start: no password printed
fi

say "logging in with the admin password printed on first start"
run login --user admin --project admin --password "$pw"
# The agent registers its host right after the server is up.
until kvmstack host list 2>/dev/null | grep -q ' up '; do sleep 0.2; done
run host list

say "images, flavor, network"
# A kept cloud may have them from an earlier demo.
[ -n "$(idof image demo-kernel)" ] ||
	run image create demo-kernel --kind kernel --file "$KIT/vmlinux" --no-progress
[ -n "$(idof image demo-initrd)" ] ||
	run image create demo-initrd --kind initrd --file "$KIT/initrd.img" --no-progress
[ -n "$(idof flavor demo.tiny)" ] ||
	run flavor create demo.tiny --vcpus 1 --memory 128
[ -n "$(idof network demo-net)" ] ||
	run network create demo-net --cidr 10.77.0.0/24
for n in demo-a demo-b; do
	for id in $(kvmstack instance list --name "$n" | awk 'NR > 1 { print $1 }'); do
		run instance delete "$id"
	done
done
run image list
run flavor list
run network list

# guest_script is the shell command a guest runs after boot (kit.run, docs/KIT.md): a DHCP lease
# on eth0 (busybox udhcpc, with a two-line script that sets the leased address), then three pings
# to the peer. demo-b is told demo-a's address (the API returned it when demo-a was created);
# demo-a learns demo-b's from demo-b's ARP request and pings back. Each then answers pings a
# little longer, and powers off (or, kept, waits with a shell on its console).
guest_script() {
	peer=$1 after=$2
	cat <<EOF
ip link set eth0 up
printf '#!/bin/sh\n[ "\$1" = bound ] && ip addr add \$ip/\$mask dev \$interface && echo "\$interface: \$ip/\$mask"\n' >/bin/dhcp-bound
chmod +x /bin/dhcp-bound
udhcpc -q -n -t 10 -T 2 -i eth0 -s /bin/dhcp-bound 2>&1 || { echo "DEMO FAILED: no DHCP lease"; exit 1; }
peer=$peer
n=0
if [ -z "\$peer" ]; then
  echo "waiting for the peer's ARP request"
  while [ -z "\$peer" ] && [ \$n -lt 240 ]; do
    while read -r a t f h m d; do [ "\$d" = eth0 ] && [ "\$f" = 0x2 ] && peer=\$a; done </proc/net/arp
    [ -n "\$peer" ] || { sleep 0.5; n=\$((n+1)); }
  done
  [ -n "\$peer" ] || { echo "DEMO FAILED: no peer"; exit 1; }
else
  until ping -c 1 -W 1 \$peer >/dev/null 2>&1; do n=\$((n+1)); [ \$n -lt 120 ] || break; done
fi
if ping -c 3 \$peer; then echo "DEMO PING OK \$peer"; else echo "DEMO PING FAILED \$peer"; fi
$after
EOF
}
after='sleep 6'
[ "$keep" = 1 ] && after='echo "a shell waits here: kvmstack instance console -i NAME"; exec setsid cttyhack sh'
cmdline() {
	printf 'console=ttyS0 reboot=k panic=-1 quiet kit.run=%s' "$(guest_script "$1" "$after" | base64 -w0)"
}

say "two instances on demo-net (1 vCPU, 128 MiB, the kit kernel and initrd)"
echo "Each guest runs this after boot (demo-b with peer=<demo-a's address>):"
guest_script '' "$after" | sed 's/^/    /'
kernel=$(idof image demo-kernel) initrd=$(idof image demo-initrd)
run instance create demo-a --flavor demo.tiny --kernel "$kernel" --initrd "$initrd" \
	--network demo-net --meta "cmdline=$(cmdline '')" >"$data/demo-a.txt"
cat "$data/demo-a.txt"
ip_a=$(awk '$2 == "demo-a" { print $5 }' "$data/demo-a.txt")
run instance create demo-b --flavor demo.tiny --kernel "$kernel" --initrd "$initrd" \
	--network demo-net --meta "cmdline=$(cmdline "$ip_a")" >"$data/demo-b.txt"
cat "$data/demo-b.txt"
id_a=$(awk '$2 == "demo-a" { print $1 }' "$data/demo-a.txt")
id_b=$(awk '$2 == "demo-b" { print $1 }' "$data/demo-b.txt")
[ -n "$ip_a" ] && [ -n "$id_b" ] || {
	echo "demo: could not read the created instances" >&2
	exit 1
}

say "waiting for both guests to boot, take a lease and ping each other"
# console prints an instance's serial console log: through the API where this kvmstack has
# `instance console`, else from the agent's data directory (same machine).
if kvmstack instance --help 2>/dev/null | grep -q '^ *console'; then
	console_cli=1
	console() {
		kvmstack instance console "$1" 2>/dev/null ||
			cat "$data/agent/instances/$1/console.log" 2>/dev/null || true
	}
else
	console_cli=0
	console() { cat "$data/agent/instances/$1/console.log" 2>/dev/null || true; }
fi
start=$(date +%s) shown=
while :; do
	done_a=$(console "$id_a" | grep -c 'DEMO PING\|DEMO FAILED' || true)
	done_b=$(console "$id_b" | grep -c 'DEMO PING\|DEMO FAILED' || true)
	states=$(kvmstack instance list | awk 'NR > 1 { printf "%s=%s ", $2, $3 }')
	if [ "$states" != "$shown" ]; then
		echo "  $(($(date +%s) - start)) s: $states"
		shown=$states
	fi
	[ "$done_a" -gt 0 ] && [ "$done_b" -gt 0 ] && break
	case $states in *=error*)
		for n in a b; do
			eval "id=\$id_$n"
			echo "demo-$n's history:"
			kvmstack instance show "$id" -o json | sed -n 's/^ *"reason": "\(.*\)",\{0,1\}$/  \1/p'
		done
		echo "demo: an instance failed" >&2
		exit 1
		;;
	esac
	[ $(($(date +%s) - start)) -lt 600 ] || {
		echo "demo: the guests did not finish within 600 s" >&2
		break
	}
	sleep 1
done
sleep 1
for n in a b; do
	eval "id=\$id_$n"
	say "console of demo-$n"
	if [ "$console_cli" = 1 ] && kvmstack instance console "$id" >"$data/console-$n.txt" 2>/dev/null; then
		printf '$ kvmstack instance console demo-%s\n' "$n"
	else
		echo "(from $data/agent/instances/$id/console.log)"
		cat "$data/agent/instances/$id/console.log" >"$data/console-$n.txt"
	fi
	tr -d '\r' <"$data/console-$n.txt" | sed "s/^/demo-$n | /"
done
run instance list

ok=1
for id in "$id_a" "$id_b"; do console "$id" | grep -q 'DEMO PING OK' || ok=0; done
if [ "$ok" = 1 ]; then
	say "demo-a and demo-b pinged each other over demo-net"
else
	say "DEMO FAILED: see the consoles above"
	exit 1
fi
if [ "$keep" = 1 ]; then
	cat <<EOF

The cloud keeps running (kvmstack dev${devpid:+, pid $devpid}, log $devlog):
  export KVMSTACK_ADDR=$addr
  kvmstack instance list
  kvmstack instance console -i demo-a   # the guests wait with a shell on their consoles
  kvmstack instance delete ID           # guests outlive kvmstack dev until deleted
EOF
fi

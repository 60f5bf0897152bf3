#!/bin/sh
# install.sh: install ggagent on a fresh Linux device from a ggfleet broker.
#
#   curl -fsSL https://BROKER/install.sh | sudo sh -s -- --core NAME --token TOKEN
#
# The broker serves this script (GET /install.sh) with its own URL, the
# SHA-256 of its CA and that CA's certificate filled in below. The script
# maps `uname -m` to a build (x86_64 -> amd64, aarch64 -> arm64,
# armv7l -> armv7), downloads it from the broker (trusting that CA),
# verifies its SHA-256, installs it as BIN_DIR/ggagent and runs
# `ggagent install` with the token in GGAGENT_TOKEN (not on the command
# line, where other users could see it).
set -eu

broker='@GGFLEET_BROKER_URL@'
ca_sha256='@GGFLEET_CA_SHA256@'
ca_pem='@GGFLEET_CA_PEM@'

# Placeholders left in place: the script was not served by a broker.
case $broker in @*@) broker= ;; esac
case $ca_sha256 in @*@) ca_sha256= ;; esac
case $ca_pem in @*@) ca_pem= ;; esac

core=
token=${GGAGENT_TOKEN:-}
runtime=
dry_run=
bin_dir=/usr/local/bin

die() {
	echo "install.sh: $*" >&2
	exit 1
}

usage() {
	cat <<'EOF'
Usage: install.sh --core NAME --token TOKEN [options]

Installs ggagent from the broker and enrolls this device as core NAME.

Options:
  --core NAME        core name the enrollment token was made for (required)
  --token TOKEN      one-time enrollment token (or set GGAGENT_TOKEN)
  --broker URL       broker URL (default: the broker that served this script)
  --ca-sha256 HEX    pin the broker's CA (default: the serving broker's CA)
  --runtime NAME     greengrass (default) or simulated
  --bin-dir DIR      where to put ggagent (default /usr/local/bin)
  --dry-run          download and verify, print the install command, change nothing
  -h, --help         show this help
EOF
}

# value OPTION ARGC: fail unless OPTION has a value after it.
value() {
	[ "$2" -ge 2 ] || die "$1 needs a value (see --help)"
}

while [ $# -gt 0 ]; do
	case $1 in
	--core) value "$1" $#; core=$2; shift 2 ;;
	--core=*) core=${1#*=}; shift ;;
	--token) value "$1" $#; token=$2; shift 2 ;;
	--token=*) token=${1#*=}; shift ;;
	--broker) value "$1" $#; broker=$2; shift 2 ;;
	--broker=*) broker=${1#*=}; shift ;;
	--ca-sha256) value "$1" $#; ca_sha256=$2; shift 2 ;;
	--ca-sha256=*) ca_sha256=${1#*=}; shift ;;
	--runtime) value "$1" $#; runtime=$2; shift 2 ;;
	--runtime=*) runtime=${1#*=}; shift ;;
	--bin-dir) value "$1" $#; bin_dir=$2; shift 2 ;;
	--bin-dir=*) bin_dir=${1#*=}; shift ;;
	--dry-run) dry_run=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown option $1 (see --help)" ;;
	esac
done

[ -n "$core" ] || die "--core NAME is required: the core the enrollment token was made for"
[ -n "$token" ] || die "--token TOKEN is required (or set GGAGENT_TOKEN): create one with POST /cores/NAME/enrollmentTokens"
[ -n "$broker" ] || die "--broker URL is required: this script was not served by a broker"
case $broker in
http://* | https://*) ;;
*) die "--broker $broker: want http(s)://host[:port]" ;;
esac
broker=${broker%/}

os=$(uname -s)
[ "$os" = Linux ] || die "unsupported operating system $os: ggagent runs on Linux"
machine=$(uname -m)
case $machine in
x86_64 | amd64) arch=amd64 ;;
aarch64 | arm64) arch=arm64 ;;
armv7l | armv7* | armv8l) arch=armv7 ;;
*) die "unsupported architecture $machine: ggagent is built for x86_64 (amd64), aarch64 (arm64) and armv7l (armv7)" ;;
esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# fetch URL FILE: download with curl or wget, trusting the broker's CA when known.
if command -v curl >/dev/null 2>&1; then
	fetch() {
		if [ -n "$ca_pem" ]; then
			curl -fsSL --cacert "$tmp/ca.pem" -o "$2" "$1"
		else
			curl -fsSL -o "$2" "$1"
		fi
	}
elif command -v wget >/dev/null 2>&1; then
	fetch() {
		if [ -n "$ca_pem" ]; then
			wget -q --ca-certificate="$tmp/ca.pem" -O "$2" "$1"
		else
			wget -q -O "$2" "$1"
		fi
	}
else
	die "neither curl nor wget is installed: install curl (apt-get install curl, dnf install curl) and run again"
fi

if command -v sha256sum >/dev/null 2>&1; then
	sha256() { sha256sum "$1" | cut -d ' ' -f 1; }
elif command -v shasum >/dev/null 2>&1; then
	sha256() { shasum -a 256 "$1" | cut -d ' ' -f 1; }
else
	die "neither sha256sum nor shasum is installed: cannot verify the download"
fi

if [ -n "$ca_pem" ]; then
	printf '%s\n' "$ca_pem" >"$tmp/ca.pem"
fi

url=$broker/downloads/ggagent/linux/$arch
echo "install.sh: downloading ggagent for $machine ($arch) from $url"
fetch "$url" "$tmp/ggagent" || die "download $url failed"
fetch "$url.sha256" "$tmp/ggagent.sha256" || die "download $url.sha256 failed"
want=$(cut -d ' ' -f 1 "$tmp/ggagent.sha256")
got=$(sha256 "$tmp/ggagent")
[ -n "$want" ] || die "the broker sent an empty checksum for $url"
[ "$got" = "$want" ] || die "checksum mismatch: the download has SHA-256 $got, the broker says $want; not installing"
echo "install.sh: SHA-256 verified ($got)"

set -- install --broker "$broker" --core "$core"
[ -z "$ca_sha256" ] || set -- "$@" --ca-sha256 "$ca_sha256"
[ -z "$runtime" ] || set -- "$@" --runtime "$runtime"

if [ -n "$dry_run" ]; then
	echo "install.sh: dry run: would install $bin_dir/ggagent and run:"
	echo "  GGAGENT_TOKEN=<token> $bin_dir/ggagent $*"
	exit 0
fi

mkdir -p "$bin_dir" 2>/dev/null || true
[ -w "$bin_dir" ] || die "cannot write $bin_dir: run as root (... | sudo sh -s -- ...)"
chmod 0755 "$tmp/ggagent"
mv -f "$tmp/ggagent" "$bin_dir/ggagent.new"
mv -f "$bin_dir/ggagent.new" "$bin_dir/ggagent"
echo "install.sh: installed $bin_dir/ggagent; running ggagent install"
rm -rf "$tmp"
trap - EXIT
GGAGENT_TOKEN=$token
export GGAGENT_TOKEN
exec "$bin_dir/ggagent" "$@"

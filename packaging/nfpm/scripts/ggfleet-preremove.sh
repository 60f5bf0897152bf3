#!/bin/sh
# ggfleet package: before removal (deb: remove|upgrade|deconfigure;
# rpm: 0 = remove, 1 = upgrade). Only a removal stops and disables the
# service; an upgrade leaves it to the new package's postinstall.
set -e
case "$1" in
remove | 0)
	if [ -d /run/systemd/system ]; then
		systemctl disable --now ggfleet.service >/dev/null 2>&1 || true
	fi
	;;
esac
exit 0

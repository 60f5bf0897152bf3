#!/bin/sh
# ggagent package: after removal (deb: remove|purge|upgrade|...; rpm:
# 0 = remove, 1 = upgrade). Remove keeps the identity and settings; only
# a deb purge deletes /var/lib/ggagent. rpm has no purge: say what to
# delete by hand.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
case "$1" in
purge)
	rm -rf /var/lib/ggagent
	echo "ggagent: purged; deleted /var/lib/ggagent (the device identity)"
	;;
remove)
	echo "ggagent: removed; kept /var/lib/ggagent (the device identity) and /etc/default/ggagent (purge deletes them)"
	;;
0)
	echo "ggagent: removed; kept /var/lib/ggagent (the device identity): delete it by hand to forget this device"
	;;
esac
exit 0

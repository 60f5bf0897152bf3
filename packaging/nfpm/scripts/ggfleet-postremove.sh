#!/bin/sh
# ggfleet package: after removal (deb: remove|purge|upgrade|...; rpm:
# 0 = remove, 1 = upgrade). Remove keeps the data; only a deb purge
# deletes /var/lib/ggfleet (systemd keeps a DynamicUser=yes service's
# state in /var/lib/private/ggfleet). rpm has no purge: say what to
# delete by hand.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
case "$1" in
purge)
	rm -rf /var/lib/ggfleet /var/lib/private/ggfleet
	echo "ggfleet: purged; deleted /var/lib/ggfleet (database, CA keys, admin token)"
	;;
remove)
	echo "ggfleet: removed; kept /var/lib/ggfleet (database, CA keys, admin token) and /etc/default/ggfleet (purge deletes them)"
	;;
0)
	echo "ggfleet: removed; kept /var/lib/ggfleet (database, CA keys, admin token): delete it by hand to forget this fleet"
	;;
esac
exit 0

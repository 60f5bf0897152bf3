#!/bin/sh
# ggfleet package: after install or upgrade (deb: configure [old-version];
# rpm: 1 = install, 2+ = upgrade). A fresh install enables and starts the
# broker (by default on 127.0.0.1:8080; see /etc/default/ggfleet). An
# upgrade keeps /var/lib/ggfleet (database, CA keys, admin token) and
# restarts a running service.
set -e
upgrade=
case "$1" in
configure) [ -z "$2" ] || upgrade=1 ;;
[0-9]*) [ "$1" -lt 2 ] || upgrade=1 ;;
esac
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	if [ -n "$upgrade" ]; then
		if systemctl is-active --quiet ggfleet.service; then
			systemctl restart ggfleet.service || true
			echo "ggfleet: upgraded and restarted ggfleet.service; kept /var/lib/ggfleet"
		fi
	else
		systemctl enable --now ggfleet.service || true
		echo "ggfleet: started ggfleet.service; admin token in /var/lib/ggfleet/admin.token; settings in /etc/default/ggfleet"
	fi
fi
exit 0

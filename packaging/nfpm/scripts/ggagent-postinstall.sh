#!/bin/sh
# ggagent package: after install or upgrade (deb: configure [old-version];
# rpm: 1 = install, 2+ = upgrade). A fresh install is not started: the
# agent needs an identity (ggagent enroll) first. An upgrade keeps
# /var/lib/ggagent (the identity) and restarts a running service.
set -e
upgrade=
case "$1" in
configure) [ -z "$2" ] || upgrade=1 ;;
[0-9]*) [ "$1" -lt 2 ] || upgrade=1 ;;
esac
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	if [ -n "$upgrade" ] && systemctl is-active --quiet ggagent.service; then
		systemctl restart ggagent.service || true
		echo "ggagent: upgraded and restarted ggagent.service; kept the identity in /var/lib/ggagent"
	fi
fi
if [ -z "$upgrade" ]; then
	cat <<'MSG'
ggagent is installed but not started: enroll this device first, then start it:
  sudo GGAGENT_TOKEN=<token> ggagent enroll --broker https://<broker>:8080 --core <name> --ca-sha256 <hex>
  sudo systemctl enable --now ggagent.service
Settings: /etc/default/ggagent
MSG
fi
exit 0

#!/usr/bin/env bash
# Install the bridge as a systemd service: a dedicated system user, a virtualenv in
# /opt/secondopinion, settings in /etc/secondopinion, data in /var/lib/secondopinion (0700).
# Run as root from a checkout: deploy/systemd/install.sh   Upgrade: run it again, then
# `systemctl restart secondopinion-bridge` (migrations run at start).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
bash deploy/install-system-deps.sh
id secondopinion >/dev/null 2>&1 || useradd --system --home-dir /var/lib/secondopinion \
  --shell /usr/sbin/nologin --user-group secondopinion
install -d -m 0755 /opt/secondopinion
python3 -m venv /opt/secondopinion/venv
/opt/secondopinion/venv/bin/pip install --quiet --upgrade pip
/opt/secondopinion/venv/bin/pip install --quiet .
install -d -m 0750 -o root -g secondopinion /etc/secondopinion
[ -f /etc/secondopinion/bridge.toml ] || install -m 0640 -o root -g secondopinion \
  config/bridge.example.toml /etc/secondopinion/bridge.toml
[ -f /etc/secondopinion/bridge.env ] || install -m 0640 -o root -g secondopinion \
  deploy/systemd/bridge.env.example /etc/secondopinion/bridge.env
install -d -m 0700 -o secondopinion -g secondopinion /var/lib/secondopinion
install -m 0644 deploy/systemd/secondopinion-bridge.service /etc/systemd/system/
systemctl daemon-reload
echo "edit /etc/secondopinion/bridge.toml and bridge.env, then:"
echo "  systemctl enable --now secondopinion-bridge"
echo "  sudo -u secondopinion env \$(cat /etc/secondopinion/bridge.env) BRIDGE_DATA_DIR=/var/lib/secondopinion BRIDGE_CONFIG_FILE=/etc/secondopinion/bridge.toml /opt/secondopinion/venv/bin/bridge doctor"

#!/usr/bin/env bash
# Provision a Debian 12 machine as a single-box Portcullis appliance:
# packages, a system user, the gateway installed into /opt/portcullis,
# /etc/portcullis/portcullis.conf, clamd, and a systemd unit.
# Safe to run again: every step checks before it changes anything.
set -euo pipefail

SRC=${PORTCULLIS_SRC:-/opt/portcullis-src}
PREFIX=/opt/portcullis
CONF=/etc/portcullis/portcullis.conf
DATA=/var/lib/portcullis

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    python3 python3-venv python3-dev gcc make clamav-daemon clamav-freshclam

id portcullis >/dev/null 2>&1 || \
    useradd --system --home-dir "$DATA" --shell /usr/sbin/nologin portcullis
install -d -o portcullis -g portcullis -m 0750 "$DATA"
install -d -m 0755 /etc/portcullis

python3 -m venv "$PREFIX"
"$PREFIX/bin/pip" install --quiet --upgrade pip setuptools wheel
"$PREFIX/bin/pip" install --quiet -r "$SRC/requirements.txt"
"$PREFIX/bin/pip" install --quiet --no-build-isolation "$SRC"

if [ ! -f "$CONF" ]; then
    cat > "$CONF" <<CONF
# Portcullis appliance settings; \`portcullis config\` lists every key.
data_dir = "$DATA"
smtp_listen_in = "0.0.0.0:25"
smtp_listen_out = "0.0.0.0:26"
web_listen = "0.0.0.0:8025"
relay_domains = ["example.com"]
trusted_networks = ["127.0.0.0/8", "::1/128"]
downstream = "127.0.0.1:2500"
clamd = "unix:/var/run/clamav/clamd.ctl"
CONF
    chmod 0640 "$CONF"
    chgrp portcullis "$CONF"
fi

# The socket clamd makes must be reachable by the gateway's user.
usermod -a -G clamav portcullis

# clamd's scratch files on tmpfs: on the queue's disk they cost it more CPU
# than the scanning itself.
CLAMD_CONF=/etc/clamav/clamd.conf
if [ -f "$CLAMD_CONF" ]; then
    sed -i '/^TemporaryDirectory /d' "$CLAMD_CONF"
    echo "TemporaryDirectory /dev/shm" >> "$CLAMD_CONF"
fi
systemctl enable --now clamav-freshclam clamav-daemon || true

if [ ! -f "$DATA/portcullis.db" ]; then
    # Prints the first admin's password once; it is not stored in clear.
    sudo -u portcullis "$PREFIX/bin/portcullis" --config "$CONF" init
fi

cat > /etc/systemd/system/portcullis.service <<UNIT
[Unit]
Description=Portcullis email security gateway
After=network-online.target clamav-daemon.service

[Service]
User=portcullis
Group=portcullis
Environment=PORTCULLIS_CONFIG=$CONF
ExecStart=$PREFIX/bin/portcullis run
KillSignal=SIGTERM
TimeoutStopSec=60
AmbientCapabilities=CAP_NET_BIND_SERVICE
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now portcullis
echo "Portcullis is running: web admin on port 8025, SMTP on 25 (in) and 26 (out)."

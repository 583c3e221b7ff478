#!/usr/bin/env bash
# Starts (or stops) a real Zabbix server (Debian's zabbix-server-pgsql) for the log shipper's
# tests: a fresh PostgreSQL database with the Zabbix schema, a host "livecast" with trapper
# items livecast.viewers[cam] (unsigned) and livecast.requests[cam] (float), and a server
# listening on 127.0.0.1:<port>. Needs root (it runs PostgreSQL tools as the postgres user).
#   scripts/zabbix-test-server.sh start <port> <dir>   prints the database name
#   scripts/zabbix-test-server.sh frontend <port> <dir> <api-port>
#       also serves Debian's zabbix-frontend-php (the JSON-RPC API, api_jsonrpc.php) on
#       127.0.0.1:<api-port> with PHP's built-in server, for the template import test; it
#       writes /etc/zabbix/zabbix.conf.php, where that frontend reads its database
#   scripts/zabbix-test-server.sh stop <port> <dir>
#   scripts/zabbix-test-server.sh prepare
#       starts PostgreSQL and loads the Zabbix schema into the template database that each
#       test's database is copied from (scripts/test.sh runs it before the tests, so that no
#       test spends its time budget on it)
set -euo pipefail
action=$1 port=${2:-} dir=${3:-}
db="livecast_zbx_${port}"
pg() { su postgres -c "$*"; }

if [ "$action" = frontend ]; then
  api=$4
  mkdir -p /etc/zabbix
  cat > /etc/zabbix/zabbix.conf.php <<PHP
<?php
\$DB['TYPE'] = 'POSTGRESQL';
\$DB['SERVER'] = '';
\$DB['PORT'] = '0';
\$DB['DATABASE'] = '$db';
\$DB['USER'] = 'postgres';
\$DB['PASSWORD'] = '';
\$DB['SCHEMA'] = '';
\$DB['ENCRYPTION'] = false;
\$DB['KEY_FILE'] = '';
\$DB['CERT_FILE'] = '';
\$DB['CA_FILE'] = '';
\$DB['VERIFY_HOST'] = false;
\$DB['CIPHER_LIST'] = '';
\$DB['VAULT_URL'] = '';
\$DB['VAULT_DB_PATH'] = '';
\$DB['VAULT_TOKEN'] = '';
\$DB['DOUBLE_IEEE754'] = true;
\$ZBX_SERVER = '127.0.0.1';
\$ZBX_SERVER_PORT = '$port';
\$ZBX_SERVER_NAME = 'livecast-test';
\$IMAGE_FORMAT_DEFAULT = IMAGE_FORMAT_PNG;
PHP
  chmod 644 /etc/zabbix/zabbix.conf.php
  # As the postgres user: the database takes it over the local socket without a password.
  su postgres -c "php -S 127.0.0.1:$api -t /usr/share/zabbix" >"$dir/frontend.log" 2>&1 &
  echo $! >"$dir/frontend.pid"
  for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json-rpc' \
        -d '{"jsonrpc":"2.0","method":"apiinfo.version","params":{},"id":1}' \
        "http://127.0.0.1:$api/api_jsonrpc.php" 2>/dev/null; then
      exit 0
    fi
    sleep 0.2
  done
  echo "zabbix frontend did not start:" >&2
  cat "$dir/frontend.log" >&2 || true
  exit 1
fi

if [ "$action" = stop ]; then
  if [ -f "$dir/frontend.pid" ]; then
    pkill -P "$(cat "$dir/frontend.pid")" 2>/dev/null || true
    kill "$(cat "$dir/frontend.pid")" 2>/dev/null || true
  fi
  main=$(cat "$dir/server.pid" 2>/dev/null || pgrep -f "zabbix_server -f -c $dir/server.conf" || true)
  if [ -n "$main" ]; then
    kill "$main" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$main" 2>/dev/null || break
      sleep 0.2
    done
    # Whatever did not stop in ten seconds is killed, children first.
    pkill -KILL -P "$main" 2>/dev/null || true
    kill -KILL "$main" 2>/dev/null || true
  fi
  pg "dropdb --if-exists --force $db" >/dev/null 2>&1 || true
  exit 0
fi

[ "$(id -u)" -eq 0 ] || { echo "the Zabbix test server needs root" >&2; exit 1; }
# Start the first PostgreSQL cluster if it is down. The tests run in parallel and each calls
# this script, so the start is serialised by a lock, and a cluster that another caller is
# still starting counts as started once it answers.
pg_up() { pg "psql -qAtc 'select 1'" >/dev/null 2>&1; }
lock=/tmp/livecast-zabbix-test-postgres.lock
exec 9>"$lock"
flock -w 60 9 || {
  echo "the lock $lock is still taken after 60 s; processes holding it open:" >&2
  for fd in /proc/[0-9]*/fd/*; do
    if [ "$(readlink "$fd" 2>/dev/null)" = "$lock" ]; then
      ps -o pid=,args= -p "$(cut -d/ -f3 <<<"$fd")" >&2 || true
    fi
  done
  exit 1
}
if ! pg_up; then
  read -r version cluster _ < <(pg_lsclusters -h | head -1)
  # Its messages ("Removed stale pid file") go to stderr: stdout carries only the database name.
  # The server it starts must not inherit the lock's descriptor: a flock belongs to the open
  # file, so a daemon holding a copy would keep the lock taken after this script exits, and
  # every later caller would wait for it forever.
  pg_ctlcluster "$version" "$cluster" start >&2 9>&- || true
  for _ in $(seq 1 100); do pg_up && break; sleep 0.2; done
  pg_up || { echo "PostgreSQL $version/$cluster does not answer" >&2; exit 1; }
fi
# Loading Zabbix's schema takes tens of seconds on a busy machine, so it is loaded once into a
# template database (named after the installed package's version), and each test's database is
# a copy of it. The template is built under another name and renamed when complete, so a run
# cut off half-way leaves no template that looks finished.
zbx_version=$(dpkg-query -W -f '${Version}' zabbix-server-pgsql | tr -c 'a-zA-Z0-9\n' _)
template="livecast_zbx_template_${zbx_version}"
has_db() { [ "$(pg "psql -qAtc \"select 1 from pg_database where datname = '$1'\"")" = 1 ]; }
if ! has_db "$template"; then
  pg "dropdb --if-exists --force ${template}_building" >/dev/null 2>&1
  pg "createdb ${template}_building"
  for part in schema images data; do
    zcat "/usr/share/zabbix-server-pgsql/$part.sql.gz" | pg "psql -q -d ${template}_building" >/dev/null
  done
  pg "psql -qc 'alter database ${template}_building rename to $template'" >/dev/null
fi
if [ "$action" = prepare ]; then
  flock -u 9
  exit 0
fi
pg "dropdb --if-exists --force $db" >/dev/null
pg "createdb -T $template $db"
flock -u 9
exec 9>&-
pg "psql -q -d $db" <<'SQL'
-- The server monitoring itself only adds noise to a test.
UPDATE hosts SET status = 1 WHERE host = 'Zabbix server';
INSERT INTO hosts (hostid, host, name, status) VALUES (900001, 'livecast', 'livecast', 0);
INSERT INTO items (itemid, hostid, name, key_, type, value_type, delay, history, trends, status)
  VALUES (900101, 900001, 'viewers cam', 'livecast.viewers[cam]', 2, 3, '0', '90d', '365d', 0),
         (900102, 900001, 'requests cam', 'livecast.requests[cam]', 2, 0, '0', '90d', '365d', 0);
INSERT INTO item_rtdata (itemid) VALUES (900101), (900102);
SQL
mkdir -p "$dir"
cat > "$dir/server.conf" <<CONF
ListenIP=127.0.0.1
ListenPort=$port
LogType=file
LogFile=$dir/server.log
PidFile=$dir/server.pid
SocketDir=$dir
DBHost=
DBName=$db
DBUser=postgres
CacheUpdateFrequency=1
StartPollers=1
StartTrappers=2
StartPingers=0
StartDiscoverers=0
StartHTTPPollers=0
CONF
chown -R postgres "$dir"
su postgres -c "/usr/sbin/zabbix_server -f -c $dir/server.conf" >"$dir/stdout.log" 2>&1 &
for _ in $(seq 1 100); do
  if grep -q "started \[trapper #1\]" "$dir/server.log" 2>/dev/null; then
    echo "$db"
    exit 0
  fi
  sleep 0.2
done
echo "zabbix server did not start:" >&2
tail -20 "$dir/server.log" >&2 || true
cat "$dir/stdout.log" >&2 || true
ls -la "$dir" >&2 || true
exit 1

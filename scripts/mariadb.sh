#!/usr/bin/env bash
# Starts or stops a throw-away MariaDB server on a private data dir and port, for tests.
#   scripts/mariadb.sh start DIR PORT   -> prints the server URL (no database part)
#   scripts/mariadb.sh stop DIR
# The server binds 127.0.0.1 only; the app user `skiff` may create databases.
set -euo pipefail

cmd=${1:?usage: mariadb.sh start DIR PORT | stop DIR}
dir=${2:?data dir}

case "$cmd" in
start)
    port=${3:?port}
    mkdir -p "$dir/data" "$dir/run"
    # mariadb-install-db runs as the mysql user, which must be able to walk down to $dir.
    d=$(cd "$dir" && pwd)
    while [ "$d" != "/" ]; do chmod o+x "$d" 2>/dev/null || true; d=$(dirname "$d"); done
    if [ "$(id -u)" = 0 ]; then chown -R mysql:mysql "$dir"; user=mysql; else user=$(id -un); fi
    if [ ! -d "$dir/data/mysql" ]; then
        mariadb-install-db --no-defaults --user="$user" --datadir="$dir/data" \
            --auth-root-authentication-method=socket --skip-test-db >"$dir/run/install.log" 2>&1 \
            || { cat "$dir/run/install.log" >&2; exit 1; }
    fi
    start-stop-daemon --start --background --make-pidfile --pidfile "$dir/run/ssd.pid" \
        --exec /usr/sbin/mariadbd -- --no-defaults --user="$user" --datadir="$dir/data" \
        --port="$port" --bind-address=127.0.0.1 --socket="$dir/run/mysql.sock" \
        --pid-file="$dir/run/mysqld.pid" --log-error="$dir/run/err.log" --skip-log-bin \
        --innodb-flush-log-at-trx-commit=2 --max-connections=500
    for _ in $(seq 1 200); do
        mariadb-admin --socket="$dir/run/mysql.sock" ping >/dev/null 2>&1 && break
        sleep 0.05
    done
    mariadb-admin --socket="$dir/run/mysql.sock" ping >/dev/null 2>&1 \
        || { echo "MariaDB did not start; see $dir/run/err.log" >&2; tail -20 "$dir/run/err.log" >&2; exit 1; }
    mariadb --socket="$dir/run/mysql.sock" -uroot <<SQL
CREATE USER IF NOT EXISTS 'skiff'@'127.0.0.1' IDENTIFIED BY 'skiff-test';
CREATE USER IF NOT EXISTS 'skiff'@'localhost' IDENTIFIED BY 'skiff-test';
GRANT ALL PRIVILEGES ON *.* TO 'skiff'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'skiff'@'localhost';
SQL
    echo "mysql://skiff:skiff-test@127.0.0.1:$port"
    ;;
stop)
    if [ -S "$dir/run/mysql.sock" ]; then
        mariadb-admin --socket="$dir/run/mysql.sock" -uroot shutdown 2>/dev/null || true
    fi
    ;;
*)
    echo "usage: mariadb.sh start DIR PORT | stop DIR" >&2
    exit 2
    ;;
esac

# test/lib.sh — shared by test/run, examples/demo and bench/run.
# Installs what a fresh Debian 12 machine lacks and builds/installs es_ext.

ES_PACKAGES="postgresql-15 postgresql-client-15 postgresql-server-dev-15 postgresql-contrib libipc-run-perl libpq-dev make gcc pgbouncer prometheus-postgres-exporter"

as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	else
		sudo "$@"
	fi
}

es_install_packages() {
	local missing="" p
	for p in $ES_PACKAGES "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
	done
	if [ -n "$missing" ]; then
		echo "es_ext: installing Debian packages:$missing"
		as_root apt-get update -qq
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
	fi
}

es_build_and_install() {
	make -s clean >/dev/null
	make -s PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
	as_root make -s install PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config >/dev/null
}

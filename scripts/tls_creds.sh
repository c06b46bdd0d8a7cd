#!/bin/bash
# tls_creds.sh DIR [NAME...]: x509 credentials for --tls-creds, in QEMU's
# layout: a CA (ca-cert.pem, ca-key.pem), a receiver certificate naming
# NAME... (server-cert.pem, server-key.pem; names that are addresses go in
# as IP entries) and a sender certificate (client-cert.pem, client-key.pem).
# Default names: localhost 127.0.0.1. Keys are ECDSA P-256, mode 0600.
#
#   TLS_DAYS=N     validity of the certificates (default 365)
#   TLS_CA_DIR=D   sign with the CA already in D instead of making one
#   TLS_EXPIRED=1  certificates that expired yesterday (tests)
set -euo pipefail
dir=${1:?usage: tls_creds.sh DIR [NAME...]}
shift
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(localhost 127.0.0.1)
days=${TLS_DAYS:-365}
mkdir -p "$dir"
umask 077

san=""
for n in "${names[@]}"; do
	if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then san+="IP:$n,"; else san+="DNS:$n,"; fi
done
san=${san%,}

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ca=${TLS_CA_DIR:-$dir}
if [ -z "${TLS_CA_DIR:-}" ]; then
	key "$dir/ca-key.pem"
	openssl req -x509 -new -key "$dir/ca-key.pem" -days 3650 -subj "/CN=rmig test CA" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" -out "$dir/ca-cert.pem"
elif [ "$ca" != "$dir" ]; then
	cp "$ca/ca-cert.pem" "$dir/ca-cert.pem"
fi

# sign NAME EXT...: NAME-key.pem and NAME-cert.pem signed by the CA, with
# the extension lines EXT.
sign() {
	local who=$1 dates=(-days "$days")
	shift
	printf '%s\n' "$@" >"$dir/$who.ext"
	key "$dir/$who-key.pem"
	openssl req -new -key "$dir/$who-key.pem" -subj "/CN=rmig $who" -out "$dir/$who.csr"
	if [ -n "${TLS_EXPIRED:-}" ]; then
		# openssl x509 cannot backdate; the ca command can.
		dates=(-startdate "$(date -u -d "-3 days" +%Y%m%d%H%M%SZ)"
		       -enddate "$(date -u -d "-1 day" +%Y%m%d%H%M%SZ)")
		mkdir -p "$dir/ca.db" && : >"$dir/ca.db/index" && echo 01 >"$dir/ca.db/serial"
		cat >"$dir/ca.cnf" <<EOC
[ca]
default_ca = d
[d]
database = $dir/ca.db/index
serial = $dir/ca.db/serial
new_certs_dir = $dir/ca.db
default_md = sha256
policy = p
copy_extensions = none
[p]
commonName = supplied
EOC
		openssl ca -batch -config "$dir/ca.cnf" -cert "$ca/ca-cert.pem" -keyfile "$ca/ca-key.pem" \
			"${dates[@]}" -extfile "$dir/$who.ext" -in "$dir/$who.csr" -out "$dir/$who-cert.pem" \
			>/dev/null 2>&1
		rm -rf "$dir/ca.db" "$dir/ca.cnf"
	else
		openssl x509 -req -in "$dir/$who.csr" -CA "$ca/ca-cert.pem" -CAkey "$ca/ca-key.pem" \
			-CAcreateserial "${dates[@]}" -extfile "$dir/$who.ext" \
			-out "$dir/$who-cert.pem" 2>/dev/null
	fi
	rm -f "$dir/$who.csr" "$dir/$who.ext"
}
sign server "subjectAltName=$san" "extendedKeyUsage=serverAuth"
sign client "extendedKeyUsage=clientAuth"
rm -f "$ca/ca-cert.srl" "$dir/ca-cert.srl"
chmod 644 "$dir"/*-cert.pem

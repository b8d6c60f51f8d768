#!/usr/bin/env bash
# Make a certificate authority and node certificates for TLS between kadr nodes.
#
#   scripts/cluster-certs.sh DIR [NAME]
#
# Writes DIR/ca.pem and DIR/ca.key (once), and DIR/NAME.pem + DIR/NAME.key (default NAME:
# node) signed by it, for the DNS name `kadr` (cluster.tls.server_name's default). Every node
# of a cluster gets a certificate from the same CA; keep ca.key off the nodes.
set -euo pipefail
dir=${1:?usage: scripts/cluster-certs.sh DIR [NAME]}
name=${2:-node}
mkdir -p "$dir"
cd "$dir"
if [[ ! -f ca.pem ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout ca.key -out ca.pem -days 825 -subj "/CN=kadr cluster CA" 2>/dev/null
fi
printf 'subjectAltName=DNS:kadr\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' > "$name.ext"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$name.key" -out "$name.csr" -subj "/CN=$name" 2>/dev/null
openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
    -out "$name.pem" -days 825 -extfile "$name.ext" 2>/dev/null
rm -f "$name.csr" "$name.ext"
echo "wrote $dir/$name.pem and $dir/$name.key (CA: $dir/ca.pem)"

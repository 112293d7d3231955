#!/usr/bin/env bash
# Build the CXF interop peer: resolves CXF from Maven Central on first use (~25 MB into ~/.m2),
# then compiles and copies the runtime classpath to interop/cxf/target/deps. Run it with ./peer.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
command -v mvn >/dev/null || { echo "cxf build: installing maven (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive; apt-get update -qq >/dev/null; apt-get install -y -qq maven >/dev/null; }
command -v java >/dev/null || { echo "cxf build: java 17 missing" >&2; exit 1; }
offline=()
# Offline when everything is already in the local repository (second and later builds).
if [ -f "$here/target/deps/cxf-rt-ws-rm-$(sed -n 's:.*<cxf.version>\(.*\)</cxf.version>.*:\1:p' "$here/pom.xml").jar" ]; then
  offline=(-o)
fi
cd "$here"
mvn -B -q -T1 -Dstyle.color=never "${offline[@]}" process-classes
echo "cxf build: $(ls "$here/target/deps" | wc -l) jars in $here/target/deps"

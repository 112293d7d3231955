#!/usr/bin/env bash
# Build the gSOAP interop peer (RM 1.0 and RM 1.1 binaries) from Debian's gsoap packages.
# Output: interop/gsoap/build/gsoap-peer-rm10 and gsoap-peer-rm11. Idempotent; ~5 s.
# The binaries link GPL code (the gSOAP wsrm plugin): test tool only, never distributed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/build"
G=/usr/share/gsoap

if ! command -v soapcpp2 >/dev/null || [ ! -f "$G/plugin/wsrmapi.c" ] || [ ! -f /usr/include/stdsoap2.h ]; then
  echo "gsoap build: installing gsoap and libgsoap-dev (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq gsoap libgsoap-dev >/dev/null
fi
command -v gcc >/dev/null || { echo "gsoap build: gcc missing" >&2; exit 1; }

mkdir -p "$out/plug"
# The plugin sources are copied so one declaration can be fixed (see below).
cp "$G"/plugin/{wsaapi,wsrmapi,threads,logging}.[ch] "$out/plug/"
# gSOAP 2.8.124 bug: the SOAP_WSRM_2005 (RM 1.0) branch of wsrmapi.h declares
# __wsrm__TerminateSequence with a TerminateSequenceType response; the generated stub and
# wsrmapi.c use TerminateSequenceResponseType, so C refuses to compile. Harmless for RM 1.1.
sed -i 's/struct wsrm__TerminateSequenceType \*req, struct wsrm__TerminateSequenceType \*res);/struct wsrm__TerminateSequenceType *req, struct wsrm__TerminateSequenceResponseType *res);/' \
  "$out/plug/wsrmapi.h"

for v in 10 11; do
  d="$out/rm$v"
  mkdir -p "$d"
  cp "$here/peer$v.h" "$d/peer.h"
  # -c: C, -a: dispatch on WS-A Action (required by the wsrm plugin), -L -x: no samples/xml
  (cd "$d" && soapcpp2 -c -a -L -x -I"$G/import:$G" peer.h >/dev/null 2>"$d/soapcpp2.log") || {
    cat "$d/soapcpp2.log" >&2; exit 1; }
  # Same defines as Debian's libgsoap build, plus WITH_WCF (the plugin's WCF-compatibility mode).
  gcc -O1 -DWITH_IPV6 -DWITH_DOM -DWITH_WCF -I"$d" -I"$out/plug" -I"$G" -o "$out/gsoap-peer-rm$v" \
    "$here/peer.c" "$d/soapC.c" "$d/soapClient.c" "$d/soapServer.c" \
    "$out/plug/wsaapi.c" "$out/plug/wsrmapi.c" "$out/plug/threads.c" "$out/plug/logging.c" \
    "$G/custom/duration.c" -l:libgsoap.a -lpthread -lm
done
echo "gsoap build: $out/gsoap-peer-rm10 $out/gsoap-peer-rm11 ($(dpkg-query -W -f='${Version}' gsoap 2>/dev/null || echo '?'))"

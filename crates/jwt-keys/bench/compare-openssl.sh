#!/usr/bin/env bash
# RS256-2048 signatures and verifications per second of jwt-keys, on one core, next to
# `openssl speed rsa2048` run in the same invocation, and the ratios.
#
# usage: crates/jwt-keys/bench/compare-openssl.sh [BACKEND...]
#   BACKEND: aws_lc_rs, rust_crypto (default: both). Env: CARGO_TARGET_DIR (default target),
#   OPENSSL (default openssl).
# The library figures include the whole JWT path (claims JSON, base64url, header and claim
# checks); OpenSSL's are raw RSA operations. Target: both ratios >= 0.7.
set -euo pipefail

root="$(cd "$(dirname "$0")/../../.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
openssl="${OPENSSL:-openssl}"
if [ "$#" -eq 0 ]; then set -- aws_lc_rs rust_crypto; fi

# Pin to one core when possible, so both sides measure one core.
pin=()
if command -v taskset >/dev/null 2>&1; then pin=(taskset -c 0); fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== $("$openssl" version)"
"${pin[@]}" "$openssl" speed -seconds 3 rsa2048 2>/dev/null | tee "$work/openssl.txt"
read -r ossl_sign ossl_verify < <(awk '/^rsa *2048 bits/ {print $(NF-1), $NF; exit}' "$work/openssl.txt")
if [ -z "${ossl_sign:-}" ]; then echo "could not read openssl speed output" >&2; exit 1; fi

results=()
for backend in "$@"; do
  echo "== jwt-keys with jsonwebtoken backend $backend"
  export CRITERION_HOME="$work/criterion-$backend"
  "${pin[@]}" cargo bench -p jwt-keys --bench rs256 --no-default-features --features "$backend" \
    -- --noplot 2>&1 | grep -E '^(rs256|\s+(time|thrpt):)' || true
  read -r sign verify < <(python3 - "$CRITERION_HOME" <<'PY'
import json, sys
def per_second(op):
    with open(f"{sys.argv[1]}/rs256_2048/{op}/new/estimates.json") as f:
        return 1e9 / json.load(f)["median"]["point_estimate"]
print(f"{per_second('sign'):.1f} {per_second('verify'):.1f}")
PY
)
  results+=("$backend $sign $verify")
done

echo
echo "== RS256-2048, one core, medians (library: full JWT; openssl: raw RSA)"
printf '%-12s %12s %8s %12s %8s\n' who sign/s ratio verify/s ratio
printf '%-12s %12.1f %8s %12.1f %8s\n' openssl "$ossl_sign" 1.00 "$ossl_verify" 1.00
for line in "${results[@]}"; do
  read -r backend sign verify <<<"$line"
  awk -v b="$backend" -v s="$sign" -v v="$verify" -v os="$ossl_sign" -v ov="$ossl_verify" \
    'BEGIN { printf "%-12s %12.1f %8.2f %12.1f %8.2f\n", b, s, s / os, v, v / ov }'
done

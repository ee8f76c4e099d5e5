"""The PyJWT snippet of docs/consumers.md, runnable: sign with the mounted Secret, verify with
the mounted ConfigMap.

usage: pyjwt_snippet.py SECRET_DIR JWKS_DIR TOKEN_TO_VERIFY [ALGORITHM]
Prints one JSON object: {"token": <token signed here>, "jwks": <claims of TOKEN_TO_VERIFY
verified through jwks.json>, "pem": <the same, verified through <kid>.pem>}.
Exits 3 if PyJWT or cryptography is missing.
"""

import json
import os
import sys
import time

try:
    import jwt  # PyJWT
    import cryptography  # noqa: F401  (PyJWT's RSA, EC and Ed25519 support)
except ImportError as err:
    print(f"missing Python module ({err}): pip install pyjwt cryptography", file=sys.stderr)
    sys.exit(3)


# --- snippet: sign (auth service, Secret mounted at SECRET_DIR) ---
def sign(secret_dir, claims):
    with open(os.path.join(secret_dir, "private.pem")) as f:
        private_key = f.read()
    with open(os.path.join(secret_dir, "kid")) as f:
        kid = f.read().strip()
    with open(os.path.join(secret_dir, "algorithm")) as f:
        algorithm = f.read().strip()  # "RS256", "ES256", "EdDSA", ...
    return jwt.encode(claims, private_key, algorithm=algorithm, headers={"kid": kid})


# --- snippet: verify (any service, ConfigMap mounted at JWKS_DIR) ---
def verify(jwks_dir, token, audience="api", issuer="https://auth.example"):
    # Re-read on every call (or cache for a few seconds): the kubelet swaps the file on rotation.
    with open(os.path.join(jwks_dir, "jwks.json")) as f:
        jwks = jwt.PyJWKSet.from_dict(json.load(f))
    kid = jwt.get_unverified_header(token).get("kid")
    matching = [k for k in jwks.keys if k.key_id == kid]
    if not matching:
        raise jwt.InvalidTokenError(f"unknown kid {kid!r}")
    key = matching[0]
    # Pin the algorithm to the key's published alg: never take it from the token.
    return jwt.decode(token, key.key, algorithms=[key.algorithm_name],
                      audience=audience, issuer=issuer)


# --- snippet: verify with the PEM of one key ---
# ALGORITHM is the JwtSigningKey's spec.algorithm ("RS256" by default). A PEM carries no alg: during
# a change of algorithm, verify through jwks.json, where each key names its own.
def verify_with_pem(jwks_dir, token, algorithm="RS256", audience="api", issuer="https://auth.example"):
    kid = jwt.get_unverified_header(token)["kid"]
    if "/" in kid or kid.startswith("."):
        raise jwt.InvalidTokenError("bad kid")
    with open(os.path.join(jwks_dir, f"{kid}.pem")) as f:
        public_key = f.read()
    return jwt.decode(token, public_key, algorithms=[algorithm], audience=audience, issuer=issuer)


def main():
    secret_dir, jwks_dir, token = sys.argv[1:4]
    algorithm = sys.argv[4] if len(sys.argv) > 4 else "RS256"
    now = int(time.time())
    signed = sign(secret_dir, {"sub": "from-python", "iss": "https://auth.example",
                               "aud": "api", "iat": now, "exp": now + 300})
    print(json.dumps({
        "token": signed,
        "jwks": verify(jwks_dir, token),
        "pem": verify_with_pem(jwks_dir, token, algorithm),
    }))


if __name__ == "__main__":
    main()

"""A verifier that knows only a JWKS URL, as most do: PyJWT's PyJWKClient.

Usage: pyjwk_verifier.py JWKS_URL ISSUER AUDIENCE LIFESPAN COOLDOWN
Reads one token per line on stdin and answers one JSON line per token on stdout:
{"ok": true, "kid": ...} or {"ok": false, "error": ...}. At end of input it prints
{"fetches": N}: how many times the client fetched the key set over HTTP.
"""
import json
import sys

import jwt


class CountingClient(jwt.PyJWKClient):
    fetches = 0

    def fetch_data(self):
        CountingClient.fetches += 1
        return super().fetch_data()


def main():
    url, issuer, audience, lifespan, cooldown = sys.argv[1:6]
    kwargs = {"lifespan": float(lifespan)}
    # cooldown_duration (least time between two refetches on an unknown kid) exists since PyJWT 2.11.
    try:
        client = CountingClient(url, cooldown_duration=float(cooldown), **kwargs)
    except TypeError:
        client = CountingClient(url, **kwargs)
    for line in sys.stdin:
        token = line.strip()
        if not token:
            continue
        try:
            key = client.get_signing_key_from_jwt(token)
            jwt.decode(token, key.key, algorithms=[key.algorithm_name],
                       audience=audience, issuer=issuer)
            answer = {"ok": True, "kid": key.key_id}
        except Exception as err:  # every failure is reported, none ends the run
            answer = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        print(json.dumps(answer), flush=True)
    print(json.dumps({"fetches": CountingClient.fetches}), flush=True)


if __name__ == "__main__":
    main()

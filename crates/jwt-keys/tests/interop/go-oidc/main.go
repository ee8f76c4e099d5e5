// Interop check with go-oidc, the verifier of oauth2-proxy's --extra-jwt-issuers: verifies a token
// with the mounted ConfigMap the way oauth2-proxy does, and reports what it refuses.
//
//   - "jwks": jwks.json served over HTTP (on 127.0.0.1) through RemoteKeySet, which picks the key by
//     kid, with SupportedSigningAlgs set to the algs of the published keys: what serve-jwks's
//     discovery document lists (id_token_signing_alg_values_supported) and oauth2-proxy passes on.
//   - "pem": <kid>.pem through StaticKeySet, with the same SupportedSigningAlgs.
//   - "no_discovery": RemoteKeySet with SupportedSigningAlgs unset, as oauth2-proxy builds the
//     verifier when the issuer serves no discovery document (go-oidc then takes RS256 only).
//
// usage: go-oidc JWKS_DIR TOKEN_TO_VERIFY
// Prints {"jwks", "pem", "no_discovery"}, each the claims or {"refused": <go-oidc's error>}.
// go-oidc only verifies, so nothing is signed here.
package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
)

const issuer = "https://auth.example"

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func read(dir, name string) []byte {
	b, err := os.ReadFile(filepath.Join(dir, name))
	must(err)
	return b
}

// outcome is the verified claims, or go-oidc's reason for refusing the token.
func outcome(verifier *oidc.IDTokenVerifier, token string) any {
	verified, err := verifier.Verify(context.Background(), token)
	if err != nil {
		return map[string]string{"refused": err.Error()}
	}
	var claims map[string]any
	must(verified.Claims(&claims))
	return claims
}

func main() {
	jwksDir, token := os.Args[1], os.Args[2]
	jwks := read(jwksDir, "jwks.json")
	var set struct {
		Keys []struct{ Kid, Alg string }
	}
	must(json.Unmarshal(jwks, &set))
	var algs []string
	for _, k := range set.Keys {
		algs = append(algs, k.Alg)
	}

	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(jwks)
	}))
	defer server.Close()
	ctx := context.Background()
	config := &oidc.Config{ClientID: "api", SupportedSigningAlgs: algs}
	viaJwks := outcome(oidc.NewVerifier(issuer, oidc.NewRemoteKeySet(ctx, server.URL), config), token)
	noDiscovery := outcome(oidc.NewVerifier(issuer, oidc.NewRemoteKeySet(ctx, server.URL), &oidc.Config{ClientID: "api"}), token)

	// The token's kid names the PEM file; refuse a kid that could name another path.
	header, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	must(err)
	var h struct{ Kid string }
	must(json.Unmarshal(header, &h))
	if h.Kid == "" || strings.ContainsAny(h.Kid, "/.") {
		must(fmt.Errorf("bad kid %q", h.Kid))
	}
	block, _ := pem.Decode(read(jwksDir, h.Kid+".pem"))
	if block == nil {
		must(fmt.Errorf("no PEM in %s.pem", h.Kid))
	}
	public, err := x509.ParsePKIXPublicKey(block.Bytes)
	must(err)
	static := &oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{public}}
	viaPem := outcome(oidc.NewVerifier(issuer, static, config), token)

	out, err := json.Marshal(map[string]any{"jwks": viaJwks, "pem": viaPem, "no_discovery": noDiscovery})
	must(err)
	fmt.Println(string(out))
}

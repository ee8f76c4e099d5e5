// Interop check with golang-jwt: signs a token with the mounted Secret, verifies a token with the
// mounted ConfigMap (jwks.json, key chosen by kid and pinned to its alg) and with <kid>.pem.
//
// usage: golang-jwt SECRET_DIR JWKS_DIR TOKEN_TO_VERIFY
// Prints {"token": <signed here>, "jwks": <claims via jwks.json>, "pem": <claims via <kid>.pem>}.
package main

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

type jwk struct {
	Kty string `json:"kty"`
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	N   string `json:"n"`
	E   string `json:"e"`
}

var algorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"}

func b64(s string) []byte {
	b, err := base64.RawURLEncoding.DecodeString(s)
	must(err)
	return b
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func read(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	must(err)
	return strings.TrimSpace(string(b))
}

// publicKey turns a JWK into the key type golang-jwt verifies its alg with.
func publicKey(k jwk) (any, error) {
	switch {
	case k.Kty == "EC" && k.Crv == "P-256":
		return &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(b64(k.X)), Y: new(big.Int).SetBytes(b64(k.Y))}, nil
	case k.Kty == "EC" && k.Crv == "P-384":
		return &ecdsa.PublicKey{Curve: elliptic.P384(), X: new(big.Int).SetBytes(b64(k.X)), Y: new(big.Int).SetBytes(b64(k.Y))}, nil
	case k.Kty == "OKP" && k.Crv == "Ed25519":
		return ed25519.PublicKey(b64(k.X)), nil
	case k.Kty == "RSA":
		return &rsa.PublicKey{N: new(big.Int).SetBytes(b64(k.N)), E: int(new(big.Int).SetBytes(b64(k.E)).Int64())}, nil
	}
	return nil, fmt.Errorf("unsupported key kty %q crv %q", k.Kty, k.Crv)
}

func main() {
	secretDir, jwksDir, token := os.Args[1], os.Args[2], os.Args[3]
	var set struct{ Keys []jwk }
	must(json.Unmarshal([]byte(read(jwksDir, "jwks.json")), &set))
	byKid := map[string]jwk{}
	for _, k := range set.Keys {
		byKid[k.Kid] = k
	}
	options := []jwt.ParserOption{jwt.WithValidMethods(algorithms), jwt.WithAudience("api"), jwt.WithIssuer("https://auth.example")}
	// The key by kid, pinned to its published alg.
	viaJwks, err := jwt.Parse(token, func(t *jwt.Token) (any, error) {
		k, ok := byKid[fmt.Sprint(t.Header["kid"])]
		if !ok {
			return nil, fmt.Errorf("unknown kid")
		}
		if t.Method.Alg() != k.Alg {
			return nil, fmt.Errorf("alg %s is not the key's %s", t.Method.Alg(), k.Alg)
		}
		return publicKey(k)
	}, options...)
	must(err)
	viaPem, err := jwt.Parse(token, func(t *jwt.Token) (any, error) {
		kid := fmt.Sprint(t.Header["kid"])
		if strings.ContainsAny(kid, "/.") {
			return nil, fmt.Errorf("bad kid")
		}
		if t.Method.Alg() != byKid[kid].Alg {
			return nil, fmt.Errorf("alg %s is not the key's", t.Method.Alg())
		}
		block, _ := pem.Decode([]byte(read(jwksDir, kid+".pem")))
		if block == nil {
			return nil, fmt.Errorf("no PEM")
		}
		return x509.ParsePKIXPublicKey(block.Bytes)
	}, options...)
	must(err)

	algorithm := read(secretDir, "algorithm")
	private := []byte(read(secretDir, "private.pem"))
	var key any
	switch algorithm {
	case "ES256", "ES384":
		key, err = jwt.ParseECPrivateKeyFromPEM(private)
	case "EdDSA":
		key, err = jwt.ParseEdPrivateKeyFromPEM(private)
	default:
		key, err = jwt.ParseRSAPrivateKeyFromPEM(private)
	}
	must(err)
	now := time.Now().Unix()
	signing := jwt.NewWithClaims(jwt.GetSigningMethod(algorithm), jwt.MapClaims{
		"sub": "from-go", "iss": "https://auth.example", "aud": "api", "iat": now, "exp": now + 300,
	})
	signing.Header["kid"] = read(secretDir, "kid")
	signed, err := signing.SignedString(key)
	must(err)
	out, err := json.Marshal(map[string]any{"token": signed, "jwks": viaJwks.Claims, "pem": viaPem.Claims})
	must(err)
	fmt.Println(string(out))
}

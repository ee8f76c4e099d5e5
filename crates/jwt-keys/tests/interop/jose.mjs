// Interop check with Node's `jose`: signs a token with the mounted Secret, verifies a token with
// the mounted ConfigMap (jwks.json through createLocalJWKSet, which picks the key by kid and
// refuses a token whose alg is not the key's) and with <kid>.pem, and computes each published
// key's RFC 7638 thumbprint.
//
// usage: node jose.mjs SECRET_DIR JWKS_DIR TOKEN_TO_VERIFY   (jose importable from the cwd)
// Prints {"token", "jwks", "pem", "thumbprints": {kid: computed}}.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as jose from "jose";

const [secretDir, jwksDir, token] = process.argv.slice(2);
const read = (dir, name) => readFileSync(join(dir, name), "utf8").trim();
const options = { issuer: "https://auth.example", audience: "api" };

const jwks = JSON.parse(read(jwksDir, "jwks.json"));
const viaJwks = await jose.jwtVerify(token, jose.createLocalJWKSet(jwks), options);

const { kid, alg } = jose.decodeProtectedHeader(token);
if (!/^[A-Za-z0-9_-]+$/.test(kid)) throw new Error("bad kid");
const published = jwks.keys.find((k) => k.kid === kid);
if (published.alg !== alg) throw new Error(`alg ${alg} is not the key's ${published.alg}`);
const pemKey = await jose.importSPKI(read(jwksDir, `${kid}.pem`), published.alg);
const viaPem = await jose.jwtVerify(token, pemKey, { ...options, algorithms: [published.alg] });

const algorithm = read(secretDir, "algorithm");
const privateKey = await jose.importPKCS8(read(secretDir, "private.pem"), algorithm);
const now = Math.floor(Date.now() / 1000);
const signed = await new jose.SignJWT({ sub: "from-node" })
  .setProtectedHeader({ alg: algorithm, kid: read(secretDir, "kid"), typ: "JWT" })
  .setIssuer("https://auth.example")
  .setAudience("api")
  .setIssuedAt(now)
  .setExpirationTime(now + 300)
  .sign(privateKey);

const thumbprints = {};
for (const key of jwks.keys) thumbprints[key.kid] = await jose.calculateJwkThumbprint(key, "sha256");
console.log(JSON.stringify({ token: signed, jwks: viaJwks.payload, pem: viaPem.payload, thumbprints }));

// Interop check with Nimbus JOSE+JWT: signs a token with the mounted Secret, and verifies a token
// with the mounted ConfigMap the way Spring Security's NimbusJwtDecoder does.
//
//   "jwks": DefaultJWTProcessor with a JWSVerificationKeySelector over jwks.json (an
//           ImmutableJWKSet), every algorithm of the test expected, as NimbusJwtDecoder builds it
//           for a JWK Set; the selector picks the key by kid and alg and turns it into a Java key.
//   "pem": DefaultJWTProcessor with a SingleKeyJWSKeySelector for <kid>.pem (read by the JDK),
//          pinned to the published key's alg, as NimbusJwtDecoder.withPublicKey builds it.
//   "ed25519_verifier" (EdDSA only): Nimbus's Ed25519Verifier, which needs Tink, on the published
//          OKP key; no JWSKeySelector of Nimbus hands it a key.
// Each is the claims, or {"refused": <Nimbus's error>}. "token" is signed with RSASSASigner,
// ECDSASigner or (with Tink) Ed25519Signer.
//
// usage: java -cp <classpath> interop.NimbusInterop SECRET_DIR JWKS_DIR TOKEN_TO_VERIFY
package interop;

import com.nimbusds.jose.JOSEException;
import com.nimbusds.jose.JWSAlgorithm;
import com.nimbusds.jose.JWSHeader;
import com.nimbusds.jose.JWSSigner;
import com.nimbusds.jose.JOSEObjectType;
import com.nimbusds.jose.crypto.ECDSASigner;
import com.nimbusds.jose.crypto.Ed25519Signer;
import com.nimbusds.jose.crypto.Ed25519Verifier;
import com.nimbusds.jose.crypto.RSASSASigner;
import com.nimbusds.jose.jwk.Curve;
import com.nimbusds.jose.jwk.JWK;
import com.nimbusds.jose.jwk.JWKSet;
import com.nimbusds.jose.jwk.OctetKeyPair;
import com.nimbusds.jose.jwk.source.ImmutableJWKSet;
import com.nimbusds.jose.proc.JWSKeySelector;
import com.nimbusds.jose.proc.JWSVerificationKeySelector;
import com.nimbusds.jose.proc.SecurityContext;
import com.nimbusds.jose.proc.SingleKeyJWSKeySelector;
import com.nimbusds.jose.util.Base64URL;
import com.nimbusds.jose.util.JSONObjectUtils;
import com.nimbusds.jwt.JWTClaimsSet;
import com.nimbusds.jwt.SignedJWT;
import com.nimbusds.jwt.proc.DefaultJWTClaimsVerifier;
import com.nimbusds.jwt.proc.DefaultJWTProcessor;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyFactory;
import java.security.PrivateKey;
import java.security.PublicKey;
import java.security.interfaces.ECPrivateKey;
import java.security.interfaces.EdECPrivateKey;
import java.security.spec.PKCS8EncodedKeySpec;
import java.security.spec.X509EncodedKeySpec;
import java.util.Arrays;
import java.util.Base64;
import java.util.Date;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;

public final class NimbusInterop {
    private static final String ISSUER = "https://auth.example";
    private static final String AUDIENCE = "api";
    /** The algorithms the test covers: the set a NimbusJwtDecoder would be configured with. */
    private static final Set<JWSAlgorithm> EXPECTED =
            Set.of(JWSAlgorithm.RS256, JWSAlgorithm.PS256, JWSAlgorithm.ES256, JWSAlgorithm.ES384, JWSAlgorithm.EdDSA);

    public static void main(String[] args) throws Exception {
        Path secretDir = Path.of(args[0]);
        Path jwksDir = Path.of(args[1]);
        String token = args[2];

        JWKSet jwks = JWKSet.parse(read(jwksDir, "jwks.json"));
        SignedJWT parsed = SignedJWT.parse(token);
        String kid = parsed.getHeader().getKeyID();
        if (kid == null || !kid.matches("[A-Za-z0-9_-]+")) {
            throw new IllegalArgumentException("bad kid " + kid);
        }
        JWK published = jwks.getKeyByKeyId(kid);
        if (published == null) {
            throw new IllegalArgumentException("kid " + kid + " is not published");
        }

        Map<String, Object> out = new LinkedHashMap<>();
        out.put("token", sign(secretDir));
        out.put("jwks", outcome(token, new JWSVerificationKeySelector<>(EXPECTED, new ImmutableJWKSet<>(jwks))));
        JWSAlgorithm alg = JWSAlgorithm.parse(published.getAlgorithm().getName());
        PublicKey pemKey = KeyFactory.getInstance(javaKeyType(published))
                .generatePublic(new X509EncodedKeySpec(der(read(jwksDir, kid + ".pem"))));
        out.put("pem", outcome(token, new SingleKeyJWSKeySelector<>(alg, pemKey)));
        if (published instanceof OctetKeyPair okp) {
            Map<String, Object> result;
            if (parsed.verify(new Ed25519Verifier(okp.toPublicJWK()))) {
                result = parsed.getJWTClaimsSet().toJSONObject();
            } else {
                result = Map.of("refused", "signature does not verify");
            }
            out.put("ed25519_verifier", result);
        }
        System.out.println(JSONObjectUtils.toJSONString(out));
    }

    /** The claims when the processor accepts the token, else its reason. */
    private static Map<String, Object> outcome(String token, JWSKeySelector<SecurityContext> selector) {
        DefaultJWTProcessor<SecurityContext> processor = new DefaultJWTProcessor<>();
        processor.setJWSKeySelector(selector);
        processor.setJWTClaimsSetVerifier(new DefaultJWTClaimsVerifier<>(
                AUDIENCE, new JWTClaimsSet.Builder().issuer(ISSUER).build(), Set.of("sub", "exp")));
        try {
            return processor.process(token, null).toJSONObject();
        } catch (Exception e) {
            return Map.of("refused", e.toString());
        }
    }

    private static String sign(Path secretDir) throws Exception {
        String algorithm = read(secretDir, "algorithm");
        byte[] pkcs8 = der(read(secretDir, "private.pem"));
        JWSSigner signer;
        switch (algorithm) {
            case "ES256", "ES384" -> {
                PrivateKey key = KeyFactory.getInstance("EC").generatePrivate(new PKCS8EncodedKeySpec(pkcs8));
                signer = new ECDSASigner((ECPrivateKey) key);
            }
            case "EdDSA" -> {
                EdECPrivateKey key = (EdECPrivateKey)
                        KeyFactory.getInstance("Ed25519").generatePrivate(new PKCS8EncodedKeySpec(pkcs8));
                byte[] seed = key.getBytes().orElseThrow();
                // An Ed25519 SPKI is a fixed 12-byte prefix and the 32-byte public key.
                byte[] spki = der(read(secretDir, "public.pem"));
                byte[] x = Arrays.copyOfRange(spki, spki.length - 32, spki.length);
                signer = new Ed25519Signer(new OctetKeyPair.Builder(Curve.Ed25519, Base64URL.encode(x))
                        .d(Base64URL.encode(seed))
                        .build());
            }
            default -> signer = new RSASSASigner(
                    KeyFactory.getInstance("RSA").generatePrivate(new PKCS8EncodedKeySpec(pkcs8)));
        }
        long now = System.currentTimeMillis() / 1000;
        JWTClaimsSet claims = new JWTClaimsSet.Builder()
                .subject("from-nimbus")
                .issuer(ISSUER)
                .audience(AUDIENCE)
                .issueTime(new Date(now * 1000))
                .expirationTime(new Date((now + 300) * 1000))
                .build();
        JWSHeader header = new JWSHeader.Builder(JWSAlgorithm.parse(algorithm))
                .type(JOSEObjectType.JWT)
                .keyID(read(secretDir, "kid"))
                .build();
        SignedJWT jwt = new SignedJWT(header, claims);
        try {
            jwt.sign(signer);
        } catch (JOSEException e) {
            throw new IllegalStateException("Nimbus cannot sign " + algorithm, e);
        }
        return jwt.serialize();
    }

    private static String javaKeyType(JWK key) {
        return switch (key.getKeyType().getValue()) {
            case "RSA" -> "RSA";
            case "EC" -> "EC";
            case "OKP" -> "Ed25519";
            default -> throw new IllegalArgumentException("unexpected kty " + key.getKeyType());
        };
    }

    private static String read(Path dir, String name) throws Exception {
        return Files.readString(dir.resolve(name), StandardCharsets.UTF_8).trim();
    }

    /** The DER inside a PEM block. */
    private static byte[] der(String pem) {
        String body = pem.replaceAll("-----[A-Z ]+-----", "").replaceAll("\\s", "");
        return Base64.getDecoder().decode(body);
    }

    private NimbusInterop() {}
}

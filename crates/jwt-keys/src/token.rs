//! The unverified JOSE header of a compact JWS, read only to choose the key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::error::VerifyError;

/// Longest token accepted; real tokens are a few KiB, this bounds the work on hostile input.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// The header fields that decide which key verifies a token. Nothing here is trusted until
/// the signature is verified with the key these fields select.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHeader {
    /// The `alg` member, verbatim (may be `none`, `HS256`, ...).
    pub alg: String,
    /// The `kid` member, if any.
    pub kid: Option<String>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl TokenHeader {
    /// Reads the header of a compact JWS `header.payload.signature` without verifying it.
    ///
    /// Fails with [`VerifyError::Malformed`] unless the token has exactly three parts and the
    /// first is base64url (no padding) JSON with a string `alg`.
    pub fn parse(token: &str) -> Result<TokenHeader, VerifyError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(VerifyError::Malformed(format!(
                "token is longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed(
                "expected three dot-separated parts".to_owned(),
            ));
        };
        if !is_base64url(payload) || !is_base64url(signature) {
            return Err(VerifyError::Malformed(
                "payload or signature is not base64url".to_owned(),
            ));
        }
        let json = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|err| VerifyError::Malformed(format!("header is not base64url: {err}")))?;
        let raw: RawHeader = serde_json::from_slice(&json)
            .map_err(|err| VerifyError::Malformed(format!("header is not a JOSE header: {err}")))?;
        Ok(TokenHeader {
            alg: raw.alg,
            kid: raw.kid,
        })
    }
}

fn is_base64url(part: &str) -> bool {
    part.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn header_with_alg_and_kid_is_read() {
        let token = format!(
            "{}.e30.sig",
            encode(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#)
        );
        let header = TokenHeader::parse(&token).unwrap();
        assert_eq!(header.alg, "RS256");
        assert_eq!(header.kid.as_deref(), Some("k1"));
    }

    #[test]
    fn two_part_token_is_malformed() {
        let token = format!("{}.e30", encode(r#"{"alg":"RS256"}"#));
        assert!(matches!(
            TokenHeader::parse(&token),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn header_without_alg_is_malformed() {
        let token = format!("{}.e30.sig", encode(r#"{"kid":"k1"}"#));
        assert!(matches!(
            TokenHeader::parse(&token),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_token_is_malformed() {
        let token = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(
            TokenHeader::parse(&token),
            Err(VerifyError::Malformed(_))
        ));
    }
}

//! [`JwtKey`]: the key a token's signature is checked with, and the one algorithm it allows.

use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey};

/// The shortest HS256 secret accepted, in bytes: the hash's size, as RFC 7518 requires.
pub const MIN_HS256_SECRET: usize = 32;

/// A key that verifies token signatures, bound to one algorithm: a token signed with any other
/// algorithm (`none` included) is refused, so a public RSA key can never be used as an HMAC
/// secret.
///
/// ```
/// use tower_sse_pubsub::jwt::JwtKey;
///
/// let shared = JwtKey::hs256("a secret of at least 32 bytes, not this one")?;
/// assert_eq!(format!("{shared:?}"), "JwtKey(HS256)"); // the secret never shows
/// assert!(JwtKey::hs256("short").is_err());
/// # Ok::<(), tower_sse_pubsub::jwt::JwtKeyError>(())
/// ```
#[derive(Clone)]
pub struct JwtKey {
    key: DecodingKey,
    algorithm: Algorithm,
}

impl JwtKey {
    /// An HMAC-SHA256 shared secret (`HS256`), as the Mercure hub's `publisher_jwt` and
    /// `subscriber_jwt` keys are by default: at least 32 bytes (RFC 7518, 3.2), and random.
    ///
    /// # Errors
    ///
    /// [`JwtKeyError`] for a secret shorter than [`MIN_HS256_SECRET`] bytes: anyone could guess
    /// it and sign their own tokens.
    pub fn hs256(secret: impl AsRef<[u8]>) -> Result<Self, JwtKeyError> {
        let secret = secret.as_ref();
        if secret.len() < MIN_HS256_SECRET {
            return Err(JwtKeyError {
                expected: "an HS256 secret of at least 32 bytes (RFC 7518, 3.2)",
                reason: format!("it has {} bytes; use 32 random bytes or more", secret.len()),
            });
        }
        Ok(Self {
            key: DecodingKey::from_secret(secret),
            algorithm: Algorithm::HS256,
        })
    }

    /// An RSA public key in PEM (`-----BEGIN PUBLIC KEY-----` or `BEGIN RSA PUBLIC KEY`), for
    /// tokens signed with RSASSA-PKCS1-v1_5 and SHA-256 (`RS256`).
    ///
    /// # Errors
    ///
    /// [`JwtKeyError`] when `pem` is not an RSA public key in PEM.
    pub fn rs256_pem(pem: impl AsRef<[u8]>) -> Result<Self, JwtKeyError> {
        let key = DecodingKey::from_rsa_pem(pem.as_ref()).map_err(|e| JwtKeyError {
            expected: "an RSA public key in PEM",
            reason: e.to_string(),
        })?;
        Ok(Self {
            key,
            algorithm: Algorithm::RS256,
        })
    }

    /// A P-256 elliptic-curve public key in PEM (`-----BEGIN PUBLIC KEY-----`), for tokens
    /// signed with ECDSA and SHA-256 (`ES256`).
    ///
    /// # Errors
    ///
    /// [`JwtKeyError`] when `pem` is not a P-256 public key in PEM.
    pub fn es256_pem(pem: impl AsRef<[u8]>) -> Result<Self, JwtKeyError> {
        let key = DecodingKey::from_ec_pem(pem.as_ref()).map_err(|e| JwtKeyError {
            expected: "a P-256 public key in PEM",
            reason: e.to_string(),
        })?;
        Ok(Self {
            key,
            algorithm: Algorithm::ES256,
        })
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }

    pub(crate) fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JwtKey({:?})", self.algorithm)
    }
}

/// A key that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtKeyError {
    expected: &'static str,
    reason: String,
}

impl fmt::Display for JwtKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "expected {}, but it could not be read: {}",
            self.expected, self.reason
        )
    }
}

impl std::error::Error for JwtKeyError {}

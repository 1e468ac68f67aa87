//! The client certificate (SPEC section 2, issue 4): reading it from PEM (key and certificate in
//! one file or two) and signing the JWT client assertion that Entra's certificate-credentials page
//! describes: `alg` PS256, header `x5t#S256` (base64url SHA-256 of the certificate's DER), claims
//! `aud` (the token URL), `iss` = `sub` = the client id, `jti`, `nbf`, `iat`, `exp`
//! (research/graph.md section 4).
//!
//! The private key never leaves this module: only signed assertions do, in `SecretString`s.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use secrecy::zeroize::Zeroize as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;

/// How long an assertion is valid: Entra wants `exp` "5-10 minutes after `nbf` at most", and each
/// assertion is used for one token request right away.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// Why the certificate cannot be used. Messages name the file, never its contents.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot read the {what} {path}: {reason}")]
    Read {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error(
        "{path} is not a PEM file (no -----BEGIN line); a .pfx/.p12 can be converted with `openssl pkcs12 -in FILE.pfx -out FILE.pem -nodes` (then chmod 600 FILE.pem)"
    )]
    NotPem { path: String },
    #[error("the {label} block in {path} is not valid base64; export the file again")]
    BadBase64 { path: String, label: String },
    #[error(
        "{path} holds no certificate (-----BEGIN CERTIFICATE-----); give the certificate uploaded to the app registration"
    )]
    NoCertificate { path: String },
    #[error(
        "{path} holds no private key; put the key in the same PEM file or pass --certificate-key FILE"
    )]
    NoKey { path: String },
    #[error(
        "the private key in {path} is encrypted; write an unencrypted copy for this tool with `openssl pkcs8 -in {path} -out KEY.pem` and `chmod 600 KEY.pem`"
    )]
    Encrypted { path: String },
    #[error(
        "the private key in {path} cannot sign PS256 ({reason}); Entra certificate credentials need an RSA key of 2048 bits or more, in PKCS#8 or PKCS#1 PEM"
    )]
    BadKey { path: String, reason: String },
    #[error(
        "the private key in {key} does not belong to the certificate in {certificate}; give the key the certificate was made from"
    )]
    Mismatch { key: String, certificate: String },
    #[error("cannot sign the client assertion: {0}")]
    Sign(String),
}

/// A certificate and its private key, ready to sign assertions.
pub struct ClientCertificate {
    key: EncodingKey,
    /// `x5t#S256`: base64url (no padding) of SHA-256 over the certificate's DER.
    thumbprint: String,
}

/// Never the key.
impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("x5t#S256", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

/// The claims Entra requires in a client assertion.
#[derive(Debug, Serialize)]
struct Claims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: u64,
    iat: u64,
    exp: u64,
}

impl ClientCertificate {
    /// Reads the certificate from `certificate` and the private key from `key`, or from the
    /// certificate file when `key` is `None`. Checks that the key signs PS256 and belongs to the
    /// certificate, so a wrong file fails here rather than at Entra.
    pub fn load(
        certificate: &Path,
        key: Option<&Path>,
    ) -> Result<ClientCertificate, CertificateError> {
        let cert_text = read_pem(certificate, "certificate file")?;
        let cert_blocks = PemBlocks::parse(&cert_text, certificate)?;
        // The first certificate is the leaf when a chain follows it.
        let cert_block = cert_blocks
            .find(|tag| tag == "CERTIFICATE")
            .ok_or_else(|| CertificateError::NoCertificate {
                path: shown(certificate),
            })?;
        let thumbprint = thumbprint_s256(cert_block.contents());
        let cert_pem = pem::encode(cert_block);

        let key_file = key
            .map(|path| read_pem(path, "certificate key file"))
            .transpose()?;
        let (key_path, key_text) = match (key, &key_file) {
            (Some(path), Some(text)) => (path, text),
            _ => (certificate, &cert_text),
        };
        let key_blocks = PemBlocks::parse(key_text, key_path)?;
        let key_block = key_blocks
            .find(|tag| tag.ends_with("PRIVATE KEY"))
            .ok_or_else(|| CertificateError::NoKey {
                path: shown(key_path),
            })?;
        // OpenSSL's legacy encrypted keys carry an RFC 1421 `Proc-Type: 4,ENCRYPTED` header.
        let legacy_encrypted = key_block
            .headers()
            .get("Proc-Type")
            .is_some_and(|value| value.contains("ENCRYPTED"));
        if key_block.tag() == "ENCRYPTED PRIVATE KEY" || legacy_encrypted {
            return Err(CertificateError::Encrypted {
                path: shown(key_path),
            });
        }
        let bad_key = |reason: String| CertificateError::BadKey {
            path: shown(key_path),
            reason,
        };
        if !matches!(key_block.tag(), "PRIVATE KEY" | "RSA PRIVATE KEY") {
            return Err(bad_key(format!("a {} is not RSA", key_block.tag())));
        }
        let key_pem = SecretString::from(pem::encode(key_block));
        drop(key_blocks);
        let encoding_key = EncodingKey::from_rsa_pem(key_pem.expose_secret().as_bytes())
            .map_err(|e| bad_key(e.to_string()))?;

        // Sign a probe and verify it with the certificate's public key.
        let probe = b"graph-remediate: does this key belong to the certificate?";
        let signature = jsonwebtoken::crypto::sign(probe, &encoding_key, Algorithm::PS256)
            .map_err(|e| bad_key(e.to_string()))?;
        match DecodingKey::from_rsa_pem(cert_pem.as_bytes()) {
            Ok(public) => {
                let matches =
                    jsonwebtoken::crypto::verify(&signature, probe, &public, Algorithm::PS256)
                        .unwrap_or(false);
                if !matches {
                    return Err(CertificateError::Mismatch {
                        key: shown(key_path),
                        certificate: shown(certificate),
                    });
                }
            }
            // A certificate whose key we cannot read here (not RSA): Entra will say more.
            Err(error) => {
                tracing::debug!(%error, "cannot read the certificate's public key; key match not checked");
            }
        }
        Ok(ClientCertificate {
            key: encoding_key,
            thumbprint,
        })
    }

    /// The `x5t#S256` header value.
    #[cfg(test)]
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// A fresh, signed client assertion for one token request to `token_url`.
    pub fn assertion(
        &self,
        client_id: &str,
        token_url: &str,
        now: SystemTime,
    ) -> Result<SecretString, CertificateError> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| CertificateError::Sign("the system clock is before 1970".to_owned()))?
            .as_secs();
        let claims = Claims {
            aud: token_url,
            iss: client_id,
            sub: client_id,
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: now,
            iat: now,
            exp: now + ASSERTION_LIFETIME.as_secs(),
        };
        let mut header = Header::new(Algorithm::PS256);
        header.x5t_s256 = Some(self.thumbprint.clone());
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map(SecretString::from)
            .map_err(|e| CertificateError::Sign(e.to_string()))
    }
}

/// base64url (no padding) of SHA-256 over `der`.
pub fn thumbprint_s256(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// Reads a PEM file into a secret (it may hold a private key), naming the file on failure.
fn read_pem(path: &Path, what: &'static str) -> Result<SecretString, CertificateError> {
    let mut bytes = std::fs::read(path).map_err(|e| CertificateError::Read {
        what,
        path: shown(path),
        reason: e.to_string(),
    })?;
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => SecretString::from(text),
        // Binary: DER or PKCS#12, not PEM.
        Err(_) => SecretString::from(""),
    };
    bytes.zeroize();
    Ok(text)
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// The PEM blocks of a file, parsed by the `pem` crate (text between blocks, such as openssl's
/// "Bag Attributes", is skipped). The blocks may hold a private key: their contents are wiped
/// when dropped.
struct PemBlocks(Vec<pem::Pem>);

impl PemBlocks {
    fn parse(text: &SecretString, path: &Path) -> Result<PemBlocks, CertificateError> {
        let blocks = pem::parse_many(text.expose_secret()).map_err(|error| match error {
            pem::PemError::InvalidData(_) => CertificateError::BadBase64 {
                path: shown(path),
                label: "a".to_owned(),
            },
            _ => CertificateError::NotPem { path: shown(path) },
        })?;
        if blocks.is_empty() {
            return Err(CertificateError::NotPem { path: shown(path) });
        }
        Ok(PemBlocks(blocks))
    }

    /// The first block whose tag (`CERTIFICATE`, `PRIVATE KEY`, ...) passes `wanted`.
    fn find(&self, wanted: impl Fn(&str) -> bool) -> Option<&pem::Pem> {
        self.0.iter().find(|block| wanted(block.tag()))
    }
}

impl Drop for PemBlocks {
    fn drop(&mut self) {
        for block in self.0.drain(..) {
            block.into_contents().zeroize();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::Validation;
    use serde_json::Value;
    use std::path::PathBuf;

    /// The fixtures' thumbprint, computed with openssl (tests/fixtures/README.md).
    const FIXTURE_X5T_S256: &str = "h_L89QfVklBj4UauIukQfT3j8MbaU_xWD4rOpTdWxUY";
    const TOKEN_URL: &str =
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token";

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    fn write(dir: &Path, name: &str, parts: &[&str]) -> PathBuf {
        let text: String = parts
            .iter()
            .map(|p| std::fs::read_to_string(fixture(p)).unwrap())
            .collect();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn decode_part(part: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn loads_key_and_certificate_from_one_file_or_two_in_either_pem_form() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "key-then-cert.pem",
                vec!["test-only-client-key.pem", "test-only-client-cert.pem"],
            ),
            (
                "cert-then-key.pem",
                vec!["test-only-client-cert.pem", "test-only-client-key.pem"],
            ),
            (
                "pkcs1-combined.pem",
                vec![
                    "test-only-client-cert.pem",
                    "test-only-client-key-pkcs1.pem",
                ],
            ),
        ];
        for (name, parts) in cases {
            let path = write(dir.path(), name, &parts);
            let cert = ClientCertificate::load(&path, None).unwrap();
            assert_eq!(cert.thumbprint(), FIXTURE_X5T_S256, "{name}");
        }
        for key in ["test-only-client-key.pem", "test-only-client-key-pkcs1.pem"] {
            let cert =
                ClientCertificate::load(&fixture("test-only-client-cert.pem"), Some(&fixture(key)))
                    .unwrap();
            assert_eq!(cert.thumbprint(), FIXTURE_X5T_S256);
        }
    }

    #[test]
    fn the_assertion_is_ps256_with_x5t_s256_and_the_documented_claims() {
        let cert = ClientCertificate::load(
            &fixture("test-only-client-cert.pem"),
            Some(&fixture("test-only-client-key.pem")),
        )
        .unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        let jwt = cert.assertion("client-1", TOKEN_URL, now).unwrap();
        let jwt = jwt.expose_secret();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = decode_part(parts[0]);
        assert_eq!(header["alg"], "PS256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["x5t#S256"], FIXTURE_X5T_S256);
        let claims = decode_part(parts[1]);
        assert_eq!(claims["aud"], TOKEN_URL);
        assert_eq!(claims["iss"], "client-1");
        assert_eq!(claims["sub"], "client-1");
        assert!(uuid::Uuid::parse_str(claims["jti"].as_str().unwrap()).is_ok());
        assert_eq!(claims["nbf"], 1_900_000_000u64);
        assert_eq!(claims["iat"], 1_900_000_000u64);
        let lifetime = claims["exp"].as_u64().unwrap() - 1_900_000_000;
        assert!((300..=600).contains(&lifetime), "{lifetime}");

        // The signature verifies with the certificate's public key, as PS256 (PSS padding).
        let public = DecodingKey::from_rsa_pem(
            std::fs::read_to_string(fixture("test-only-client-cert.pem"))
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        let message = format!("{}.{}", parts[0], parts[1]);
        assert!(
            jsonwebtoken::crypto::verify(parts[2], message.as_bytes(), &public, Algorithm::PS256)
                .unwrap()
        );
        let mut validation = Validation::new(Algorithm::PS256);
        validation.validate_exp = false;
        validation.set_audience(&[TOKEN_URL]);
        assert!(jsonwebtoken::decode::<Value>(jwt, &public, &validation).is_ok());

        // Each assertion is unique.
        let again = cert.assertion("client-1", TOKEN_URL, now).unwrap();
        assert_ne!(again.expose_secret(), jwt);
    }

    #[test]
    fn the_thumbprint_is_base64url_sha256_of_the_der() {
        // SHA-256 of the empty input.
        assert_eq!(
            thumbprint_s256(b""),
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        );
    }

    #[test]
    fn wrong_files_are_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let error = |cert: &Path, key: Option<&Path>| {
            ClientCertificate::load(cert, key).unwrap_err().to_string()
        };
        let cert_only = fixture("test-only-client-cert.pem");
        assert!(error(&cert_only, None).contains("--certificate-key"));

        let mismatch = error(&cert_only, Some(&fixture("test-only-other-key.pem")));
        assert!(mismatch.contains("does not belong"), "{mismatch}");

        let key_only = fixture("test-only-client-key.pem");
        assert!(error(&key_only, None).contains("holds no certificate"));

        let pfx = dir.path().join("cert.pfx");
        std::fs::write(&pfx, [0x30u8, 0x82, 0x0a, 0xff, 0xfe, 0x00]).unwrap();
        assert!(error(&pfx, None).contains("openssl pkcs12"));

        let encrypted = dir.path().join("encrypted.pem");
        std::fs::write(
            &encrypted,
            format!(
                "{}-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
                std::fs::read_to_string(&cert_only).unwrap()
            ),
        )
        .unwrap();
        assert!(error(&encrypted, None).contains("is encrypted"));

        let missing = dir.path().join("missing.pem");
        let text = error(&missing, None);
        assert!(text.contains("cannot read the certificate file"), "{text}");
    }
}

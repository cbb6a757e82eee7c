//! TLS client configuration shared by the MQTT and XMPP connections: the system's trust roots,
//! plus an optional PEM file (`--mqtt-ca`, `--xmpp-ca`) for self-signed servers; and the
//! channel-binding data of a TLS connection (`tls-exporter`, `tls-server-end-point`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use thiserror::Error;

/// Why a TLS configuration could not be built.
#[derive(Debug, Error)]
pub enum TlsConfigError {
    /// The CA file could not be read or parsed.
    #[error("cannot read certificates from {path}: {source}")]
    CaFile {
        /// The file named on the command line.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: CaFileError,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What is wrong with a CA file.
#[derive(Debug, Error)]
pub enum CaFileError {
    /// The file cannot be read, or is not PEM.
    #[error(transparent)]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// The file holds no certificate.
    #[error("no PEM certificate found")]
    Empty,
    /// A certificate cannot be used as a trust anchor.
    #[error("unusable certificate: {0}")]
    Unusable(#[source] rustls::Error),
}

/// A client configuration trusting the system's roots and every certificate in `extra_ca`.
///
/// Each certificate in `extra_ca` is trusted two ways: as a CA for certificates it signed, and
/// as itself (pinned), so a self-signed server certificate works whatever its extensions say —
/// `openssl req -x509` marks its certificates as CAs, which strict path validation refuses as a
/// server certificate.
pub fn client_config(extra_ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    // Missing or unreadable system roots are not fatal: with --xmpp-ca/--mqtt-ca the bridge does
    // not need them, and without them the handshake fails later with a clear trust error.
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!("system trust store: {error}");
    }
    roots.add_parsable_certificates(native.certs);

    let mut pinned = Vec::new();
    if let Some(path) = extra_ca {
        let ca_error = |source: CaFileError| TlsConfigError::CaFile {
            path: path.to_path_buf(),
            source,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| ca_error(e.into()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ca_error(e.into()))?;
        if certs.is_empty() {
            return Err(ca_error(CaFileError::Empty));
        }
        for cert in &certs {
            roots
                .add(cert.clone())
                .map_err(|e| ca_error(CaFileError::Unusable(e)))?;
        }
        pinned = certs;
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = if pinned.is_empty() {
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| TlsConfigError::Rustls(rustls::Error::General(e.to_string())))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinningVerifier {
                webpki,
                pinned,
                provider,
            }))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// Normal WebPKI verification, except that a server presenting exactly one of the pinned
/// certificates is accepted. Handshake signatures are always checked, so the server must hold
/// the pinned certificate's private key.
#[derive(Debug)]
struct PinningVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => Ok(verified),
            Err(_)
                if self
                    .pinned
                    .iter()
                    .any(|p| p.as_ref() == end_entity.as_ref()) =>
            {
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// This connection's RFC 9266 `tls-exporter` channel-binding bytes (32 bytes, label
/// `EXPORTER-Channel-Binding`, no context), or `None` before TLS 1.3 (where it is undefined).
/// Client and server compute the same bytes; SCRAM-*-PLUS binds the login to them.
pub fn tls_exporter<Data>(connection: &rustls::ConnectionCommon<Data>) -> Option<Vec<u8>> {
    if connection.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return None;
    }
    connection
        .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
        .ok()
}

/// The RFC 5929 §4.1 `tls-server-end-point` channel-binding bytes for a server whose end-entity
/// certificate is `certificate` (DER): the hash of the certificate, with the hash function of
/// its signature algorithm, except that MD5 and SHA-1 are replaced by SHA-256. `None` when the
/// signature algorithm uses no single hash function named in its identifier (Ed25519,
/// RSASSA-PSS with its hash in the parameters, anything unknown), for which RFC 5929 leaves the
/// binding undefined, or when the DER cannot be read. Unlike `tls-exporter` it is defined for
/// every TLS version, which is why XEP-0440 servers are expected to offer it.
pub fn tls_server_end_point(certificate: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest as _;
    let algorithm = signature_algorithm(certificate)?;
    // The OIDs' content octets (X.690 §8.19), from RFC 3279, RFC 4055 and RFC 5758.
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    let hash = match algorithm {
        // md5WithRSAEncryption (…1.4), sha1WithRSAEncryption (…1.5), ecdsa-with-SHA1 (…4.1):
        // "if the certificate's signatureAlgorithm uses a single hash function, and that hash
        // function is either MD5 or SHA-1, then use SHA-256".
        [rsa @ .., 4 | 5] if rsa == RSA => 256,
        [ecdsa @ .., 1] if ecdsa == ECDSA => 256,
        [rsa @ .., 11] if rsa == RSA => 256,
        [rsa @ .., 12] if rsa == RSA => 384,
        [rsa @ .., 13] if rsa == RSA => 512,
        [ecdsa @ .., 3, n @ 2..=4] if ecdsa == ECDSA => [256, 384, 512][usize::from(*n) - 2],
        _ => return None,
    };
    Some(match hash {
        256 => sha2::Sha256::digest(certificate).to_vec(),
        384 => sha2::Sha384::digest(certificate).to_vec(),
        _ => sha2::Sha512::digest(certificate).to_vec(),
    })
}

/// The content octets of the signature algorithm's OID in an X.509 certificate (RFC 5280
/// §4.1.1.2: `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }`,
/// `AlgorithmIdentifier ::= SEQUENCE { algorithm OBJECT IDENTIFIER, parameters ANY OPTIONAL }`).
fn signature_algorithm(certificate: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (certificate, _) = der_element(certificate, SEQUENCE)?;
    let (_tbs, rest) = der_any(certificate)?;
    let (algorithm, _) = der_element(rest, SEQUENCE)?;
    let (oid, _) = der_element(algorithm, OID)?;
    Some(oid)
}

/// The content of the DER element with `tag` at the start of `der`, and what follows it.
fn der_element(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match der.first() {
        Some(first) if *first == tag => der_any(der),
        _ => None,
    }
}

/// The content of the DER element at the start of `der` (single-byte tags only), and what
/// follows it.
fn der_any(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&first_length, rest) = der.get(1..)?.split_first()?;
    let (length, rest) = if first_length < 0x80 {
        (usize::from(first_length), rest)
    } else {
        let count = usize::from(first_length & 0x7f);
        if count == 0 || count > std::mem::size_of::<usize>() {
            return None;
        }
        let (bytes, rest) = (rest.get(..count)?, rest.get(count..)?);
        let length = bytes
            .iter()
            .fold(0usize, |length, byte| (length << 8) | usize::from(*byte));
        (length, rest)
    };
    Some((rest.get(..length)?, rest.get(length..)?))
}

/// If `error` (or its source chain) is a certificate verification failure, a sentence for the
/// user saying so; such failures are configuration problems that retrying cannot fix.
pub fn untrusted_certificate(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(rustls::Error::InvalidCertificate(reason)) = e.downcast_ref::<rustls::Error>() {
            return Some(describe(reason));
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(found) = untrusted_certificate(inner) {
                    return Some(found);
                }
            }
        }
        current = e.source();
    }
    None
}

/// A certificate problem in words a user can act on (rustls' own text shows raw OIDs for some).
fn describe(error: &rustls::CertificateError) -> String {
    use rustls::CertificateError as E;
    match error {
        E::UnknownIssuer
        | E::BadSignature
        | E::UnsupportedSignatureAlgorithmContext { .. }
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "it is not signed by any certificate this machine trusts".into()
        }
        E::NotValidForName | E::NotValidForNameContext { .. } => {
            "it was issued for a different host name".into()
        }
        E::Expired | E::ExpiredContext { .. } => "it has expired".into(),
        E::NotValidYet | E::NotValidYetContext { .. } => {
            "it is not valid yet (is this machine's clock right?)".into()
        }
        E::Revoked => "it has been revoked".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = client_config(Some(&empty)).unwrap_err();
        assert!(err.to_string().contains("empty.pem"), "{err}");
        assert!(err.to_string().contains("no PEM certificate"), "{err}");

        let missing = dir.path().join("missing.pem");
        let err = client_config(Some(&missing)).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }

    #[test]
    fn self_signed_certificate_is_accepted_as_trust_anchor() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let path = dir.path().join("server.pem");
        std::fs::write(&path, cert.cert.pem()).unwrap();
        assert!(client_config(Some(&path)).is_ok());
    }

    /// A self-signed certificate for localhost whose signature uses `algorithm`.
    fn certificate(algorithm: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(algorithm).unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn tls_server_end_point_hashes_the_certificate_with_its_signature_hash() {
        use sha2::Digest as _;
        let p256 = certificate(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(
            tls_server_end_point(&p256),
            Some(sha2::Sha256::digest(&p256).to_vec())
        );
        let p384 = certificate(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(
            tls_server_end_point(&p384),
            Some(sha2::Sha384::digest(&p384).to_vec())
        );
        // The certificate the server makes for itself when none is configured.
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let der = generated.cert.der().to_vec();
        assert_eq!(
            tls_server_end_point(&der),
            Some(sha2::Sha256::digest(&der).to_vec())
        );
    }

    #[test]
    fn tls_server_end_point_uses_sha256_for_sha1_signatures() {
        use sha2::Digest as _;
        // A certificate whose outer signatureAlgorithm is sha1WithRSAEncryption: only the OID
        // matters for the choice of hash (RFC 5929 §4.1).
        let mut der = certificate(&rcgen::PKCS_ECDSA_P256_SHA256);
        let ecdsa_sha256 = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
        let at = der
            .windows(ecdsa_sha256.len())
            .rposition(|window| window == ecdsa_sha256)
            .unwrap();
        der[at..at + 8].copy_from_slice(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01]);
        der.insert(at + 8, 0x05);
        // Lengths grew by one byte: fix the OID, AlgorithmIdentifier and Certificate lengths.
        der[at - 1] += 1;
        der[at - 3] += 1;
        let outer = usize::from(der[2]) << 8 | usize::from(der[3]);
        der[2..4].copy_from_slice(&((outer + 1) as u16).to_be_bytes());
        assert_eq!(
            tls_server_end_point(&der),
            Some(sha2::Sha256::digest(&der).to_vec())
        );
    }

    #[test]
    fn tls_server_end_point_is_undefined_without_a_single_hash_or_for_garbage() {
        assert_eq!(
            tls_server_end_point(&certificate(&rcgen::PKCS_ED25519)),
            None
        );
        for garbage in [
            &[][..],
            &[0x30],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x04, 0x00],
        ] {
            assert_eq!(tls_server_end_point(garbage), None, "{garbage:?}");
        }
        let mut truncated = certificate(&rcgen::PKCS_ECDSA_P256_SHA256);
        truncated.truncate(truncated.len() / 2);
        assert_eq!(tls_server_end_point(&truncated), None);
    }

    #[test]
    fn recognises_certificate_failures_inside_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        assert_eq!(
            untrusted_certificate(&io).as_deref(),
            Some("it is not signed by any certificate this machine trusts")
        );
        let other = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(untrusted_certificate(&other), None);
    }
}

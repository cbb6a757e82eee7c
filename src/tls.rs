//! TLS client configuration shared by the MQTT and XMPP connections: the system's trust roots,
//! plus an optional PEM file (`--mqtt-ca`, `--xmpp-ca`) for self-signed servers.

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

//! TLS client configuration shared by the MQTT and XMPP connections: the system's trust roots,
//! plus an optional PEM file (`--mqtt-ca`, `--xmpp-ca`) for self-signed servers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{pem::PemObject, CertificateDer};
use rustls::{ClientConfig, RootCertStore};
use thiserror::Error;

/// Why a TLS configuration could not be built.
#[derive(Debug, Error)]
pub enum TlsConfigError {
    /// The CA file could not be read or parsed.
    #[error("cannot read certificates from {path}: {reason}")]
    CaFile {
        /// The file named on the command line.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A client configuration trusting the system's roots and every certificate in `extra_ca`.
///
/// A self-signed server certificate can be given directly as `extra_ca`: it becomes a trust
/// anchor for its own name.
pub fn client_config(extra_ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    // Missing or unreadable system roots are not fatal: with --xmpp-ca/--mqtt-ca the bridge does
    // not need them, and without them the handshake fails later with a clear trust error.
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!("system trust store: {error}");
    }
    roots.add_parsable_certificates(native.certs);

    if let Some(path) = extra_ca {
        let ca_error = |reason: String| TlsConfigError::CaFile {
            path: path.to_path_buf(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| ca_error(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ca_error(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_error("no PEM certificate found".into()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| ca_error(format!("unusable certificate: {e}")))?;
        }
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// If `error` (or its source chain) is a certificate verification failure, a sentence for the
/// user saying so; such failures are configuration problems that retrying cannot fix.
pub fn untrusted_certificate(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(rustls::Error::InvalidCertificate(reason)) = e.downcast_ref::<rustls::Error>() {
            return Some(format!("{reason:?}"));
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
        assert_eq!(untrusted_certificate(&io).as_deref(), Some("UnknownIssuer"));
        let other = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(untrusted_certificate(&other), None);
    }
}

//! TLS on the public listener (rustls): the certificate chain and key from PEM files, TLS 1.2
//! and 1.3 only, and with `client_ca_file` a client certificate signed by that CA required
//! (mutual TLS, e.g. for Jenkins posting its events). The certificate sits behind a resolver
//! that a reload swaps ([`Certificates::adopt`]), so a renewed certificate (certbot,
//! cert-manager) is taken on SIGHUP without a restart; connections already open keep theirs.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig, version};

use crate::config::TlsSettings;

/// The public listener's certificate, reloadable.
#[derive(Debug)]
pub struct Certificates {
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificates {
    /// Serves, from the next handshake on, the certificate `renewed` loaded (a reload read
    /// the files again and every check passed); connections already open keep theirs.
    pub fn adopt(&self, renewed: &Certificates) {
        let key = Arc::clone(
            &renewed
                .current
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = key;
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        ))
    }
}

/// What the public listener serves TLS with.
#[derive(Debug, Clone)]
pub struct Tls {
    pub config: Arc<ServerConfig>,
    pub certificates: Arc<Certificates>,
    /// The client CAs as loaded (their DER), when `client_ca_file` is set: the verifier is built
    /// into the listener's config, so a reload can only tell whether they changed.
    pub client_cas: Option<Vec<Vec<u8>>>,
}

fn certified_key(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, (&'static str, String)> {
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            (
                "cert_file",
                format!("cert_file {}: {e}", cert_file.display()),
            )
        })?;
    if chain.is_empty() {
        return Err((
            "cert_file",
            format!(
                "cert_file {}: no PEM certificate in it",
                cert_file.display()
            ),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| ("key_file", format!("key_file {}: {e}", key_file.display())))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| ("key_file", format!("key_file {}: {e}", key_file.display())))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        (
            "key_file",
            format!(
                "key_file {} does not go with cert_file {}: {e}",
                key_file.display(),
                cert_file.display()
            ),
        )
    })?;
    Ok(certified)
}

/// Builds the listener's TLS from `[server.tls]`; an error names the field and the reason.
pub fn load(settings: &TlsSettings) -> Result<Tls, (&'static str, String)> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let key = certified_key(&settings.cert_file, &settings.key_file, &provider)?;
    let certificates = Arc::new(Certificates {
        current: RwLock::new(Arc::new(key)),
    });
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .map_err(|e| ("cert_file", e.to_string()))?;
    let mut client_cas = None;
    let builder = match &settings.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(ca_file)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| ("client_ca_file", format!("{}: {e}", ca_file.display())))?;
            client_cas = Some(certs.iter().map(|cert| cert.to_vec()).collect());
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| ("client_ca_file", format!("{}: {e}", ca_file.display())))?;
            }
            if roots.is_empty() {
                return Err((
                    "client_ca_file",
                    format!("{}: no PEM certificate in it", ca_file.display()),
                ));
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| ("client_ca_file", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config =
        builder.with_cert_resolver(Arc::clone(&certificates) as Arc<dyn ResolvesServerCert>);
    Ok(Tls {
        config: Arc::new(config),
        certificates,
        client_cas,
    })
}

//! Mutual TLS between nodes (rustls): each node presents a certificate signed by the cluster's
//! CA and accepts only peers that do the same. A plaintext peer fails the handshake.

use std::sync::Arc;

use anyhow::{anyhow, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::TlsConfig;

#[derive(Clone)]
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl Tls {
    pub(crate) fn load(cfg: &TlsConfig) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert)
            .and_then(|it| it.collect())
            .with_context(|| format!("cert {}", cfg.cert.display()))?;
        if certs.is_empty() {
            return Err(anyhow!("cert {} holds no certificate", cfg.cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(&cfg.key)
            .with_context(|| format!("key {}", cfg.key.display()))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&cfg.ca)
            .with_context(|| format!("ca {}", cfg.ca.display()))?
        {
            roots
                .add(ca.with_context(|| format!("ca {}", cfg.ca.display()))?)
                .with_context(|| format!("ca {}", cfg.ca.display()))?;
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .context("ca")?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .context("cert and key do not match")?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .context("cert and key do not match")?;
        let server_name = ServerName::try_from(cfg.server_name.clone())
            .map_err(|_| anyhow!("server_name {:?} is not a DNS name", cfg.server_name))?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            server_name,
        })
    }

    pub(crate) fn incoming(&self) -> ractor_cluster::IncomingEncryptionMode {
        ractor_cluster::IncomingEncryptionMode::Tls(self.acceptor.clone())
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    pub(crate) fn connector(&self) -> TlsConnector {
        self.connector.clone()
    }

    pub(crate) fn server_name(&self) -> ServerName<'static> {
        self.server_name.clone()
    }
}

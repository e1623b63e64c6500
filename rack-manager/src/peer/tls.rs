//! Mutual TLS between racks, with no certificate authority: each side pins the other's
//! certificate by its SHA-256 fingerprint. The server refuses, during the handshake, any client
//! whose certificate is not a configured peer's (or that has none); the client refuses any server
//! whose certificate is not the one pinned for that peer. Signatures in the handshake are still
//! checked with the certificate's key, so holding a copy of a certificate is not enough.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};

use super::identity::{Fingerprint, Identity, fingerprint};

/// The certificates this rack accepts from clients: fingerprint → peer name. Shared with the
/// peer list, so `peer add` and `peer rm` take effect on the next handshake.
pub type TrustedPeers = Arc<RwLock<HashMap<Fingerprint, String>>>;

/// The name every peer connection asks for; certificates are pinned, not matched by name.
pub const SERVER_NAME: &str = "peer.rack.mast";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// The server side of a peer link.
pub fn server_config(identity: &Identity, trusted: TrustedPeers) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(PeerClientVerifier { trusted, algorithms: algorithms() }))
        .with_single_cert(vec![identity.cert.clone()], identity.key())?;
    Ok(Arc::new(config))
}

/// The client side of a link to the peer whose certificate has fingerprint `pinned`.
pub fn client_config(identity: &Identity, pinned: Fingerprint) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous() // Not a CA chain: the verifier below pins the exact certificate.
        .with_custom_certificate_verifier(Arc::new(PinnedServerVerifier { pinned, algorithms: algorithms() }))
        .with_client_auth_cert(vec![identity.cert.clone()], identity.key())?;
    Ok(Arc::new(config))
}

/// The client side of a link to a server whose certificate has fingerprint `pinned`, presenting
/// no certificate of its own (the manager calling an agent: it proves itself with a token).
pub fn pinned_client_config(pinned: Fingerprint) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous() // Not a CA chain: the verifier below pins the exact certificate.
        .with_custom_certificate_verifier(Arc::new(PinnedServerVerifier { pinned, algorithms: algorithms() }))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The server side of a TLS listener that asks for no client certificate (an agent's API:
/// callers prove themselves with a token).
pub fn server_config_without_client_auth(identity: &Identity) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![identity.cert.clone()], identity.key())?;
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct PinnedServerVerifier {
    pinned: Fingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let found = fingerprint(end_entity);
        if found == self.pinned {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::General(format!(
                "the peer's certificate has fingerprint {}, not the pinned {}",
                hex::encode(found),
                hex::encode(self.pinned)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[derive(Debug)]
struct PeerClientVerifier {
    trusted: TrustedPeers,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for PeerClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let known = self.trusted.read().unwrap_or_else(|p| p.into_inner()).contains_key(&fingerprint(end_entity));
        if known {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

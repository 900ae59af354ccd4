//! A test certificate authority and a `discord.com` certificate it signed, so the bot's HTTP
//! client can reach the simulator over real TLS with only an extra root certificate.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub(crate) struct TestAuthority {
    pub(crate) ca_pem: String,
    pub(crate) server_config: Arc<rustls::ServerConfig>,
}

pub(crate) fn authority() -> Result<TestAuthority, String> {
    let error = |error: rcgen::Error| error.to_string();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(error)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "Vouch test CA");
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate().map_err(error)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(error)?;

    let mut leaf_params = CertificateParams::new(vec!["discord.com".to_string()]).map_err(error)?;
    leaf_params.distinguished_name.push(DnType::CommonName, "discord.com");
    let leaf_key = KeyPair::generate().map_err(error)?;
    let leaf_cert = leaf_params.signed_by(&leaf_key, &ca_cert, &ca_key).map_err(error)?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf_cert.der().to_vec()), CertificateDer::from(ca_cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .map_err(|error| error.to_string())?;
    let mut server_config = server_config;
    server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TestAuthority { ca_pem: ca_cert.pem(), server_config: Arc::new(server_config) })
}

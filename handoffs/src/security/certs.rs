//! TLS certificates for the NATS server, made in-process with `rcgen` (ECDSA P-256 keys from
//! `ring`): a self-signed CA valid ten years and a server certificate it signs, valid 825 days,
//! for the configured names. Keys are PKCS#8 PEM, mode 0600.

use super::{SecurityError, io, write_private};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// TLS files of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate (clients pass it as `--nats-ca` / `NATS_CA`).
    pub ca_file: PathBuf,
    /// Server certificate.
    pub cert_file: PathBuf,
    /// Server private key.
    pub key_file: PathBuf,
    /// Require client certificates signed by the CA (mutual TLS).
    pub verify: bool,
}

/// How long the CA is valid: ten years.
pub const CA_VALID_DAYS: u64 = 3650;
/// How long the server certificate is valid (the longest clients such as Apple's accept).
pub const SERVER_VALID_DAYS: u64 = 825;
/// The CA's common name.
pub const CA_NAME: &str = "threadcycle NATS CA";
/// The server certificate's common name.
pub const SERVER_NAME: &str = "threadcycle NATS server";

fn cert_error(what: &str, e: rcgen::Error) -> SecurityError {
    SecurityError::Certificate(format!("{what}: {e}"))
}

/// Valid from now for `days`.
fn validity(params: &mut CertificateParams, days: u64) {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(since_epoch.as_secs());
    params.not_after = params.not_before + Duration::from_secs(days * 86_400);
}

/// Makes a self-signed CA and a server certificate for `names` (DNS names and IP addresses) in
/// `dir`: `ca.pem`, `ca-key.pem` (0600), `server.pem`, `server-key.pem` (0600).
pub fn make_certificates(dir: &Path, names: &[String]) -> Result<TlsFiles, SecurityError> {
    std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;

    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| cert_error("CA key", e))?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, CA_NAME);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca, CA_VALID_DAYS);
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| cert_error("CA certificate", e))?;

    let server_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| cert_error("server key", e))?;
    // Names that parse as IP addresses become IP SANs, the others DNS SANs.
    let mut server = CertificateParams::new(names.to_vec()).map_err(|e| cert_error("server name", e))?;
    server.distinguished_name = rcgen::DistinguishedName::new();
    server.distinguished_name.push(DnType::CommonName, SERVER_NAME);
    server.is_ca = IsCa::ExplicitNoCa;
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    validity(&mut server, SERVER_VALID_DAYS);
    let issuer = Issuer::from_params(&ca, &ca_key);
    let server_cert = server.signed_by(&server_key, &issuer).map_err(|e| cert_error("server certificate", e))?;

    let files = TlsFiles {
        ca_file: dir.join("ca.pem"),
        cert_file: dir.join("server.pem"),
        key_file: dir.join("server-key.pem"),
        verify: false,
    };
    std::fs::write(&files.ca_file, ca_cert.pem()).map_err(|e| io("write", &files.ca_file, e))?;
    write_private(&dir.join("ca-key.pem"), &ca_key.serialize_pem())?;
    std::fs::write(&files.cert_file, server_cert.pem()).map_err(|e| io("write", &files.cert_file, e))?;
    write_private(&files.key_file, &server_key.serialize_pem())?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_pem_files_with_private_keys() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tmp");
        let names = vec!["localhost".to_string(), "nats".into(), "127.0.0.1".into()];
        let t = make_certificates(tmp.path(), &names).expect("certificates");
        for (file, header, mode) in [
            ("ca.pem", "-----BEGIN CERTIFICATE-----", None),
            ("server.pem", "-----BEGIN CERTIFICATE-----", None),
            ("ca-key.pem", "-----BEGIN PRIVATE KEY-----", Some(0o600)),
            ("server-key.pem", "-----BEGIN PRIVATE KEY-----", Some(0o600)),
        ] {
            let path = tmp.path().join(file);
            let text = std::fs::read_to_string(&path).expect("written");
            assert!(text.starts_with(header), "{file}: {text}");
            if let Some(m) = mode {
                let got = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
                assert_eq!(got, m, "{file}");
            }
        }
        assert_eq!(t.ca_file, tmp.path().join("ca.pem"));
        assert!(make_certificates(tmp.path(), &["nätș".into()]).is_err());
    }
}

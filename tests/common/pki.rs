//! A k3s-like PKI for the test stand-ins: a server CA with a serving
//! certificate for 127.0.0.1/localhost, and a client CA with the admin
//! client certificate (CN system:admin, O system:masters).

#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// PEM material.
pub struct Pki {
    /// server-ca.crt
    pub server_ca: String,
    /// serving-kube-apiserver.crt
    pub serving_cert: String,
    /// serving-kube-apiserver.key
    pub serving_key: String,
    /// client-ca.crt
    pub client_ca: String,
    /// client-admin.crt
    pub admin_cert: String,
    /// client-admin.key
    pub admin_key: String,
}

fn ca(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// A fresh PKI.
pub fn generate() -> Pki {
    let server_ca = ca("k3s-server-ca");
    let client_ca = ca("k3s-client-ca");

    let mut p =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    let serving_key = KeyPair::generate().unwrap();
    let serving = p.signed_by(&serving_key, &server_ca).unwrap();

    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, "system:admin");
    p.distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    let admin_key = KeyPair::generate().unwrap();
    let admin = p.signed_by(&admin_key, &client_ca).unwrap();

    Pki {
        server_ca: server_ca.pem(),
        serving_cert: serving.pem(),
        serving_key: serving_key.serialize_pem(),
        client_ca: client_ca.pem(),
        admin_cert: admin.pem(),
        admin_key: admin_key.serialize_pem(),
    }
}

//! Personal data sealed at rest: a registration's name, phone and ID number are sealed to the street office's public
//! key (libsodium-compatible sealed boxes: X25519 + XSalsa20-Poly1305, `crypto_box`) before they are written. The gate
//! keeps only masked forms for its console and cannot read the originals back; only the office, holding the secret
//! key, opens them (for its exports).

use std::path::Path;

use base64::Engine;
use crypto_box::aead::OsRng;
use crypto_box::{PublicKey, SecretKey};
use serde::{Deserialize, Serialize};

/// Label of the office's sealing public key file.
const PUBLIC_LABEL: &str = "sibi-x25519-public:";
/// Label of the office's secret key file (kept at the office only).
const SECRET_LABEL: &str = "sibi-x25519-secret:";

/// The personal identifiers that never rest in clear on a gate.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Personal {
    /// Full name.
    pub name: String,
    /// Phone number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Resident ID number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_number: Option<String>,
    /// The address on an ID card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

impl Personal {
    /// The identifiers of `r` to seal, if any were given.
    pub fn of(r: &crate::checkpoint::Registration) -> Option<Personal> {
        let given = !r.name.is_empty() || r.phone.is_some() || r.id_number.is_some();
        given.then(|| Personal {
            name: r.name.clone(),
            phone: r.phone.clone(),
            id_number: r.id_number.clone(),
            address: r.address.clone(),
        })
    }
}

/// Make the office's sealing key pair: `NAME.key` (secret, stays at the office) and `NAME.pub` (for every gate).
pub fn write_key_pair(dir: &Path, name: &str) -> Result<(std::path::PathBuf, std::path::PathBuf), String> {
    let secret = SecretKey::from_bytes(crate::keys::random32()?);
    crate::keys::write_pair(
        dir,
        name,
        (SECRET_LABEL, &secret.to_bytes()),
        (PUBLIC_LABEL, secret.public_key().as_bytes()),
    )
}

/// Read the office's public sealing key (on a gate).
pub fn read_public(path: &Path) -> Result<PublicKey, String> {
    crate::keys::read(path, PUBLIC_LABEL, "the office's public sealing key").map(PublicKey::from)
}

/// Read the office's secret key (at the office).
pub fn read_secret(path: &Path) -> Result<SecretKey, String> {
    crate::keys::read(path, SECRET_LABEL, "the office's secret sealing key").map(SecretKey::from)
}

/// Seal `p` to `office`: base64 of the sealed box of its JSON.
pub fn seal(office: &PublicKey, p: &Personal) -> Result<String, String> {
    let json = serde_json::to_vec(p).map_err(|e| e.to_string())?;
    let sealed = office.seal(&mut OsRng, &json).map_err(|_| "sealing failed".to_string())?;
    Ok(base64::engine::general_purpose::STANDARD.encode(sealed))
}

/// Open a sealed record with the office's secret key.
pub fn unseal(secret: &SecretKey, sealed: &str) -> Result<Personal, String> {
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(sealed.trim()).map_err(|e| format!("not base64: {e}"))?;
    let json = secret.unseal(&bytes).map_err(|_| "cannot open: wrong key or damaged record".to_string())?;
    serde_json::from_slice(&json).map_err(|e| format!("unexpected contents: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_records_open_only_with_the_office_key() {
        let dir = tempfile::tempdir().unwrap();
        let (secret_path, public_path) = write_key_pair(dir.path(), "office-seal").unwrap();
        let public = read_public(&public_path).unwrap();
        let secret = read_secret(&secret_path).unwrap();
        let p = Personal {
            name: "测试访客".into(),
            phone: Some("13800000000".into()),
            id_number: Some("TEST-ID-0001".into()),
            address: Some("测试地址1号".into()),
        };
        let sealed = seal(&public, &p).unwrap();
        assert!(!sealed.contains("13800000000"));
        assert_ne!(seal(&public, &p).unwrap(), sealed, "each seal is fresh");
        assert_eq!(unseal(&secret, &sealed).unwrap(), p);
        let other = SecretKey::from_bytes([5u8; 32]);
        assert!(unseal(&other, &sealed).unwrap_err().contains("wrong key"));
        assert!(read_public(&secret_path).is_err(), "a secret key file is not a public key");
        assert!(write_key_pair(dir.path(), "office-seal").is_err(), "never overwritten");
    }
}

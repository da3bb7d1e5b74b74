//! Labelled key files: one line, `LABEL` then 64 hex digits. The label names the kind and half of the key
//! (`sibi-ed25519-private:`, `sibi-x25519-public:`...), so a public key is never taken for a private one, nor a
//! signing key for a sealing key. Private halves are written mode 0600 and never overwritten.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// 32 bytes from 64 hex digits.
pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// An Ed25519 signature over `body`, as hex (how gates sign batches and reports, and the office signs bundles).
pub fn sign_hex(key: &ed25519_dalek::SigningKey, body: &[u8]) -> String {
    use ed25519_dalek::Signer;
    hex(&key.sign(body).to_bytes())
}

/// The header that carries a signed request's counter (see [`request_message`]).
pub const COUNTER_HEADER: &str = "x-sibi-counter";

/// What a gate (or a child office) signs for a request to its office: the request's counter, then the exact body.
/// The counter rises with every request the signer makes, and the office takes each signer's counters only
/// rising, so a recorded request sent again (a replay making a dead gate look alive, an old report put back) is
/// refused.
pub fn request_message(counter: u64, body: &[u8]) -> Vec<u8> {
    let mut message = format!("sibi-request {counter}\n").into_bytes();
    message.extend_from_slice(body);
    message
}

/// The hex signature over [`request_message`]`(counter, body)`.
pub fn sign_request(key: &ed25519_dalek::SigningKey, counter: u64, body: &[u8]) -> String {
    sign_hex(key, &request_message(counter, body))
}

/// A hex Ed25519 signature, if it is one (128 hex digits).
pub fn signature_from_hex(s: &str) -> Option<ed25519_dalek::Signature> {
    let (a, b) = (unhex32(s.get(..64)?)?, unhex32(s.get(64..)?)?);
    let mut bytes = [0u8; 64];
    bytes[..32].copy_from_slice(&a);
    bytes[32..].copy_from_slice(&b);
    Some(ed25519_dalek::Signature::from_bytes(&bytes))
}

/// 32 random bytes from the system.
pub fn random32() -> Result<[u8; 32], String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no randomness from the system: {e}"))?;
    Ok(seed)
}

/// The 32 bytes behind `label` in key file text.
pub fn parse(text: &str, label: &str) -> Option<[u8; 32]> {
    text.trim().strip_prefix(label).and_then(unhex32)
}

/// Read the key behind `label` from `path`, saying what was expected if it is not there.
pub fn read(path: &Path, label: &str, what: &str) -> Result<[u8; 32], String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&text, label).ok_or_else(|| format!("{} is not {what} (made by `sibi keygen`)", path.display()))
}

/// Write `NAME.key` (private, mode 0600, fsynced) and `NAME.pub` into `dir`; refuses to overwrite a private key.
pub fn write_pair(
    dir: &Path,
    name: &str,
    private: (&str, &[u8]),
    public: (&str, &[u8]),
) -> Result<(PathBuf, PathBuf), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let private_path = dir.join(format!("{name}.key"));
    let public_path = dir.join(format!("{name}.pub"));
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&private_path).map_err(|e| {
            format!("cannot create {} (an existing key is never overwritten): {e}", private_path.display())
        })?;
    f.write_all(format!("{}{}\n", private.0, hex(private.1)).as_bytes()).map_err(|e| e.to_string())?;
    f.sync_all().map_err(|e| e.to_string())?;
    std::fs::write(&public_path, format!("{}{}\n", public.0, hex(public.1)))
        .map_err(|e| format!("cannot write {}: {e}", public_path.display()))?;
    Ok((private_path, public_path))
}

/// `sibi keygen --out DIR --name NAME --kind sign|seal`: writes NAME.key (0600) and NAME.pub, never over a key.
pub fn keygen_command(dir: &Path, name: &str, kind: &str) -> crate::cli::Outcome {
    use crate::cli::Failure;
    if kind == "seal" {
        let (secret, public) = crate::privacy::write_key_pair(dir, name).map_err(Failure::Usage)?;
        println!("secret key: {} (stays at the office; it opens sealed personal data)", secret.display());
        println!("public key: {} (give it to every gate: [privacy] office_key)", public.display());
        return Ok(());
    }
    let key = crate::credential::pass::generate_key().map_err(Failure::Failed)?;
    let (private, public) = crate::credential::pass::write_key_pair(dir, name, &key).map_err(Failure::Usage)?;
    println!("private key: {} (keep it private: it signs passes, or this gate's batches)", private.display());
    println!("public key:  {} (give it to the gates, or to the office to enroll this gate)", public.display());
    Ok(())
}

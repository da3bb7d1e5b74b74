//! EU Digital COVID Certificates (`HC1:`), verified offline: prefix → base45 → zlib (bounded) → COSE_Sign1 → CWT
//! → signature (ES256 / PS256) against a trust list of signer certificates → key usage → validity window.
//!
//! Every stage is a function of its own, so the conformance test can check each `EXPECTED*` flag of the public test
//! vectors against the stage it names; [`verify`] runs the whole chain and reports the first stage that failed.
//! Nothing here panics on hostile input: sizes are bounded and every parse returns an error.

use std::io::Read;

use ciborium::Value;
use sha2::{Digest, Sha256};

use crate::domain::Timestamp;

/// The context prefix of a DCC QR text.
pub const PREFIX: &str = "HC1:";
/// Upper bound of the decompressed COSE message (a real DCC is under 1 KB; this stops decompression bombs).
pub const MAX_COSE_BYTES: usize = 64 * 1024;
/// Upper bound of the QR text accepted (a QR code holds at most 4296 alphanumeric characters).
pub const MAX_TEXT: usize = 8 * 1024;

/// Where verification stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Not `HC1:`.
    Prefix,
    /// Not base45.
    Base45,
    /// Not zlib, broken, or too large.
    Decompress,
    /// Not a COSE_Sign1 structure.
    Cose,
    /// Not a CWT with a health certificate.
    Cwt,
    /// No trusted signer certificate has the message's key id.
    Kid,
    /// Unsupported or inconsistent algorithm.
    Algorithm,
    /// The signature does not verify.
    Signature,
    /// The signer may not sign this kind of certificate.
    KeyUsage,
    /// The validation time is before the issue time.
    NotYetValid,
    /// The validation time is after expiry.
    Expired,
}

impl Stage {
    /// The stable name (`signature`, `expired`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Prefix => "prefix",
            Stage::Base45 => "base45",
            Stage::Decompress => "decompress",
            Stage::Cose => "cose",
            Stage::Cwt => "cwt",
            Stage::Kid => "kid",
            Stage::Algorithm => "algorithm",
            Stage::Signature => "signature",
            Stage::KeyUsage => "key_usage",
            Stage::NotYetValid => "not_yet_valid",
            Stage::Expired => "expired",
        }
    }
}

/// A failed stage and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", stage.as_str())]
pub struct DccError {
    /// The stage.
    pub stage: Stage,
    /// Why (English, for logs and the command line).
    pub detail: String,
}

fn fail<T>(stage: Stage, detail: impl Into<String>) -> Result<T, DccError> {
    Err(DccError { stage, detail: detail.into() })
}

/// Strip `HC1:`.
pub fn unprefix(text: &str) -> Result<&str, DccError> {
    if text.len() > MAX_TEXT {
        return fail(Stage::Prefix, format!("text of {} bytes is longer than any QR code", text.len()));
    }
    match text.strip_prefix(PREFIX) {
        Some(rest) => Ok(rest),
        None => fail(Stage::Prefix, "does not start with HC1:"),
    }
}

/// Base45 (RFC 9285).
pub fn base45_decode(s: &str) -> Result<Vec<u8>, DccError> {
    base45::decode(s).map_err(|e| DccError { stage: Stage::Base45, detail: format!("{e:?}") })
}

/// Inflate a zlib stream, refusing output beyond [`MAX_COSE_BYTES`].
pub fn decompress(data: &[u8]) -> Result<Vec<u8>, DccError> {
    let mut out = Vec::new();
    let mut z = flate2::read::ZlibDecoder::new(data).take(MAX_COSE_BYTES as u64 + 1);
    z.read_to_end(&mut out).map_err(|e| DccError { stage: Stage::Decompress, detail: e.to_string() })?;
    if out.len() > MAX_COSE_BYTES {
        return fail(Stage::Decompress, format!("inflates beyond {MAX_COSE_BYTES} bytes"));
    }
    if out.is_empty() {
        return fail(Stage::Decompress, "empty");
    }
    Ok(out)
}

/// A parsed COSE_Sign1 message.
#[derive(Debug, Clone)]
pub struct CoseSign1 {
    /// The protected header, as the signed bytes.
    pub protected_bytes: Vec<u8>,
    protected: Vec<(Value, Value)>,
    unprotected: Vec<(Value, Value)>,
    /// The payload (a CWT).
    pub payload: Vec<u8>,
    /// The signature.
    pub signature: Vec<u8>,
}

const HDR_ALG: i128 = 1;
const HDR_KID: i128 = 4;
/// ES256.
pub const ALG_ES256: i128 = -7;
/// PS256.
pub const ALG_PS256: i128 = -37;

fn int_key(v: &Value) -> Option<i128> {
    v.as_integer().map(i128::from)
}

fn lookup(map: &[(Value, Value)], key: i128) -> Option<&Value> {
    map.iter().find(|(k, _)| int_key(k) == Some(key)).map(|(_, v)| v)
}

/// Parse COSE_Sign1 (tag 18, possibly inside the CWT tag 61, or untagged).
pub fn parse_cose(bytes: &[u8]) -> Result<CoseSign1, DccError> {
    let bad = |d: &str| DccError { stage: Stage::Cose, detail: d.to_string() };
    let mut v: Value = ciborium::from_reader(bytes).map_err(|e| bad(&format!("not CBOR: {e}")))?;
    for _ in 0..3 {
        match v {
            Value::Tag(61 | 18, inner) => v = *inner,
            _ => break,
        }
    }
    let Value::Array(items) = v else {
        return Err(bad("not a COSE_Sign1 array"));
    };
    let [protected, unprotected, payload, signature]: [Value; 4] =
        items.try_into().map_err(|_| bad("a COSE_Sign1 array has four elements"))?;
    let protected_bytes = protected.into_bytes().map_err(|_| bad("protected header is not a byte string"))?;
    let protected = if protected_bytes.is_empty() {
        Vec::new()
    } else {
        match ciborium::from_reader::<Value, _>(protected_bytes.as_slice()) {
            Ok(Value::Map(m)) => m,
            _ => return Err(bad("protected header is not a CBOR map")),
        }
    };
    let unprotected = match unprotected {
        Value::Map(m) => m,
        _ => return Err(bad("unprotected header is not a map")),
    };
    let payload = payload.into_bytes().map_err(|_| bad("payload is not a byte string"))?;
    let signature = signature.into_bytes().map_err(|_| bad("signature is not a byte string"))?;
    Ok(CoseSign1 { protected_bytes, protected, unprotected, payload, signature })
}

impl CoseSign1 {
    /// The key id: the protected header's if present, else the unprotected one's.
    pub fn kid(&self) -> Option<Vec<u8>> {
        lookup(&self.protected, HDR_KID)
            .or_else(|| lookup(&self.unprotected, HDR_KID))
            .and_then(|v| v.as_bytes().cloned())
    }

    /// The algorithm (protected header first).
    pub fn alg(&self) -> Option<i128> {
        lookup(&self.protected, HDR_ALG).or_else(|| lookup(&self.unprotected, HDR_ALG)).and_then(int_key)
    }

    /// The bytes that were signed (Sig_structure, RFC 8152 §4.4).
    pub fn to_be_signed(&self) -> Vec<u8> {
        let s = Value::Array(vec![
            Value::Text("Signature1".into()),
            Value::Bytes(self.protected_bytes.clone()),
            Value::Bytes(Vec::new()),
            Value::Bytes(self.payload.clone()),
        ]);
        let mut out = Vec::new();
        // Writing CBOR into a Vec cannot fail.
        let _ = ciborium::into_writer(&s, &mut out);
        out
    }
}

/// Which kind of certificate the DGC holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DgcKind {
    /// Vaccination (`v`).
    Vaccination,
    /// Test (`t`).
    Test,
    /// Recovery (`r`).
    Recovery,
}

/// The CWT claims that matter.
#[derive(Debug, Clone)]
pub struct Cwt {
    /// Issuing country.
    pub iss: Option<String>,
    /// Issued at (seconds).
    pub iat: Option<i64>,
    /// Expires (seconds).
    pub exp: Option<i64>,
    /// The DGC (claim -260, key 1).
    pub dgc: Value,
}

/// Parse the CWT payload.
pub fn parse_cwt(payload: &[u8]) -> Result<Cwt, DccError> {
    let bad = |d: &str| DccError { stage: Stage::Cwt, detail: d.to_string() };
    let v: Value = ciborium::from_reader(payload).map_err(|e| bad(&format!("payload is not CBOR: {e}")))?;
    let Value::Map(claims) = v else {
        return Err(bad("payload is not a CWT claims map"));
    };
    let seconds = |key: i128| -> Result<Option<i64>, DccError> {
        match lookup(&claims, key) {
            None => Ok(None),
            Some(Value::Integer(i)) => i64::try_from(i128::from(*i)).map(Some).map_err(|_| bad("time out of range")),
            Some(Value::Float(f)) if f.is_finite() => Ok(Some(*f as i64)),
            Some(_) => Err(bad("iat/exp is not a number")),
        }
    };
    let hcert = lookup(&claims, -260).ok_or_else(|| bad("no health certificate claim (-260)"))?;
    let Value::Map(hcert) = hcert else {
        return Err(bad("claim -260 is not a map"));
    };
    let dgc = lookup(hcert, 1).ok_or_else(|| bad("claim -260 has no DGC (key 1)"))?.clone();
    if !dgc.is_map() {
        return Err(bad("the DGC is not a map"));
    }
    Ok(Cwt {
        iss: lookup(&claims, 1).and_then(|v| v.as_text().map(str::to_string)),
        iat: seconds(6)?,
        exp: seconds(4)?,
        dgc,
    })
}

impl Cwt {
    /// Which kinds of entry the DGC holds (`v`, `t`, `r`).
    pub fn kinds(&self) -> Vec<DgcKind> {
        let Value::Map(m) = &self.dgc else {
            return Vec::new();
        };
        let mut kinds = Vec::new();
        for (k, v) in m {
            let non_empty = matches!(v, Value::Array(a) if !a.is_empty());
            match (k.as_text(), non_empty) {
                (Some("v"), true) => kinds.push(DgcKind::Vaccination),
                (Some("t"), true) => kinds.push(DgcKind::Test),
                (Some("r"), true) => kinds.push(DgcKind::Recovery),
                _ => {}
            }
        }
        kinds
    }

    /// The holder's standardised names (`nam.fnt`, `nam.gnt`), for masking.
    pub fn holder(&self) -> String {
        let Value::Map(m) = &self.dgc else {
            return String::new();
        };
        let nam = m.iter().find(|(k, _)| k.as_text() == Some("nam")).map(|(_, v)| v);
        let Some(Value::Map(nam)) = nam else {
            return String::new();
        };
        let get = |key: &str| nam.iter().find(|(k, _)| k.as_text() == Some(key)).and_then(|(_, v)| v.as_text());
        match (get("fnt"), get("gnt")) {
            (Some(f), Some(g)) => format!("{f}<<{g}"),
            (Some(f), None) => f.to_string(),
            _ => String::new(),
        }
    }
}

/// Check `at` against `iat` and `exp`.
pub fn check_time(cwt: &Cwt, at: Timestamp) -> Result<(), DccError> {
    let now = at.0.div_euclid(1000);
    if let Some(iat) = cwt.iat
        && now < iat
    {
        return fail(Stage::NotYetValid, format!("issued at {iat}, validation time {now}"));
    }
    if let Some(exp) = cwt.exp
        && now > exp
    {
        return fail(Stage::Expired, format!("expired at {exp}, validation time {now}"));
    }
    Ok(())
}

enum SignerKey {
    Ec(p256::ecdsa::VerifyingKey),
    /// A P-384 key. Some issuers sign with P-384 over SHA-256 and label it ES256 (the ES test vectors 401–403); the
    /// label's hash (SHA-256) is honoured, and the signature must verify on the certificate's own curve.
    Ec384(p384::ecdsa::VerifyingKey),
    Rsa(rsa::PublicKey),
}

/// A document signer certificate from the trust list.
pub struct Signer {
    /// First 8 bytes of SHA-256 of the DER certificate.
    pub kid: [u8; 8],
    key: SignerKey,
    /// Extended key usage OIDs, dotted.
    pub key_usages: Vec<String>,
}

const EKU_TEST: [&str; 2] = ["1.3.6.1.4.1.1847.2021.1.1", "1.3.6.1.4.1.0.1847.2021.1.1"];
const EKU_VACC: [&str; 2] = ["1.3.6.1.4.1.1847.2021.1.2", "1.3.6.1.4.1.0.1847.2021.1.2"];
const EKU_RECOVERY: [&str; 2] = ["1.3.6.1.4.1.1847.2021.1.3", "1.3.6.1.4.1.0.1847.2021.1.3"];

impl Signer {
    /// From a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Signer, String> {
        use p256::pkcs8::DecodePublicKey;
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let spki = cert.public_key().raw;
        let key = if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(spki) {
            SignerKey::Ec(k)
        } else if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_der(spki) {
            SignerKey::Ec384(k)
        } else if let Ok(k) = <rsa::PublicKey as rsa::pkcs8::DecodePublicKey>::from_public_key_der(spki) {
            SignerKey::Rsa(k)
        } else {
            return Err("the certificate's key is not P-256, P-384 or RSA".into());
        };
        let mut key_usages = Vec::new();
        if let Ok(Some(eku)) = cert.extended_key_usage() {
            key_usages.extend(eku.value.other.iter().map(|o| o.to_id_string()));
        }
        let digest = Sha256::digest(der);
        let mut kid = [0u8; 8];
        kid.copy_from_slice(&digest[..8]);
        Ok(Signer { kid, key, key_usages })
    }
}

/// Verify the signature of `cose` with `signer`.
pub fn verify_signature(cose: &CoseSign1, signer: &Signer) -> Result<(), DccError> {
    let tbs = cose.to_be_signed();
    match (&signer.key, cose.alg()) {
        (SignerKey::Ec(k), Some(ALG_ES256)) => {
            use p256::ecdsa::signature::Verifier;
            let sig = p256::ecdsa::Signature::from_slice(&cose.signature)
                .or_else(|_| p256::ecdsa::Signature::from_der(&cose.signature))
                .map_err(|e| DccError { stage: Stage::Signature, detail: format!("malformed ECDSA signature: {e}") })?;
            k.verify(&tbs, &sig)
                .map_err(|_| DccError { stage: Stage::Signature, detail: "ES256 signature invalid".into() })
        }
        (SignerKey::Ec384(k), Some(ALG_ES256)) => {
            use p384::ecdsa::signature::hazmat::PrehashVerifier;
            let sig = p384::ecdsa::Signature::from_slice(&cose.signature)
                .or_else(|_| p384::ecdsa::Signature::from_der(&cose.signature))
                .map_err(|e| DccError { stage: Stage::Signature, detail: format!("malformed ECDSA signature: {e}") })?;
            let digest = Sha256::digest(&tbs);
            k.verify_prehash(&digest, &sig)
                .map_err(|_| DccError { stage: Stage::Signature, detail: "ES256 (P-384) signature invalid".into() })
        }
        (SignerKey::Rsa(k), Some(ALG_PS256)) => {
            use rsa::signature::Verifier;
            let vk = rsa::pss::VerifyingKey::<Sha256>::new(k.clone());
            let sig = rsa::pss::Signature::try_from(cose.signature.as_slice())
                .map_err(|e| DccError { stage: Stage::Signature, detail: format!("malformed PSS signature: {e}") })?;
            vk.verify(&tbs, &sig)
                .map_err(|_| DccError { stage: Stage::Signature, detail: "PS256 signature invalid".into() })
        }
        (_, Some(alg)) if alg != ALG_ES256 && alg != ALG_PS256 => {
            fail(Stage::Algorithm, format!("algorithm {alg} is not ES256 or PS256"))
        }
        (_, None) => fail(Stage::Algorithm, "no algorithm in the header"),
        (_, Some(alg)) => fail(Stage::Algorithm, format!("algorithm {alg} does not match the signer's key type")),
    }
}

/// The signer's extended key usage must allow every kind of entry in the DGC (no DGC key usage: all allowed).
pub fn check_key_usage(signer: &Signer, cwt: &Cwt) -> Result<(), DccError> {
    let has = |oids: &[&str; 2]| signer.key_usages.iter().any(|u| oids.contains(&u.as_str()));
    if !(has(&EKU_TEST) || has(&EKU_VACC) || has(&EKU_RECOVERY)) {
        return Ok(());
    }
    for kind in cwt.kinds() {
        let allowed = match kind {
            DgcKind::Test => has(&EKU_TEST),
            DgcKind::Vaccination => has(&EKU_VACC),
            DgcKind::Recovery => has(&EKU_RECOVERY),
        };
        if !allowed {
            return fail(Stage::KeyUsage, format!("the signer may not sign {kind:?} certificates"));
        }
    }
    Ok(())
}

/// A verified certificate.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The claims.
    pub cwt: Cwt,
    /// The signer's key id.
    pub kid: [u8; 8],
}

/// The whole chain, from QR text to a verified certificate, at validation time `at`. Every signer sharing the
/// message's key id is tried.
pub fn verify(text: &str, trust: &[Signer], at: Timestamp) -> Result<Verified, DccError> {
    let b45 = unprefix(text.trim_end())?;
    let compressed = base45_decode(b45)?;
    let cose_bytes = decompress(&compressed)?;
    let cose = parse_cose(&cose_bytes)?;
    let cwt = parse_cwt(&cose.payload)?;
    let Some(kid) = cose.kid() else {
        return fail(Stage::Kid, "the message has no key id");
    };
    let candidates: Vec<&Signer> = trust.iter().filter(|s| s.kid.as_slice() == kid.as_slice()).collect();
    if candidates.is_empty() {
        return fail(Stage::Kid, format!("no trusted signer has key id {}", crate::keys::hex(&kid)));
    }
    let mut last = None;
    for signer in candidates {
        match verify_signature(&cose, signer).and_then(|()| check_key_usage(signer, &cwt)) {
            Ok(()) => {
                check_time(&cwt, at)?;
                return Ok(Verified { cwt, kid: signer.kid });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(DccError { stage: Stage::Signature, detail: "no signer verified".into() }))
}

/// CBOR → JSON for comparing a decoded DGC with its expected JSON (tags are dropped, bytes become hex).
pub fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Integer(i) => {
            let i = i128::from(*i);
            i64::try_from(i).map(J::from).unwrap_or_else(|_| J::from(i as f64))
        }
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::Text(s) => J::String(s.clone()),
        Value::Bytes(b) => J::String(crate::keys::hex(b)),
        Value::Bool(b) => J::Bool(*b),
        Value::Null => J::Null,
        Value::Tag(_, inner) => to_json(inner),
        Value::Array(a) => J::Array(a.iter().map(to_json).collect()),
        Value::Map(m) => J::Object(
            m.iter()
                .map(|(k, v)| (k.as_text().map(str::to_string).unwrap_or_else(|| format!("{:?}", k)), to_json(v)))
                .collect(),
        ),
        _ => J::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_of_every_length_is_an_error_never_a_panic() {
        let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";
        let mut seed = 0x9e3779b97f4a7c15u64;
        for len in (0..4096).step_by(7) {
            let mut s = String::from("HC1:");
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.push(alphabet[(seed % alphabet.len() as u64) as usize] as char);
            }
            let e = verify(&s, &[], Timestamp(0)).unwrap_err();
            assert!(
                matches!(e.stage, Stage::Base45 | Stage::Decompress | Stage::Cose | Stage::Cwt | Stage::Kid),
                "{e}"
            );
        }
        assert_eq!(verify("hello", &[], Timestamp(0)).unwrap_err().stage, Stage::Prefix);
        assert_eq!(verify(&"HC1:".repeat(3000), &[], Timestamp(0)).unwrap_err().stage, Stage::Prefix);
    }

    #[test]
    fn a_decompression_bomb_is_refused() {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&vec![0u8; 10 * 1024 * 1024]).unwrap();
        let bomb = z.finish().unwrap();
        assert!(bomb.len() < 20_000);
        let e = decompress(&bomb).unwrap_err();
        assert!(e.detail.contains("beyond"), "{e}");
    }
}

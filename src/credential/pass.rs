//! The community pass (居民通行证): the offline way through for residents without a smartphone.
//!
//! `SB1:` + base45( CBOR [ payload, Ed25519 signature ] ), where payload = CBOR
//! `[1, community, pass id, category, masked holder name, valid from, valid until]` (times in Unix seconds).
//! base45's alphabet is QR's alphanumeric set, so the printed code stays small and sturdy. Only the masked name is
//! carried: a lost card leaks nothing.

use std::collections::HashSet;
use std::path::Path;

use ciborium::Value;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use crate::domain::{Category, Timestamp, mask_name};

/// The prefix of a pass QR text.
pub const PREFIX: &str = "SB1:";
const VERSION: i64 = 1;
/// Upper bound of a pass text; anything longer is not a pass.
const MAX_TEXT: usize = 1024;

/// A pass, as signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Community id.
    pub community: String,
    /// Pass id (unique within the community; the revocation list names these).
    pub id: String,
    /// The holder's category.
    pub category: Category,
    /// The holder's masked name.
    pub holder: String,
    /// Valid from (Unix seconds).
    pub valid_from: i64,
    /// Valid until (Unix seconds).
    pub valid_until: i64,
}

/// Where pass verification stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassStage {
    /// Not `SB1:`.
    Prefix,
    /// Not base45.
    Base45,
    /// Not the pass structure.
    Format,
    /// No configured key verifies it.
    Signature,
    /// Issued by another community.
    Community,
    /// On the revocation list.
    Revoked,
    /// Not valid yet.
    NotYetValid,
    /// Expired.
    Expired,
}

impl PassStage {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            PassStage::Prefix => "prefix",
            PassStage::Base45 => "base45",
            PassStage::Format => "format",
            PassStage::Signature => "signature",
            PassStage::Community => "community",
            PassStage::Revoked => "revoked",
            PassStage::NotYetValid => "not_yet_valid",
            PassStage::Expired => "expired",
        }
    }

    /// What the operator reads.
    pub fn zh(self) -> &'static str {
        match self {
            PassStage::Prefix | PassStage::Base45 | PassStage::Format => "通行证无法识别",
            PassStage::Signature => "通行证签名无效（可能伪造）",
            PassStage::Community => "非本小区通行证",
            PassStage::Revoked => "通行证已注销",
            PassStage::NotYetValid => "通行证尚未生效",
            PassStage::Expired => "通行证已过期",
        }
    }
}

/// A refused pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", stage.as_str())]
pub struct PassError {
    /// Where.
    pub stage: PassStage,
    /// Why.
    pub detail: String,
}

fn err<T>(stage: PassStage, detail: impl Into<String>) -> Result<T, PassError> {
    Err(PassError { stage, detail: detail.into() })
}

fn cbor(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing CBOR into a Vec cannot fail.
    let _ = ciborium::into_writer(v, &mut out);
    out
}

impl Pass {
    /// Sign and encode as QR text.
    pub fn encode(&self, key: &SigningKey) -> String {
        let payload = cbor(&Value::Array(vec![
            Value::Integer(VERSION.into()),
            Value::Text(self.community.clone()),
            Value::Text(self.id.clone()),
            Value::Text(self.category.as_str().into()),
            Value::Text(self.holder.clone()),
            Value::Integer(self.valid_from.into()),
            Value::Integer(self.valid_until.into()),
        ]));
        let sig = key.sign(&payload).to_bytes().to_vec();
        let signed = cbor(&Value::Array(vec![Value::Bytes(payload), Value::Bytes(sig)]));
        format!("{PREFIX}{}", base45::encode(&signed))
    }
}

/// Checks passes: the community's public keys, the gate's community, the revocation list.
#[derive(Debug, Clone, Default)]
pub struct PassVerifier {
    /// Keys that may sign passes.
    pub keys: Vec<VerifyingKey>,
    /// The gate's community (`None`: any).
    pub community: Option<String>,
    /// Revoked pass ids.
    pub revoked: HashSet<String>,
}

impl PassVerifier {
    /// Verify `text` at `at`.
    pub fn verify(&self, text: &str, at: Timestamp) -> Result<Pass, PassError> {
        if text.len() > MAX_TEXT {
            return err(PassStage::Format, "too long for a pass");
        }
        let Some(b45) = text.trim_end().strip_prefix(PREFIX) else {
            return err(PassStage::Prefix, "not SB1:");
        };
        let signed =
            base45::decode(b45).map_err(|e| PassError { stage: PassStage::Base45, detail: format!("{e:?}") })?;
        let bad = |d: &str| PassError { stage: PassStage::Format, detail: d.into() };
        let outer: Value = ciborium::from_reader(signed.as_slice()).map_err(|_| bad("not CBOR"))?;
        let [payload, sig]: [Value; 2] =
            outer.into_array().map_err(|_| bad("not an array"))?.try_into().map_err(|_| bad("not [payload, sig]"))?;
        let payload = payload.into_bytes().map_err(|_| bad("payload is not bytes"))?;
        let sig = sig.into_bytes().map_err(|_| bad("signature is not bytes"))?;
        let sig: [u8; 64] = sig.try_into().map_err(|_| bad("signature is not 64 bytes"))?;
        let sig = ed25519_dalek::Signature::from_bytes(&sig);
        if !self.keys.iter().any(|k| k.verify_strict(&payload, &sig).is_ok()) {
            return err(PassStage::Signature, "no configured community key verifies this pass");
        }
        let fields = ciborium::from_reader::<Value, _>(payload.as_slice())
            .ok()
            .and_then(|v| v.into_array().ok())
            .ok_or_else(|| bad("payload is not an array"))?;
        let [ver, community, id, category, holder, from, until]: [Value; 7] =
            fields.try_into().map_err(|_| bad("payload has the wrong length"))?;
        let int = |v: &Value| v.as_integer().and_then(|i| i64::try_from(i128::from(i)).ok());
        let text = |v: Value| v.into_text().map_err(|_| bad("a text field is not text"));
        if int(&ver) != Some(VERSION) {
            return err(PassStage::Format, "unknown pass version");
        }
        let category = text(category)?;
        let pass = Pass {
            community: text(community)?,
            id: text(id)?,
            category: Category::ALL
                .into_iter()
                .find(|c| c.as_str() == category)
                .ok_or_else(|| bad("unknown category"))?,
            holder: text(holder)?,
            valid_from: int(&from).ok_or_else(|| bad("valid-from is not a time"))?,
            valid_until: int(&until).ok_or_else(|| bad("valid-until is not a time"))?,
        };
        if let Some(c) = &self.community
            && *c != pass.community
        {
            return err(PassStage::Community, format!("issued by `{}`, this gate is `{c}`", pass.community));
        }
        if self.revoked.contains(&pass.id) {
            return err(PassStage::Revoked, format!("pass {} is revoked", pass.id));
        }
        let now = at.0.div_euclid(1000);
        if now < pass.valid_from {
            return err(PassStage::NotYetValid, "not valid yet");
        }
        if now > pass.valid_until {
            return err(PassStage::Expired, "expired");
        }
        Ok(pass)
    }
}

/// Make a new key pair from the operating system's randomness.
pub fn generate_key() -> Result<SigningKey, String> {
    Ok(SigningKey::from_bytes(&crate::keys::random32()?))
}

/// Label of a private key file (so a public key can never be taken for one).
const PRIVATE_LABEL: &str = "sibi-ed25519-private:";
/// Label of a public key file.
const PUBLIC_LABEL: &str = "sibi-ed25519-public:";

/// Write `NAME.key` (private, mode 0600) and `NAME.pub` into `dir`; refuses to overwrite a key.
pub fn write_key_pair(
    dir: &Path,
    name: &str,
    key: &SigningKey,
) -> Result<(std::path::PathBuf, std::path::PathBuf), String> {
    crate::keys::write_pair(dir, name, (PRIVATE_LABEL, &key.to_bytes()), (PUBLIC_LABEL, key.verifying_key().as_bytes()))
}

/// Read a private key file.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, String> {
    crate::keys::read(path, PRIVATE_LABEL, "a sibi private signing key").map(|b| SigningKey::from_bytes(&b))
}

/// Parse public key file contents (`sibi-ed25519-public:` and 64 hex digits).
pub fn parse_verifying_key(text: &str) -> Option<VerifyingKey> {
    crate::keys::parse(text, PUBLIC_LABEL).and_then(|b| VerifyingKey::from_bytes(&b).ok())
}

/// Read a public key file.
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_verifying_key(&text)
        .ok_or_else(|| format!("{} is not a sibi public key (made by `sibi keygen`)", path.display()))
}

/// Re-root a QR SVG document at (50, 50), 240 × 240 on the card, scaled through a viewBox built from its own size.
fn nest_qr(qr_svg: &str) -> String {
    let start = qr_svg.find("<svg").unwrap_or(0);
    let Some(end) = qr_svg[start..].find('>').map(|e| start + e) else {
        return String::new();
    };
    let tag = &qr_svg[start..end];
    let attr = |name: &str| {
        let key = format!(" {name}=\"");
        tag.find(&key).and_then(|i| {
            let rest = &tag[i + key.len()..];
            rest.find('"').map(|j| rest[..j].to_string())
        })
    };
    let view_box = attr("viewBox").unwrap_or_else(|| {
        format!("0 0 {} {}", attr("width").unwrap_or_else(|| "1".into()), attr("height").unwrap_or_else(|| "1".into()))
    });
    format!(
        "<svg x=\"50\" y=\"50\" width=\"240\" height=\"240\" viewBox=\"{}\" shape-rendering=\"crispEdges\">{}",
        xml(&view_box),
        &qr_svg[end + 1..]
    )
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A printable card (SVG, 85.6 × 54 mm like an ID card) with the QR code and the Chinese text a resident and a
/// volunteer need. `qr_svg` is the QR code as an SVG document.
pub fn card_svg(pass: &Pass, community_name: &str, qr_svg: &str) -> String {
    let inner = nest_qr(qr_svg);
    let day = |t: i64| Timestamp(t * 1000).to_rfc3339().get(..10).unwrap_or_default().to_string();
    format!(
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="85.6mm" height="54mm" viewBox="0 0 856 540">
  <rect x="0" y="0" width="856" height="540" rx="30" fill="#ffffff" stroke="#c0392b" stroke-width="8"/>
  <rect x="0" y="0" width="856" height="40" fill="#c0392b"/>
  {inner}
  <g font-family="Noto Sans CJK SC, Source Han Sans SC, WenQuanYi Micro Hei, sans-serif" fill="#222">
    <text x="330" y="110" font-size="52" font-weight="bold" fill="#c0392b">居民通行证</text>
    <text x="330" y="175" font-size="34">{community}</text>
    <text x="330" y="235" font-size="34">持证人：{holder}</text>
    <text x="330" y="290" font-size="28">类别：{category}</text>
    <text x="330" y="340" font-size="28">有效期：{from} 至 {until}</text>
    <text x="50" y="360" font-size="22" fill="#555">编号 {id}</text>
    <text x="50" y="440" font-size="30">请在闸口将二维码对准摄像头，并配合测温、佩戴口罩。</text>
    <text x="50" y="490" font-size="24" fill="#555">本证仅限本小区使用，遗失请联系社区办理注销。</text>
  </g>
</svg>
"##,
        community = xml(community_name),
        holder = xml(&mask_name(&pass.holder)),
        category = pass.category.zh(),
        from = day(pass.valid_from),
        until = day(pass.valid_until),
        id = xml(&pass.id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Pass {
        Pass {
            community: "xingfuli".into(),
            id: "XFL-0007".into(),
            category: Category::Resident,
            holder: mask_name("李建国"),
            valid_from: 1_790_000_000,
            valid_until: 1_800_000_000,
        }
    }

    fn verifier(key: &SigningKey) -> PassVerifier {
        PassVerifier { keys: vec![key.verifying_key()], community: Some("xingfuli".into()), revoked: HashSet::new() }
    }

    const AT: Timestamp = Timestamp(1_795_000_000_000);

    #[test]
    fn a_signed_pass_round_trips_in_qr_alphanumeric_characters() {
        let key = generate_key().unwrap();
        let text = sample().encode(&key);
        assert!(text.chars().all(|c| "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:".contains(c)), "{text}");
        assert!(text.len() < 300, "{}", text.len());
        assert_eq!(verifier(&key).verify(&text, AT).unwrap(), sample());
    }

    #[test]
    fn forged_expired_revoked_foreign_and_truncated_passes_are_refused() {
        let key = generate_key().unwrap();
        let other = generate_key().unwrap();
        let v = verifier(&key);
        let stage = |text: &str, at: Timestamp| v.verify(text, at).unwrap_err().stage;
        assert_eq!(stage(&sample().encode(&other), AT), PassStage::Signature);
        assert_eq!(stage(&sample().encode(&key), Timestamp(1_800_000_001_000)), PassStage::Expired);
        assert_eq!(stage(&sample().encode(&key), Timestamp(1_780_000_000_000)), PassStage::NotYetValid);
        let foreign = Pass { community: "elsewhere".into(), ..sample() }.encode(&key);
        assert_eq!(stage(&foreign, AT), PassStage::Community);
        let mut revoked = v.clone();
        revoked.revoked.insert("XFL-0007".into());
        assert_eq!(revoked.verify(&sample().encode(&key), AT).unwrap_err().stage, PassStage::Revoked);
        let text = sample().encode(&key);
        for cut in 0..text.len() {
            assert!(v.verify(&text[..cut], AT).is_err(), "truncated at {cut}");
        }
        // A changed character in the signed part never verifies.
        let mut tampered: Vec<char> = text.chars().collect();
        let i = tampered.len() / 2;
        tampered[i] = if tampered[i] == 'A' { 'B' } else { 'A' };
        assert!(v.verify(&tampered.into_iter().collect::<String>(), AT).is_err());
    }

    #[test]
    fn garbage_of_every_length_never_panics() {
        let key = generate_key().unwrap();
        let v = verifier(&key);
        let mut seed = 7u64;
        for len in 0..1200 {
            let mut s = String::from(PREFIX);
            for _ in 0..len {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                s.push(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"[(seed >> 59) as usize % 45] as char);
            }
            assert!(v.verify(&s, AT).is_err());
        }
    }

    #[test]
    fn keys_are_written_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = generate_key().unwrap();
        let (private, public) = write_key_pair(dir.path(), "community", &key).unwrap();
        assert_eq!(std::fs::metadata(&private).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(read_signing_key(&private).unwrap().to_bytes(), key.to_bytes());
        assert_eq!(read_verifying_key(&public).unwrap(), key.verifying_key());
        assert!(write_key_pair(dir.path(), "community", &generate_key().unwrap()).is_err());
        // Neither file can be taken for the other.
        assert!(read_signing_key(&public).is_err());
        assert!(read_verifying_key(&private).is_err());
    }

    #[test]
    fn the_card_carries_the_masked_name_only() {
        let pass = Pass { holder: "李建国".into(), ..sample() };
        let svg = card_svg(&pass, "幸福里小区", "<?xml?><svg viewBox=\"0 0 10 10\"><path d=\"M0 0\"/></svg>");
        assert!(svg.contains("李*国") && !svg.contains("李建国"));
        assert!(svg.contains("居民通行证") && svg.contains("幸福里小区"));
    }
}

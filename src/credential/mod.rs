//! Reading credentials: camera frames → QR text ([`qr`]) → a verified credential.
//!
//! The three credential kinds of DESIGN.md §3 (community pass, health code, EU DCC) plug in here; today this module
//! holds the QR decoding with its measured choice of backend.

pub mod cli;
pub mod dcc;
pub mod health_code;
pub mod idcard;
pub mod pass;
pub mod qr;
pub mod reader;

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use crate::domain::{CodeStatus, Timestamp, mask_name};

/// What kind of credential a QR text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// EU DCC (`HC1:`).
    Dcc,
    /// Community pass.
    Pass,
    /// Provincial health code.
    HealthCode,
    /// Not recognised.
    Unknown,
}

/// Recognise a QR text by its form (no verification): the fixed prefixes of passes and DCCs, then the issuer registry.
pub fn classify(text: &str, registry: &health_code::Registry) -> Format {
    if text.starts_with(dcc::PREFIX) {
        Format::Dcc
    } else if text.starts_with(pass::PREFIX) {
        Format::Pass
    } else if registry.classify(text).is_some() {
        Format::HealthCode
    } else {
        Format::Unknown
    }
}

/// What a gate trusts: DCC signer certificates, the community's pass keys (with its revocation list), and the
/// health-code issuers and gateway.
pub struct Trust {
    /// DCC document signers.
    pub dcc: Vec<dcc::Signer>,
    /// Pass verification.
    pub pass: pass::PassVerifier,
    /// Health-code issuers.
    pub registry: health_code::Registry,
    /// The gateway client (`None`: no gateway configured, every health code is unverified).
    pub health: Option<health_code::HealthCodeClient>,
    /// The category a health-code holder is taken for until the roster says otherwise (visitor: the stricter).
    pub health_code_category: crate::domain::Category,
    /// Pass ids under home quarantine (from the office's bundle).
    pub quarantined: HashSet<String>,
    /// Pass ids on the courier registry (from the office's bundle).
    pub couriers: HashSet<String>,
    /// What the applied bundle changed, so that a newer one replaces it.
    pub applied: Applied,
}

/// What an applied bundle added to a [`Trust`].
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The config's own revocations.
    config_revoked: Option<HashSet<String>>,
    /// How many DCC signers and issuers at the end of the lists came from the bundle.
    added: (usize, usize),
}

/// The trust a running gate's camera reader uses, shared with the sync thread that applies the office's bundles.
pub type SharedTrust = Arc<RwLock<Trust>>;

impl Default for Trust {
    fn default() -> Trust {
        Trust {
            dcc: Vec::new(),
            pass: pass::PassVerifier::default(),
            registry: health_code::Registry::default(),
            health: None,
            health_code_category: crate::domain::Category::Visitor,
            quarantined: HashSet::new(),
            couriers: HashSet::new(),
            applied: Applied::default(),
        }
    }
}

impl Trust {
    /// Apply the office's lists from a verified bundle: revoked passes join the config's own, the quarantine list and
    /// courier registry replace the previous bundle's, and its issuers and DCC signers replace the previous bundle's
    /// additions (the config's own stay). Nothing changes if a signer certificate does not parse.
    pub fn apply_bundle(&mut self, bundle: &crate::bundle::Bundle) -> Result<(), String> {
        let signers = bundle.signers()?;
        let base = self.applied.config_revoked.get_or_insert_with(|| self.pass.revoked.clone()).clone();
        self.pass.revoked = base.into_iter().chain(bundle.revoked_passes.iter().cloned()).collect();
        self.quarantined = bundle.quarantine.iter().cloned().collect();
        self.couriers = bundle.couriers.iter().cloned().collect();
        let (dcc_added, issuers_added) = self.applied.added;
        self.dcc.truncate(self.dcc.len() - dcc_added);
        self.registry.issuers.truncate(self.registry.issuers.len() - issuers_added);
        self.applied.added = (signers.len(), bundle.issuers.len());
        self.dcc.extend(signers);
        self.registry.issuers.extend(bundle.issuers.iter().cloned());
        Ok(())
    }

    /// Share with the sync thread.
    pub fn shared(self) -> SharedTrust {
        Arc::new(RwLock::new(self))
    }

    /// Add what one `--trust` file holds: a sibi pass public key, one or more signer certificates (DER, or PEM with
    /// any number of `CERTIFICATE` blocks), or a JSON trust list (an array, or an object with a `certificates` array,
    /// of base64 DER strings or of objects carrying the certificate in `rawData` / `certificate`, as the EU gateway
    /// and national DSC lists publish them). Returns how many entries were added.
    pub fn add_file(&mut self, bytes: &[u8]) -> Result<usize, String> {
        if let Some(k) = std::str::from_utf8(bytes).ok().and_then(pass::parse_verifying_key) {
            self.pass.keys.push(k);
            return Ok(1);
        }
        let trimmed = bytes.trim_ascii_start();
        if trimmed.starts_with(b"[") || trimmed.starts_with(b"{") {
            return self.add_json_trust_list(trimmed);
        }
        if trimmed.starts_with(b"-----BEGIN") {
            let mut added = 0;
            for (i, pem) in x509_parser::pem::Pem::iter_from_buffer(trimmed).enumerate() {
                let pem = pem.map_err(|e| format!("PEM block {}: {e}", i + 1))?;
                if pem.label != "CERTIFICATE" {
                    continue;
                }
                self.dcc.push(dcc::Signer::from_der(&pem.contents).map_err(|e| format!("certificate {}: {e}", i + 1))?);
                added += 1;
            }
            return if added == 0 { Err("no CERTIFICATE block in the PEM file".into()) } else { Ok(added) };
        }
        self.dcc.push(dcc::Signer::from_der(bytes)?);
        Ok(1)
    }

    fn add_json_trust_list(&mut self, json: &[u8]) -> Result<usize, String> {
        use base64::Engine;
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| format!("not a JSON trust list: {e}"))?;
        let list = match &value {
            serde_json::Value::Array(a) => a,
            serde_json::Value::Object(o) => match o.get("certificates") {
                Some(serde_json::Value::Array(a)) => a,
                _ => return Err("JSON trust list: expected an array or an object with a `certificates` array".into()),
            },
            _ => return Err("JSON trust list: expected an array or an object".into()),
        };
        let mut added = 0;
        for (i, entry) in list.iter().enumerate() {
            let b64 = match entry {
                serde_json::Value::String(s) => s.as_str(),
                serde_json::Value::Object(o) => match o.get("rawData").or_else(|| o.get("certificate")) {
                    Some(serde_json::Value::String(s)) => s.as_str(),
                    _ => return Err(format!("trust list entry {i}: no `rawData` or `certificate` string")),
                },
                _ => return Err(format!("trust list entry {i}: expected a string or an object")),
            };
            let der = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| format!("trust list entry {i}: certificate is not base64: {e}"))?;
            self.dcc.push(dcc::Signer::from_der(&der).map_err(|e| format!("trust list entry {i}: {e}"))?);
            added += 1;
        }
        if added == 0 { Err("the trust list is empty".into()) } else { Ok(added) }
    }
}

/// The result of `sibi code verify`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    /// Format.
    pub format: Format,
    /// Valid?
    pub valid: bool,
    /// `ok`, or the stage that failed.
    pub stage: &'static str,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Details of a valid credential (masked holder, issuer, kind, times).
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub details: Option<serde_json::Map<String, serde_json::Value>>,
}

impl VerifyReport {
    /// A failure at `stage`.
    pub fn failed(format: Format, stage: &'static str, error: impl Into<String>) -> VerifyReport {
        VerifyReport { format, valid: false, stage, error: Some(error.into()), details: None }
    }

    /// As one JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

/// Verify a QR text of any known format.
pub fn verify_text(text: &str, trust: &Trust, at: Timestamp) -> VerifyReport {
    match classify(text, &trust.registry) {
        Format::Pass => match trust.pass.verify(text, at) {
            Ok(p) => {
                let mut d = serde_json::Map::new();
                d.insert("community".into(), p.community.into());
                d.insert("id".into(), p.id.clone().into());
                d.insert("category".into(), p.category.as_str().into());
                d.insert("holder".into(), mask_name(&p.holder).into());
                d.insert("valid_from".into(), p.valid_from.into());
                d.insert("valid_until".into(), p.valid_until.into());
                if trust.quarantined.contains(&p.id) {
                    d.insert("quarantined".into(), true.into());
                }
                if trust.couriers.contains(&p.id) {
                    d.insert("courier_registered".into(), true.into());
                }
                VerifyReport { format: Format::Pass, valid: true, stage: "ok", error: None, details: Some(d) }
            }
            Err(e) => VerifyReport::failed(Format::Pass, e.stage.as_str(), e.detail),
        },
        Format::Dcc => match dcc::verify(text, &trust.dcc, at) {
            Ok(v) => {
                let mut d = serde_json::Map::new();
                d.insert("kid".into(), crate::keys::hex(&v.kid).into());
                d.insert("issuer".into(), v.cwt.iss.clone().into());
                d.insert("kinds".into(), serde_json::to_value(v.cwt.kinds()).unwrap_or_default());
                d.insert("holder".into(), mask_name(&v.cwt.holder()).into());
                d.insert("iat".into(), v.cwt.iat.into());
                d.insert("exp".into(), v.cwt.exp.into());
                VerifyReport { format: Format::Dcc, valid: true, stage: "ok", error: None, details: Some(d) }
            }
            Err(e) => VerifyReport::failed(Format::Dcc, e.stage.as_str(), e.detail),
        },
        Format::HealthCode => {
            let issuer = trust.registry.classify(text);
            let status = match (&trust.health, issuer) {
                (Some(client), Some(i)) => client.verify(i, text),
                _ => CodeStatus::Unverified,
            };
            let mut d = serde_json::Map::new();
            d.insert("issuer".into(), issuer.map(|i| i.name.clone()).unwrap_or_default().into());
            d.insert("status".into(), status.as_str().into());
            let valid = status == CodeStatus::Green;
            let stage = if valid { "ok" } else { "status" };
            let error = match (status, &trust.health, issuer) {
                (CodeStatus::Green, _, _) => None,
                (_, _, None) => Some("no configured issuer matches this code (give --config with [health_code])"),
                (_, None, _) => Some("no health-code gateway configured (give --config with [health_code].gateway)"),
                (CodeStatus::Unverified, _, _) => Some("the gateway could not be reached or gave no usable answer"),
                (CodeStatus::Timeout, _, _) => Some("the gateway did not answer within the timeout"),
                _ => Some("the gateway reports this code is not green"),
            };
            VerifyReport { format: Format::HealthCode, valid, stage, error: error.map(String::from), details: Some(d) }
        }
        Format::Unknown => VerifyReport::failed(
            Format::Unknown,
            "format",
            "not a credential this gate knows (community pass SB1:, DCC HC1:)",
        ),
    }
}

//! Signed policy bundles from the street office: a community's tier schedule and revoked passes, versioned and signed
//! with the office's Ed25519 key. A gate applies a bundle only if the signature verifies against the configured office
//! key, the community is its own, and the version is newer than the one it has; otherwise it refuses it, says why, and
//! keeps its last good bundle.

use serde::{Deserialize, Serialize};

use crate::domain::{Tier, Timestamp};
use crate::policy::TierChange;

/// One tier change in a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleTier {
    /// `low`, `medium` or `high`.
    pub tier: Tier,
    /// RFC 3339.
    pub effective: String,
}

/// What the office decides for a community.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Increases with every publication.
    pub version: u64,
    /// The community it is for.
    pub community: String,
    /// When it was published (RFC 3339).
    pub issued_at: String,
    /// The tier schedule (the latest entry whose time has come applies).
    pub tiers: Vec<BundleTier>,
    /// Revoked community pass ids.
    #[serde(default)]
    pub revoked_passes: Vec<String>,
    /// Pass ids of people under home quarantine (居家隔离): they may not go out.
    #[serde(default)]
    pub quarantine: Vec<String>,
    /// Pass ids on the courier registry (快递外卖登记).
    #[serde(default)]
    pub couriers: Vec<String>,
    /// Health-code issuers the office trusts, added to the gate's own registry.
    #[serde(default)]
    pub issuers: Vec<crate::credential::health_code::Issuer>,
    /// DCC document signer certificates (base64 DER), added to the gate's own trust list.
    #[serde(default)]
    pub dcc_signers: Vec<String>,
}

/// A bundle as it travels: the exact JSON text and the office's signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedBundle {
    /// The bundle's JSON.
    pub body: String,
    /// Ed25519 signature over `body`, hex.
    pub signature: String,
}

/// Why a bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Not a signed bundle at all.
    #[error("malformed bundle: {0}")]
    Malformed(String),
    /// The signature does not verify against the office key.
    #[error("the signature does not verify against the office key")]
    Signature,
    /// For another community.
    #[error("the bundle is for community `{0}`, not this gate's")]
    Community(String),
    /// Not newer than what the gate has.
    #[error("version {got} is not newer than the applied version {have}")]
    Older {
        /// The bundle's.
        got: u64,
        /// The gate's.
        have: u64,
    },
}

impl Bundle {
    /// The tier schedule, sorted; `None` if a time does not parse or the list is empty.
    pub fn tier_changes(&self) -> Option<Vec<TierChange>> {
        let mut v: Vec<TierChange> = self
            .tiers
            .iter()
            .map(|t| Timestamp::parse_rfc3339(&t.effective).map(|effective| TierChange { tier: t.tier, effective }))
            .collect::<Option<_>>()?;
        v.sort_by_key(|t| t.effective);
        (!v.is_empty()).then_some(v)
    }

    /// Sign with the office key.
    pub fn sign(&self, key: &ed25519_dalek::SigningKey) -> SignedBundle {
        let body = serde_json::to_string(self).unwrap_or_default();
        let signature = crate::keys::sign_hex(key, body.as_bytes());
        SignedBundle { body, signature }
    }
}

/// What one publication changes, relative to the community's previous bundle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// A tier change to add to the schedule.
    pub tier: Option<BundleTier>,
    /// Pass ids to revoke.
    pub revoke: Vec<String>,
    /// The whole home-quarantine list, replacing the previous one (an uploaded list); `quarantine` and `release`
    /// then apply on top of it.
    pub quarantine_list: Option<Vec<String>>,
    /// Pass ids to put under home quarantine.
    pub quarantine: Vec<String>,
    /// Pass ids to release from it.
    pub release: Vec<String>,
    /// Pass ids to add to the courier registry.
    pub couriers: Vec<String>,
    /// Health-code issuers to trust (replacing one of the same name).
    pub issuers: Vec<crate::credential::health_code::Issuer>,
    /// DCC signer certificates to trust (base64 DER).
    pub dcc_signers: Vec<String>,
}

impl Changes {
    /// True if nothing would change.
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }

    /// The next bundle: `previous` with these changes, its version one higher, issued `now`.
    pub fn apply(&self, previous: Bundle, now: Timestamp) -> Result<Bundle, String> {
        fn add(list: &mut Vec<String>, more: &[String]) {
            for m in more {
                if !list.contains(m) {
                    list.push(m.clone());
                }
            }
        }
        let mut b = previous;
        b.version += 1;
        b.issued_at = now.to_rfc3339();
        b.tiers.extend(self.tier.clone());
        add(&mut b.revoked_passes, &self.revoke);
        if let Some(list) = &self.quarantine_list {
            b.quarantine.clear();
            add(&mut b.quarantine, list);
        }
        add(&mut b.quarantine, &self.quarantine);
        b.quarantine.retain(|id| !self.release.contains(id));
        add(&mut b.couriers, &self.couriers);
        for i in &self.issuers {
            b.issuers.retain(|old| old.name != i.name);
            b.issuers.push(i.clone());
        }
        add(&mut b.dcc_signers, &self.dcc_signers);
        if b.tier_changes().is_none() {
            return Err("a bundle needs a tier: give --tier (and --effective) for the first one".into());
        }
        b.signers()?;
        Ok(b)
    }
}

/// Pass ids from an uploaded list (the home-quarantine list the health authorities hand the street office): one per
/// line, or the first column of a CSV; blank lines and `#` comments are skipped, and a first line that is not an id is
/// taken as a header. Any other line that is not an id (letters, digits, `-`, `_`, at most 64) is an error naming it.
pub fn parse_id_list(text: &str) -> Result<Vec<String>, String> {
    let is_id =
        |s: &str| !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
    let mut ids: Vec<String> = Vec::new();
    let mut first = true;
    for (n, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let id = line.split([',', ';', '\t']).next().unwrap_or("").trim().trim_matches('"');
        if !is_id(id) {
            if first {
                first = false;
                continue;
            }
            return Err(format!("line {}: `{id}` is not a pass id", n + 1));
        }
        first = false;
        if !ids.iter().any(|i| i == id) {
            ids.push(id.to_string());
        }
    }
    Ok(ids)
}

/// Verify `text` (a [`SignedBundle`] as JSON) for a gate of `community` that has applied version `have`.
pub fn verify(
    text: &str,
    office: &ed25519_dalek::VerifyingKey,
    community: &str,
    have: u64,
) -> Result<Bundle, BundleError> {
    use ed25519_dalek::Verifier;
    let signed: SignedBundle = serde_json::from_str(text).map_err(|e| BundleError::Malformed(e.to_string()))?;
    let sig = crate::keys::signature_from_hex(&signed.signature).ok_or(BundleError::Signature)?;
    office.verify(signed.body.as_bytes(), &sig).map_err(|_| BundleError::Signature)?;
    let bundle: Bundle = serde_json::from_str(&signed.body).map_err(|e| BundleError::Malformed(e.to_string()))?;
    if bundle.community != community {
        return Err(BundleError::Community(bundle.community));
    }
    if bundle.version <= have {
        return Err(BundleError::Older { got: bundle.version, have });
    }
    if bundle.tier_changes().is_none() {
        return Err(BundleError::Malformed("the tier schedule is empty or has a bad time".into()));
    }
    bundle.signers().map_err(BundleError::Malformed)?;
    Ok(bundle)
}

impl Bundle {
    /// An empty bundle (version 0) for `community`.
    pub fn empty(community: &str) -> Bundle {
        Bundle {
            version: 0,
            community: community.into(),
            issued_at: String::new(),
            tiers: Vec::new(),
            revoked_passes: Vec::new(),
            quarantine: Vec::new(),
            couriers: Vec::new(),
            issuers: Vec::new(),
            dcc_signers: Vec::new(),
        }
    }

    /// The DCC signer certificates, parsed; an error names the entry that does not parse.
    pub fn signers(&self) -> Result<Vec<crate::credential::dcc::Signer>, String> {
        use base64::Engine;
        self.dcc_signers
            .iter()
            .enumerate()
            .map(|(i, b64)| {
                let der = base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| format!("dcc_signers[{i}]: not base64: {e}"))?;
                crate::credential::dcc::Signer::from_der(&der).map_err(|e| format!("dcc_signers[{i}]: {e}"))
            })
            .collect()
    }

    /// One line for the journal: what the bundle carries.
    pub fn summary(&self) -> String {
        format!(
            "applied version {}: {} tier change(s), {} revoked, {} quarantined, {} courier(s), {} issuer(s), {} DCC signer(s)",
            self.version,
            self.tiers.len(),
            self.revoked_passes.len(),
            self.quarantine.len(),
            self.couriers.len(),
            self.issuers.len(),
            self.dcc_signers.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploaded_id_lists_skip_a_header_comments_and_repeats_and_name_a_bad_line() {
        let ids = parse_id_list("\u{feff}通行证编号;楼栋\r\nA-1;3栋\n  # note\n\n\"B_2\",x\nA-1\nC3\t9\n").unwrap();
        assert_eq!(ids, ["A-1", "B_2", "C3"]);
        assert_eq!(parse_id_list("").unwrap(), Vec::<String>::new());
        assert_eq!(parse_id_list("A-1\nA 2\n").unwrap_err(), "line 2: `A 2` is not a pass id");
        assert!(parse_id_list(&format!("A\n{}\n", "x".repeat(65))).unwrap_err().starts_with("line 2"));
        // Replacing the list, then the single changes on top of it.
        let mut previous = Bundle::empty("c");
        previous.quarantine = vec!["OLD".into(), "KEEP".into()];
        previous
            .tiers
            .push(BundleTier { tier: crate::domain::Tier::Low, effective: "2026-01-01T00:00:00+08:00".into() });
        let changes = Changes {
            quarantine_list: Some(vec!["KEEP".into(), "NEW".into()]),
            quarantine: vec!["EXTRA".into()],
            release: vec!["NEW".into()],
            ..Default::default()
        };
        let b = changes.apply(previous, Timestamp(0)).unwrap();
        assert_eq!(b.quarantine, ["KEEP", "EXTRA"]);
    }

    fn bundle(version: u64) -> Bundle {
        Bundle {
            version,
            issued_at: "2026-11-25T08:00:00+08:00".into(),
            tiers: vec![BundleTier { tier: Tier::Medium, effective: "2026-11-25T12:00:00+08:00".into() }],
            revoked_passes: vec!["XFL-0003".into()],
            ..Bundle::empty("c1")
        }
    }

    #[test]
    fn only_a_newer_bundle_for_this_community_signed_by_the_office_is_accepted() {
        let office = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let other = ed25519_dalek::SigningKey::from_bytes(&[2; 32]);
        let text = |b: &Bundle, k: &ed25519_dalek::SigningKey| serde_json::to_string(&b.sign(k)).unwrap();
        let vk = office.verifying_key();
        assert_eq!(verify(&text(&bundle(3), &office), &vk, "c1", 2), Ok(bundle(3)));
        assert_eq!(verify(&text(&bundle(3), &other), &vk, "c1", 2), Err(BundleError::Signature));
        assert_eq!(verify(&text(&bundle(2), &office), &vk, "c1", 2), Err(BundleError::Older { got: 2, have: 2 }));
        assert_eq!(verify(&text(&bundle(3), &office), &vk, "c2", 0), Err(BundleError::Community("c1".into())));
        // Tampered: the body changed after signing.
        let mut s = bundle(3).sign(&office);
        s.body = s.body.replace("medium", "low");
        assert_eq!(verify(&serde_json::to_string(&s).unwrap(), &vk, "c1", 0), Err(BundleError::Signature));
        // Unsigned or garbage.
        let unsigned = serde_json::json!({"body": serde_json::to_string(&bundle(3)).unwrap(), "signature": ""});
        assert_eq!(verify(&unsigned.to_string(), &vk, "c1", 0), Err(BundleError::Signature));
        assert!(matches!(verify("{", &vk, "c1", 0), Err(BundleError::Malformed(_))));
        let mut empty = bundle(4);
        empty.tiers.clear();
        assert!(matches!(verify(&text(&empty, &office), &vk, "c1", 0), Err(BundleError::Malformed(_))));
    }
}

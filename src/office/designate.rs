//! Tiers designated from above (以县域为单位): a district designates a community's risk tier and its effective time,
//! signed with its `signing_key`; its streets fetch the designations (`GET /v1/designations`), verify them with the
//! district's public key (`[upstream] office_key`), and republish each to their gates as the community's next bundle.
//! A street may then publish neither a stricter tier nor a looser one for that community (不得层层加码: the district
//! decides).
//!
//! The city may designate too: its districts fetch and verify its designations the same way and designate each
//! again, signed by themselves and naming the city's (`from`), for the communities of their streets — so a street
//! still verifies with its district's key alone. A district may then not designate over the city's tier either.

use serde::{Deserialize, Serialize};

use super::Office;
use crate::domain::{Tier, Timestamp};

/// One designation as the district signs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Designation {
    /// The designating office.
    pub by: String,
    /// The community.
    pub community: String,
    /// The tier.
    pub tier: Tier,
    /// When it takes effect (RFC 3339).
    pub effective: String,
    /// Rising per community: a street applies only a newer one.
    pub version: u64,
    /// The city's designation this district's carries down, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Origin>,
}

/// The designation from above that a district's designation carries down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The city office that designated.
    pub by: String,
    /// Its version of the designation.
    pub version: u64,
}

/// A designation with the district's signature over its exact JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedDesignation {
    /// The designation, as JSON text.
    pub body: String,
    /// Hex Ed25519 signature over `body`.
    pub signature: String,
}

impl SignedDesignation {
    /// The designation if `key` signed it.
    pub fn verify(&self, key: &ed25519_dalek::VerifyingKey) -> Result<Designation, String> {
        use ed25519_dalek::Verifier;
        let sig = crate::keys::signature_from_hex(&self.signature).ok_or("a designation without a signature")?;
        key.verify(self.body.as_bytes(), &sig).map_err(|_| "a designation not signed by the district's key")?;
        serde_json::from_str(&self.body).map_err(|e| format!("a malformed designation: {e}"))
    }
}

/// Why an office's own tier for a designated community is refused (`who`: `street` publishing, or `district`
/// designating over the city's).
pub fn refusal(d: &Designation, asked: Tier, who: &str) -> Option<String> {
    (asked != d.tier).then(|| {
        let which = if asked > d.tier { "stricter" } else { "looser" };
        let verb = if who == "street" { "publish" } else { "designate" };
        let (by, version, decides) = match &d.from {
            Some(o) => (o.by.as_str(), o.version, "the city decides"),
            None => (d.by.as_str(), d.version, "the district decides"),
        };
        format!(
            "`{}` is designated {} by `{by}` (version {version}, from {}): a {who} may not {verb} a {which} tier \
             (不得层层加码，坚决防止层层加码、“一刀切”: {decides})",
            d.community,
            d.tier.as_str(),
            d.effective
        )
    })
}

impl Office {
    /// Designate `tier` for `community` from `effective` (this office signs it with its `signing_key`). At a
    /// district, a community the city designated keeps the city's tier (refused with the reason otherwise).
    pub fn designate(&self, community: &str, tier: Tier, effective: Timestamp) -> Result<Designation, String> {
        if let Some(held) = self.designation(community)?.filter(|d| d.from.is_some())
            && let Some(why) = refusal(&held, tier, "district")
        {
            return Err(why);
        }
        self.sign_designation(community, tier, effective, None)
    }

    /// Sign and store this office's next designation of `community` (carrying `from` down, if given).
    fn sign_designation(
        &self,
        community: &str,
        tier: Tier,
        effective: Timestamp,
        from: Option<Origin>,
    ) -> Result<Designation, String> {
        let key = self.config.signing_key.as_ref().ok_or("no `office.signing_key`: designations cannot be signed")?;
        for _ in 0..50 {
            let version = self.with_db(|db| db.designation(community))?.map_or(0, |(v, _)| v) + 1;
            let d = Designation {
                by: self.config.id.clone(),
                community: community.to_string(),
                tier,
                effective: effective.to_rfc3339(),
                version,
                from: from.clone(),
            };
            let body = serde_json::to_string(&d).map_err(|e| e.to_string())?;
            let signed = SignedDesignation { signature: crate::keys::sign_hex(key, body.as_bytes()), body };
            let text = serde_json::to_string(&signed).map_err(|e| e.to_string())?;
            if self.with_db(|db| db.insert_designation(community, version, &text))? {
                return Ok(d);
            }
        }
        Err(format!("`{community}`: could not take a designation version; try again"))
    }

    /// Fetch the designations of the office above, verify them, and apply each newer one for a community this
    /// office serves: a street republishes it as that community's next bundle; a district designates it again for
    /// its streets, naming the city's. Returns the designations applied.
    pub fn apply_designations(&self, now: Timestamp) -> Result<Vec<Designation>, String> {
        let up = self.config.upstream.as_ref().ok_or("no [upstream]")?;
        let Some(district) = &up.office_key else { return Ok(Vec::new()) };
        let mut answer = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(10)))
            .build()
            .new_agent()
            .get(&format!("{}/v1/designations", up.url))
            .call()
            .map_err(|e| format!("{}: {e}", up.url))?;
        let list: Vec<SignedDesignation> =
            answer.body_mut().read_json().map_err(|e| format!("{}: designations: {e}", up.url))?;
        let at_district = self.config.level == super::rollup::Level::District;
        let mine: std::collections::BTreeSet<String> = if at_district {
            self.communities_below(now)?
        } else {
            self.gate_directory()?.into_values().map(|g| g.community).collect()
        };
        let mut applied = Vec::new();
        for signed in list {
            let d = match signed.verify(district) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "designation refused");
                    continue;
                }
            };
            if !mine.contains(&d.community) {
                continue;
            }
            if at_district {
                let held = self.designation(&d.community)?;
                if held.and_then(|h| h.from).is_some_and(|o| o.by == d.by && o.version >= d.version) {
                    continue;
                }
                let effective = Timestamp::parse_rfc3339(&d.effective).ok_or("a designation without a time")?;
                let origin = Origin { by: d.by.clone(), version: d.version };
                let ours = self.sign_designation(&d.community, d.tier, effective, Some(origin))?;
                tracing::info!(community = %d.community, tier = d.tier.as_str(), city = %d.by, "city designation carried down");
                applied.push(ours);
                continue;
            }
            let held = self.with_db(|db| db.designation(&d.community))?;
            if held.as_ref().is_some_and(|(v, _)| *v >= d.version) {
                continue;
            }
            let key = self
                .config
                .signing_key
                .as_ref()
                .ok_or("no `office.signing_key`: the designation cannot be republished to the gates")?;
            let changes = crate::bundle::Changes {
                tier: Some(crate::bundle::BundleTier { tier: d.tier, effective: d.effective.clone() }),
                ..Default::default()
            };
            let text = serde_json::to_string(&signed).map_err(|e| e.to_string())?;
            self.with_db(|db| {
                db.publish(key, &d.community, &changes, now)?;
                db.replace_designation(&d.community, d.version, &text)
            })?;
            tracing::info!(community = %d.community, tier = d.tier.as_str(), version = d.version, "designation applied");
            applied.push(d);
        }
        Ok(applied)
    }

    /// The communities of this district's streets, from the roll-ups they sent for the days of the round at `now`.
    fn communities_below(&self, now: Timestamp) -> Result<std::collections::BTreeSet<String>, String> {
        let mut out = std::collections::BTreeSet::new();
        for date in super::rollup::round_dates(now) {
            for (body, _) in self.with_db(|db| db.rollups_on(&date))?.into_values() {
                if let Ok(r) = serde_json::from_str::<super::rollup::RollUp>(&body) {
                    out.extend(r.units.into_iter().map(|u| u.community).filter(|c| !c.is_empty()));
                }
            }
        }
        Ok(out)
    }

    /// The designation in force for `community` at this office (its own, or the one it applied from above).
    pub fn designation(&self, community: &str) -> Result<Option<Designation>, String> {
        let Some((_, text)) = self.with_db(|db| db.designation(community))? else { return Ok(None) };
        let signed: SignedDesignation = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        serde_json::from_str(&signed.body).map(Some).map_err(|e| e.to_string())
    }
}

//! The `[policy]` config section and the bounds it must stay within (不得层层加码, DESIGN.md §4).
//!
//! A local configuration may relax within the guidance — the fever threshold within 37.0–37.5 ℃, registration
//! fields from name / phone / destination / reason / ID number, courier admission on or off — and nothing else. The
//! raw section also accepts the keys people reach for when they want to add conditions (`emergency_lane`,
//! `[[policy.rule]]`, `vehicle_categories`...), so that such a file is refused with the bound it broke and the guidance
//! line that sets it, rather than with a bare "unknown key".

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use super::{
    DEFAULT_THRESHOLD, Person, Policy, THRESHOLD_MAX, THRESHOLD_MIN, TierChange, tier_rule, vehicle_category_allowed,
};
use crate::domain::{Category, Celsius, Direction, Tier, Timestamp, Verdict};

/// A field the offline registration may ask for. Nothing else may be demanded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationField {
    /// 姓名.
    Name,
    /// 电话.
    Phone,
    /// 去往（楼栋/房号）.
    Destination,
    /// 事由.
    Reason,
    /// 身份证号 (optional by guidance).
    IdNumber,
}

impl RegistrationField {
    fn parse(s: &str) -> Option<RegistrationField> {
        Some(match s {
            "name" => RegistrationField::Name,
            "phone" => RegistrationField::Phone,
            "destination" => RegistrationField::Destination,
            "reason" => RegistrationField::Reason,
            "id_number" => RegistrationField::IdNumber,
            _ => return None,
        })
    }
}

/// The `[policy]` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Label recorded with each decision.
    pub version: Option<String>,
    /// Fever threshold in ℃.
    pub fever_threshold: Option<f64>,
    /// Courier admission in low tier.
    pub courier_admission: Option<bool>,
    /// Registration fields.
    pub registration_fields: Option<Vec<String>>,
    /// `[[policy.tier]]`: the tier schedule.
    pub tier: Option<Vec<RawTierChange>>,
    /// Refused unless `true`: the emergency lane cannot be disabled.
    pub emergency_lane: Option<bool>,
    /// Refused unless it equals the guidance range [34.0, 42.5].
    pub temperature_range: Option<Vec<f64>>,
    /// Refused when `true`: a valid community pass stands in for the code for residents.
    pub require_code_with_pass: Option<bool>,
    /// Refused when `false`: the four musts cannot be switched off.
    pub require_mask: Option<bool>,
    /// Refused when it differs from the guidance: vehicle categories allowed per tier.
    pub vehicle_categories: Option<BTreeMap<String, Vec<String>>>,
    /// `[[policy.rule]]`: refused when it changes a cell of the tier table.
    pub rule: Option<Vec<RawRuleOverride>>,
}

/// One `[[policy.tier]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTierChange {
    /// `low`, `medium` or `high`.
    pub tier: Tier,
    /// RFC 3339 date-time.
    pub effective: String,
}

/// One `[[policy.rule]]` entry: an attempt to set a cell of the tier table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuleOverride {
    /// Tier.
    pub tier: Tier,
    /// Category.
    pub category: Category,
    /// Direction (both when absent).
    pub direction: Option<Direction>,
    /// The verdict wanted.
    pub verdict: Verdict,
}

/// A policy setting outside the guidance bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyBoundError {
    /// The key, as a dotted path (`policy.fever_threshold`).
    pub key: String,
    /// What is wrong and which guidance line sets the bound.
    pub message: String,
}

impl fmt::Display for PolicyBoundError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for PolicyBoundError {}

const NO_EXTRA: &str = "a local configuration may relax within the guidance but never add conditions (不得层层加码)";
const GUIDANCE: &str = "民政部/国家卫健委 城乡社区疫情防控 guidance, DESIGN.md §4";

fn err(key: impl Into<String>, message: impl Into<String>) -> PolicyBoundError {
    PolicyBoundError { key: key.into(), message: message.into() }
}

impl RawPolicy {
    /// Validate against the guidance bounds. Returns every violation, not just the first.
    pub fn validate(&self) -> Result<Policy, Vec<PolicyBoundError>> {
        let mut errors = Vec::new();
        let mut policy = Policy::default();
        if let Some(v) = &self.version {
            if v.trim().is_empty() {
                errors.push(err("policy.version", "must not be empty (it is recorded with every decision)"));
            }
            policy.version = v.clone();
        }

        if let Some(t) = self.fever_threshold {
            match Celsius::from_f64(t) {
                Some(c) if c < THRESHOLD_MIN => errors.push(err(
                    "policy.fever_threshold",
                    format!(
                        "{t} ℃ is below 37.0 ℃: the threshold may only be set within 37.0–37.5 ℃ (default {}); a lower \
                         one turns healthy people away — {NO_EXTRA} ({GUIDANCE}, 体温必测)",
                        DEFAULT_THRESHOLD
                    ),
                )),
                Some(c) if c > THRESHOLD_MAX => errors.push(err(
                    "policy.fever_threshold",
                    format!(
                        "{t} ℃ is above 37.5 ℃: the threshold may only be set within 37.0–37.5 ℃; a higher one lets \
                         fevers through ({GUIDANCE}, 体温必测)"
                    ),
                )),
                Some(c) => policy.fever_threshold = c,
                None => errors.push(err("policy.fever_threshold", "must be a number of degrees Celsius")),
            }
        }
        if let Some(c) = self.courier_admission {
            policy.courier_admission = c;
        }

        if let Some(fields) = &self.registration_fields {
            let mut parsed = Vec::new();
            for f in fields {
                match RegistrationField::parse(f) {
                    Some(rf) if parsed.contains(&rf) => {
                        errors.push(err("policy.registration_fields", format!("`{f}` is listed twice")))
                    }
                    Some(rf) => parsed.push(rf),
                    None => errors.push(err(
                        "policy.registration_fields",
                        format!(
                            "`{f}` may not be demanded: registration asks only for name, phone, destination, reason \
                             and (optionally) id_number — {NO_EXTRA} ({GUIDANCE}, 信息必录)"
                        ),
                    )),
                }
            }
            policy.registration_fields = parsed;
        }

        match &self.tier {
            None => {}
            Some(list) if list.is_empty() => errors
                .push(err("policy.tier", "lists no tier: give at least one [[policy.tier]] with an effective time")),
            Some(list) => {
                let mut tiers = Vec::new();
                for (i, t) in list.iter().enumerate() {
                    match Timestamp::parse(&t.effective) {
                        Ok(effective) => tiers.push(TierChange { tier: t.tier, effective }),
                        Err(e) => errors.push(err(format!("policy.tier[{i}].effective"), e.to_string())),
                    }
                }
                tiers.sort_by_key(|t| t.effective);
                if !tiers.is_empty() {
                    policy.tiers = tiers;
                }
            }
        }

        if self.emergency_lane == Some(false) {
            errors.push(err(
                "policy.emergency_lane",
                format!(
                    "the emergency lane cannot be disabled: fever or acute patients going to hospital, pregnant women \
                     and ambulances pass in every tier ({GUIDANCE}, rule 1)"
                ),
            ));
        }
        if self.require_mask == Some(false) {
            errors.push(err(
                "policy.require_mask",
                format!("口罩必戴 is one of the four musts and cannot be switched off ({GUIDANCE}, 四必)"),
            ));
        }
        if let Some(range) = &self.temperature_range
            && (range.len() != 2 || range[0] != 34.0 || range[1] != 42.5)
        {
            errors.push(err(
                "policy.temperature_range",
                format!(
                    "{range:?}: the plausible range is fixed at [34.0, 42.5] ℃; readings outside it are measuring \
                     errors to re-measure, not grounds to turn someone away ({GUIDANCE}, 体温必测)"
                ),
            ));
        }
        if self.require_code_with_pass == Some(true) {
            errors.push(err(
                "policy.require_code_with_pass",
                format!(
                    "a valid community pass stands in for the health code for residents — demanding both shuts out \
                     residents without a smartphone; {NO_EXTRA} ({GUIDANCE}, rule 3)"
                ),
            ));
        }
        if let Some(map) = &self.vehicle_categories {
            check_vehicle_categories(map, &mut errors);
        }
        for (i, o) in self.rule.iter().flatten().enumerate() {
            check_rule_override(i, o, &policy, &mut errors);
        }

        if errors.is_empty() { Ok(policy) } else { Err(errors) }
    }
}

fn check_vehicle_categories(map: &BTreeMap<String, Vec<String>>, errors: &mut Vec<PolicyBoundError>) {
    for (tier_name, cats) in map {
        let key = format!("policy.vehicle_categories.{tier_name}");
        let tier = match tier_name.as_str() {
            "low" => Tier::Low,
            "medium" => Tier::Medium,
            "high" => Tier::High,
            _ => {
                errors.push(err(key, "is not a tier: use low, medium or high"));
                continue;
            }
        };
        let mut wanted = Vec::new();
        for c in cats {
            match Category::ALL.into_iter().find(|k| k.as_str() == c) {
                Some(cat) => wanted.push(cat),
                None => errors.push(err(key.clone(), format!("`{c}` is not a category"))),
            }
        }
        for cat in Category::ALL {
            if cat == Category::Emergency {
                continue;
            }
            let guidance = vehicle_category_allowed(tier, Direction::In, cat);
            let local = wanted.contains(&cat);
            if guidance && !local {
                errors.push(err(
                    key.clone(),
                    format!(
                        "leaves out {} vehicles, which the guidance admits in {} tier: {NO_EXTRA} ({GUIDANCE}, \
                         vehicles)",
                        cat.as_str(),
                        tier.as_str()
                    ),
                ));
            } else if !guidance && local {
                errors.push(err(
                    key.clone(),
                    format!(
                        "admits {} vehicles, which the guidance keeps out in {} tier; the street office changes the \
                         tier instead ({GUIDANCE}, vehicles)",
                        cat.as_str(),
                        tier.as_str()
                    ),
                ));
            }
        }
    }
}

fn check_rule_override(i: usize, o: &RawRuleOverride, policy: &Policy, errors: &mut Vec<PolicyBoundError>) {
    let key = format!("policy.rule[{i}]");
    let directions: &[Direction] = match o.direction {
        Some(Direction::In) => &[Direction::In],
        Some(Direction::Out) => &[Direction::Out],
        None => &Direction::ALL,
    };
    let cell = |d: Direction| format!("{} tier, {}, going {}", o.tier.as_str(), o.category.as_str(), d.as_str());
    for &d in directions {
        if o.category == Category::Emergency {
            if o.verdict != Verdict::Pass {
                errors.push(err(
                    key.clone(),
                    format!(
                        "sets {} to {}: the emergency lane passes in every tier and direction and no configuration \
                         can change it ({GUIDANCE}, rule 1)",
                        cell(d),
                        o.verdict.as_str()
                    ),
                ));
            }
            continue;
        }
        if o.category == Category::Resident && o.tier != Tier::High && o.verdict == Verdict::Deny {
            errors.push(err(
                key.clone(),
                format!(
                    "denies residents in {} tier: a resident with a valid credential, a normal temperature and a mask \
                     may not be denied in low or medium tier — {NO_EXTRA} ({GUIDANCE}, tier table)",
                    o.tier.as_str()
                ),
            ));
            continue;
        }
        // The guidance cell, for a person who cleared every check and has no registration or approval yet.
        let guidance = tier_rule(policy, o.tier, d, &Person::unknown(o.category)).verdict();
        if o.verdict.severity() > guidance.severity() {
            errors.push(err(
                key.clone(),
                format!(
                    "makes {} a {} where the guidance says {}: {NO_EXTRA} ({GUIDANCE}, tier table)",
                    cell(d),
                    o.verdict.as_str(),
                    guidance.as_str()
                ),
            ));
        } else if o.verdict.severity() < guidance.severity() {
            errors.push(err(
                key.clone(),
                format!(
                    "makes {} a {} where the guidance says {}: the tier table is not relaxed locally; the street \
                     office changes the community's tier instead ({GUIDANCE}, tier table)",
                    cell(d),
                    o.verdict.as_str(),
                    guidance.as_str()
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Policy, Vec<PolicyBoundError>> {
        let raw: RawPolicy = toml::from_str(toml_text).expect("test TOML parses");
        raw.validate()
    }

    #[test]
    fn the_default_and_relaxations_within_bounds_are_accepted() {
        let p = parse("").unwrap();
        assert_eq!(p.fever_threshold, DEFAULT_THRESHOLD);
        let p = parse(
            "fever_threshold = 37.5\ncourier_admission = false\nregistration_fields = [\"name\", \"id_number\"]\n\
             emergency_lane = true\ntemperature_range = [34.0, 42.5]\n\
             [[rule]]\ntier = \"low\"\ncategory = \"resident\"\nverdict = \"pass\"\n",
        )
        .unwrap();
        assert_eq!(p.fever_threshold.centi(), 3750);
        assert!(!p.courier_admission);
        assert_eq!(p.registration_fields, vec![RegistrationField::Name, RegistrationField::IdNumber]);
        assert_eq!(parse("fever_threshold = 37.0").unwrap().fever_threshold.centi(), 3700);
    }

    #[test]
    fn tier_schedule_is_sorted_and_resolved_by_time() {
        let p = parse(
            "[[tier]]\ntier = \"high\"\neffective = \"2026-12-01T00:00:00+08:00\"\n\
             [[tier]]\ntier = \"low\"\neffective = \"2026-11-01T00:00:00+08:00\"\n",
        )
        .unwrap();
        let nov = Timestamp::parse_rfc3339("2026-11-20T00:00:00+08:00").unwrap();
        let dec = Timestamp::parse_rfc3339("2026-12-01T00:00:00+08:00").unwrap();
        assert_eq!(p.tier_at(nov).tier, Tier::Low);
        assert_eq!(p.tier_at(dec).tier, Tier::High);
        // Before any change takes effect the first scheduled tier applies.
        assert_eq!(p.tier_at(Timestamp(0)).tier, Tier::Low);
    }

    #[test]
    fn each_over_control_is_refused_with_its_own_message() {
        let cases: &[(&str, &str, &str)] = &[
            ("fever_threshold = 36.8", "policy.fever_threshold", "below 37.0"),
            ("fever_threshold = 38.0", "policy.fever_threshold", "above 37.5"),
            ("emergency_lane = false", "policy.emergency_lane", "cannot be disabled"),
            ("require_mask = false", "policy.require_mask", "口罩必戴"),
            ("temperature_range = [35.5, 42.5]", "policy.temperature_range", "fixed at [34.0, 42.5]"),
            ("require_code_with_pass = true", "policy.require_code_with_pass", "stands in"),
            ("registration_fields = [\"name\", \"employer\"]", "policy.registration_fields", "`employer` may not"),
            (
                "[[rule]]\ntier = \"low\"\ncategory = \"resident\"\nverdict = \"deny\"",
                "policy.rule[0]",
                "denies residents in low tier",
            ),
            (
                "[[rule]]\ntier = \"medium\"\ncategory = \"resident\"\ndirection = \"in\"\nverdict = \"deny\"",
                "policy.rule[0]",
                "denies residents in medium tier",
            ),
            (
                "[[rule]]\ntier = \"high\"\ncategory = \"emergency\"\nverdict = \"refer\"",
                "policy.rule[0]",
                "emergency lane",
            ),
            (
                "[[rule]]\ntier = \"low\"\ncategory = \"visitor\"\ndirection = \"in\"\nverdict = \"deny\"",
                "policy.rule[0]",
                "makes low tier, visitor, going in a deny where the guidance says refer",
            ),
            (
                "[[rule]]\ntier = \"high\"\ncategory = \"visitor\"\ndirection = \"in\"\nverdict = \"pass\"",
                "policy.rule[0]",
                "street office changes",
            ),
            (
                "[vehicle_categories]\nlow = [\"resident\", \"service\"]",
                "policy.vehicle_categories.low",
                "leaves out visitor vehicles",
            ),
            (
                "[vehicle_categories]\nhigh = [\"service\", \"resident\"]",
                "policy.vehicle_categories.high",
                "admits resident vehicles",
            ),
        ];
        let mut messages = std::collections::HashSet::new();
        for (text, key, needle) in cases {
            let errors = parse(text).expect_err(text);
            let e = &errors[0];
            assert_eq!(&e.key, key, "{text}");
            assert!(e.to_string().contains(needle), "{text}: {e}");
            assert!(messages.insert(e.message.clone()), "message repeated for {text}");
        }
    }
}

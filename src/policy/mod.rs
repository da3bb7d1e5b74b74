//! The pure policy engine: `decide(policy, presentation, now) -> Decision`.
//!
//! Invariants (property-tested in `tests/` and below):
//! - no I/O, no clock reads (time is the `now` argument), no panics, no `Result`: input the engine cannot decide on
//!   becomes a `refer` with a reason;
//! - a `pass` implies identity asked, a normal fresh temperature and a mask worn, except in the emergency lane;
//! - an emergency presentation is never denied, in any tier or direction;
//! - in low and medium tier a resident with a valid credential, a normal temperature and a mask, not on the
//!   home-quarantine list, is never denied.
//!
//! The rules apply in the order of DESIGN.md §4; the first that matches decides, and every rule that matched is
//! listed in the person's `reasons` so the operator can fix everything at once.

pub mod bounds;
pub mod rules;

use serde::Serialize;

pub use self::bounds::{PolicyBoundError, RawPolicy, RegistrationField};
pub use self::rules::{Action, Rule, Voice};
use crate::domain::{
    Category, Celsius, CodeStatus, Direction, IdentityKind, IdentityMust, MaskState, Musts, TemperatureMust, Tier,
    Timestamp, Verdict,
};

/// Lowest plausible body-surface reading (34.0 ℃), inclusive.
pub const PLAUSIBLE_MIN: Celsius = Celsius::from_centi(3400);
/// Highest plausible reading (42.5 ℃), inclusive.
pub const PLAUSIBLE_MAX: Celsius = Celsius::from_centi(4250);
/// The default fever threshold (37.3 ℃).
pub const DEFAULT_THRESHOLD: Celsius = Celsius::from_centi(3730);
/// Lowest threshold a configuration may set (37.0 ℃).
pub const THRESHOLD_MIN: Celsius = Celsius::from_centi(3700);
/// Highest threshold a configuration may set (37.5 ℃).
pub const THRESHOLD_MAX: Celsius = Celsius::from_centi(3750);
/// A reading older than this does not belong to the person presenting now (60 s).
pub const READING_MAX_AGE_MS: i64 = 60_000;
/// A reading stamped further in the future than this is inconsistent (clock trouble) and is not used.
pub const READING_FUTURE_TOLERANCE_MS: i64 = 5_000;

/// A tier and the moment it takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TierChange {
    /// The tier.
    pub tier: Tier,
    /// When it takes effect.
    pub effective: Timestamp,
}

/// The validated policy a gate applies: built from the `[policy]` config section (see [`bounds`]) or, later, from a
/// signed bundle from the street office.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// A label recorded with every decision (`demo-1`, a bundle version...).
    pub version: String,
    /// At or above this a reading is a fever (37.0–37.5 ℃).
    pub fever_threshold: Celsius,
    /// Whether couriers on the admission registry may enter in low tier.
    pub courier_admission: bool,
    /// The fields the offline registration asks for (a subset of name/phone/destination/reason/ID number).
    pub registration_fields: Vec<RegistrationField>,
    /// The tier schedule, sorted by effective time; never empty.
    pub tiers: Vec<TierChange>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            version: "default".to_string(),
            fever_threshold: DEFAULT_THRESHOLD,
            courier_admission: true,
            registration_fields: vec![
                RegistrationField::Name,
                RegistrationField::Phone,
                RegistrationField::Destination,
                RegistrationField::Reason,
            ],
            tiers: vec![TierChange { tier: Tier::Low, effective: Timestamp(0) }],
        }
    }
}

impl Policy {
    /// The tier in force at `now`: the latest change whose effective time has come. Before the first change takes
    /// effect, the first scheduled tier applies (the schedule is never empty).
    pub fn tier_at(&self, now: Timestamp) -> TierChange {
        let mut current =
            self.tiers.first().copied().unwrap_or(TierChange { tier: Tier::Low, effective: Timestamp(0) });
        for change in &self.tiers {
            if change.effective <= now {
                current = *change;
            }
        }
        current
    }

    /// A copy of this policy with one tier fixed from the beginning of time (the dry run's `tier` field).
    pub fn with_fixed_tier(&self, tier: Tier) -> Policy {
        Policy { tiers: vec![TierChange { tier, effective: Timestamp(i64::MIN) }], ..self.clone() }
    }
}

/// A temperature reading and when it was taken (`None`: taken just now, as in a dry run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// The body temperature (after calibration).
    pub celsius: Celsius,
    /// When it was taken.
    pub taken_at: Option<Timestamp>,
}

/// Everything known about one person at the gate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Person {
    /// Who they are for the tier table.
    pub category: Category,
    /// How identity was established.
    pub identity: IdentityKind,
    /// Code status (or certificate verification result).
    pub code: CodeStatus,
    /// The latest reading.
    pub temperature: Option<Reading>,
    /// True when `temperature` is the re-measurement after a first fever reading.
    pub retest: bool,
    /// Mask state.
    pub mask: MaskState,
    /// On the office's home-quarantine list.
    pub quarantined: bool,
    /// Returned from a medium/high-risk area.
    pub from_risk_area: bool,
    /// Inbound traveller.
    pub inbound: bool,
    /// On the courier admission registry.
    pub courier_registered: bool,
    /// Registered as a visitor (information recorded).
    pub visitor_registered: bool,
    /// On the service roster (high tier).
    pub service_roster: bool,
    /// An operator approved what the guidance leaves to the operator (a necessary visit, a registered return).
    pub operator_approved: bool,
}

impl Person {
    /// A person with nothing known yet, of the given category.
    pub fn unknown(category: Category) -> Person {
        Person {
            category,
            identity: IdentityKind::None,
            code: CodeStatus::None,
            temperature: None,
            retest: false,
            mask: MaskState::Unchecked,
            quarantined: false,
            from_risk_area: false,
            inbound: false,
            courier_registered: false,
            visitor_registered: false,
            service_roster: false,
            operator_approved: false,
        }
    }
}

/// A vehicle and its category.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vehicle {
    /// The plate (鄂A12345); an empty plate is an unregistered vehicle.
    pub plate: String,
    /// Its category.
    pub category: Category,
}

/// One presentation: one person on foot, several people, or a vehicle and its occupants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presentation {
    /// Which way.
    pub direction: Direction,
    /// A vehicle, when the presentation is one.
    pub vehicle: Option<Vehicle>,
    /// The people (occupants, for a vehicle).
    pub people: Vec<Person>,
}

/// The decision for one person.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PersonDecision {
    /// The verdict.
    pub verdict: Verdict,
    /// The rule that decided.
    pub rule: Rule,
    /// Every rule that matched, the deciding one first.
    pub reasons: Vec<Rule>,
    /// The musts.
    pub musts: Musts,
    /// Follow-up actions.
    pub actions: Vec<Action>,
    /// The operator's message.
    pub message_zh: &'static str,
    /// The voice prompt.
    pub voice: Voice,
    /// Decided in the emergency lane (to be reviewed afterwards).
    pub flagged: bool,
    /// Refers the operator settled by approval.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approved: Vec<Rule>,
}

/// The decision for a presentation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    /// The verdict.
    pub verdict: Verdict,
    /// The rule that decided.
    pub rule: Rule,
    /// One decision per person, in input order.
    pub people: Vec<PersonDecision>,
    /// The tier that applied.
    pub tier: Tier,
    /// The policy version that applied.
    pub policy_version: String,
    /// Which way.
    pub direction: Direction,
    /// The operator's message.
    pub message_zh: &'static str,
    /// The voice prompt.
    pub voice: Voice,
    /// Follow-up actions for the whole presentation.
    pub actions: Vec<Action>,
    /// Anything decided in the emergency lane.
    pub flagged: bool,
}

impl Decision {
    /// True when the gate should open.
    pub fn opens_gate(&self) -> bool {
        self.verdict == Verdict::Pass
    }
}

/// Decide a presentation. Pure and total.
pub fn decide(policy: &Policy, presentation: &Presentation, now: Timestamp) -> Decision {
    let tier = policy.tier_at(now).tier;
    let direction = presentation.direction;
    let emergency_vehicle = presentation.vehicle.as_ref().is_some_and(|v| v.category == Category::Emergency);
    let people: Vec<PersonDecision> = presentation
        .people
        .iter()
        .map(|p| {
            if emergency_vehicle {
                emergency_lane(policy, p, now)
            } else {
                decide_person(policy, tier, direction, p, now)
            }
        })
        .collect();

    let rule = match &presentation.vehicle {
        Some(v) => vehicle_rule(tier, direction, v, &people),
        // On foot, the first person with the most severe verdict speaks for the group.
        None => {
            let worst = people.iter().map(|d| d.verdict.severity()).max();
            worst
                .and_then(|w| people.iter().find(|d| d.verdict.severity() == w))
                .map_or(Rule::NobodyPresented, |d| d.rule)
        }
    };
    let mut actions: Vec<Action> = rule.actions().to_vec();
    if presentation.vehicle.is_none() {
        for d in &people {
            for &a in &d.actions {
                if !actions.contains(&a) {
                    actions.push(a);
                }
            }
        }
    }
    // A person's verdict is always its rule's verdict, so the presentation's is its rule's too.
    let verdict = rule.verdict();
    Decision {
        verdict,
        rule,
        flagged: people.iter().any(|d| d.flagged),
        people,
        tier,
        policy_version: policy.version.clone(),
        direction,
        message_zh: rule.message_zh(),
        voice: rule.voice(),
        actions,
    }
}

/// The musts of one person at `now`.
pub fn musts(policy: &Policy, p: &Person, now: Timestamp) -> Musts {
    Musts {
        identity: if p.identity == IdentityKind::None { IdentityMust::Missing } else { IdentityMust::Asked },
        temperature: temperature_state(policy, p.temperature, now),
        mask: p.mask,
    }
}

fn temperature_state(policy: &Policy, reading: Option<Reading>, now: Timestamp) -> TemperatureMust {
    match classify_reading(policy, reading, now) {
        ReadingClass::Missing | ReadingClass::Stale => TemperatureMust::Missing,
        ReadingClass::Implausible => TemperatureMust::Invalid,
        ReadingClass::Fever => TemperatureMust::Fever,
        ReadingClass::Normal => TemperatureMust::Normal,
    }
}

enum ReadingClass {
    Missing,
    Stale,
    Implausible,
    Fever,
    Normal,
}

fn classify_reading(policy: &Policy, reading: Option<Reading>, now: Timestamp) -> ReadingClass {
    let Some(r) = reading else {
        return ReadingClass::Missing;
    };
    if let Some(at) = r.taken_at {
        let age = now.since(at);
        if !(-READING_FUTURE_TOLERANCE_MS..=READING_MAX_AGE_MS).contains(&age) {
            return ReadingClass::Stale;
        }
    }
    if r.celsius < PLAUSIBLE_MIN || r.celsius > PLAUSIBLE_MAX {
        ReadingClass::Implausible
    } else if r.celsius >= policy.fever_threshold {
        ReadingClass::Fever
    } else {
        ReadingClass::Normal
    }
}

fn emergency_lane(policy: &Policy, p: &Person, now: Timestamp) -> PersonDecision {
    finish(Rule::Emergency, vec![Rule::Emergency], musts(policy, p, now), true, Vec::new())
}

/// Decide one person (not in an emergency vehicle).
pub fn decide_person(policy: &Policy, tier: Tier, direction: Direction, p: &Person, now: Timestamp) -> PersonDecision {
    // 1. Emergency lane: no configuration reaches past this line.
    if p.category == Category::Emergency {
        return emergency_lane(policy, p, now);
    }
    let musts = musts(policy, p, now);
    let mut reasons: Vec<Rule> = Vec::new();
    let mut approved: Vec<Rule> = Vec::new();
    let mut check = |rule: Option<Rule>| {
        if let Some(r) = rule {
            if r.approvable() && p.operator_approved {
                approved.push(r);
            } else {
                reasons.push(r);
            }
        }
    };

    // 2. Identity.
    check((p.identity == IdentityKind::None).then_some(Rule::IdentityUnknown));
    // 3. Code colour and status.
    check(code_rule(p));
    // 4. Temperature.
    check(match classify_reading(policy, p.temperature, now) {
        ReadingClass::Missing => Some(Rule::TemperatureMissing),
        ReadingClass::Stale => Some(Rule::TemperatureStale),
        ReadingClass::Implausible => Some(Rule::TemperatureImplausible),
        ReadingClass::Fever if p.retest => Some(Rule::FeverConfirmed),
        ReadingClass::Fever => Some(Rule::FeverFirst),
        ReadingClass::Normal => None,
    });
    // 5. Mask.
    check(match p.mask {
        MaskState::Worn => None,
        MaskState::NotWorn => Some(Rule::MaskNotWorn),
        MaskState::Unchecked => Some(Rule::MaskUnchecked),
    });
    // 6. Home-quarantine list.
    check(match (p.quarantined, direction) {
        (false, _) => None,
        (true, Direction::Out) => Some(Rule::QuarantineOut),
        (true, Direction::In) => Some(Rule::QuarantineIn),
    });
    // 7a. Arrivals from risk areas / abroad, in every tier.
    if direction == Direction::In {
        check(p.from_risk_area.then_some(Rule::ArrivalRiskArea));
        check(p.inbound.then_some(Rule::ArrivalInbound));
    }
    // 7b. Tier × category × direction.
    check(Some(tier_rule(policy, tier, direction, p)));

    // The first rule that is not a pass decides; a pass is only reached when every check before it was clear.
    let decisive = reasons.iter().copied().find(|r| r.verdict() != Verdict::Pass).unwrap_or_else(|| {
        // Only the tier rule (or an approved refer turned pass) is left.
        *reasons.last().unwrap_or(&Rule::IdentityUnknown)
    });
    if decisive.verdict() != Verdict::Pass {
        reasons.retain(|r| r.verdict() != Verdict::Pass);
        // The deciding rule first, then the others in table order.
        reasons.retain(|r| *r != decisive);
        reasons.insert(0, decisive);
    } else {
        reasons = vec![decisive];
    }
    finish(decisive, reasons, musts, false, approved)
}

fn finish(rule: Rule, reasons: Vec<Rule>, musts: Musts, flagged: bool, approved: Vec<Rule>) -> PersonDecision {
    let mut actions: Vec<Action> = rule.actions().to_vec();
    if rule.verdict() == Verdict::Refer {
        // Everything the operator can fix now, not one thing at a time.
        for r in reasons.iter().filter(|r| r.verdict() == Verdict::Refer) {
            for &a in r.actions() {
                if !actions.contains(&a) {
                    actions.push(a);
                }
            }
        }
    }
    PersonDecision {
        verdict: rule.verdict(),
        rule,
        reasons,
        musts,
        actions,
        message_zh: rule.message_zh(),
        voice: rule.voice(),
        flagged,
        approved,
    }
}

fn code_rule(p: &Person) -> Option<Rule> {
    match p.code {
        CodeStatus::Green => None,
        CodeStatus::Red => Some(Rule::CodeRed),
        CodeStatus::Yellow => Some(Rule::CodeYellow),
        CodeStatus::Expired => Some(Rule::CodeExpired),
        CodeStatus::NotFound => Some(Rule::CodeNotFound),
        CodeStatus::Failed => Some(Rule::CodeFailed),
        CodeStatus::Timeout => Some(Rule::CodeTimeout),
        CodeStatus::Unverified => Some(Rule::CodeUnverified),
        CodeStatus::None => match p.identity {
            // A valid community pass stands in for the code for residents.
            IdentityKind::Pass if p.category == Category::Resident => None,
            // The offline lane: registered by hand (the elderly without a phone).
            IdentityKind::Manual => None,
            // Nothing presented: the identity rule already speaks.
            IdentityKind::None => None,
            _ => Some(Rule::CodeMissing),
        },
    }
}

/// The tier table (DESIGN.md §4, step 7), for a person who cleared every check before it.
pub fn tier_rule(policy: &Policy, tier: Tier, direction: Direction, p: &Person) -> Rule {
    use Category as C;
    if direction == Direction::Out && tier != Tier::High {
        return Rule::OutPass;
    }
    match (tier, p.category) {
        (_, C::Emergency) => Rule::Emergency,
        (_, C::Service) => Rule::TierService,
        (Tier::Low | Tier::Medium, C::Resident) => Rule::TierResident,
        (Tier::High, C::Resident) => match (direction, p.operator_approved) {
            (Direction::Out, _) => Rule::TierHighResidentOut,
            (Direction::In, true) => Rule::TierHighResidentInApproved,
            (Direction::In, false) => Rule::TierHighResidentIn,
        },
        (Tier::Low, C::Visitor) => low_visitor(p.visitor_registered),
        (Tier::Medium, C::Visitor) => {
            if p.operator_approved {
                Rule::TierMediumVisitorApproved
            } else {
                Rule::TierMediumVisitor
            }
        }
        (Tier::High, C::Visitor) => Rule::TierHighVisitor,
        (Tier::Low, C::Courier) => {
            if policy.courier_admission && p.courier_registered {
                Rule::TierLowCourierRegistered
            } else if p.visitor_registered {
                Rule::TierLowCourierVisitorRegistered
            } else {
                Rule::TierLowCourierUnregistered
            }
        }
        (Tier::Medium, C::Courier) => Rule::TierMediumCourier,
        (Tier::High, C::Courier) => Rule::TierHighCourier,
        (Tier::Low | Tier::Medium, C::WorkResumption) => Rule::TierWorkResumption,
        (Tier::High, C::WorkResumption) => {
            if p.service_roster {
                Rule::TierHighWorkResumptionRostered
            } else {
                Rule::TierHighWorkResumption
            }
        }
    }
}

fn low_visitor(registered: bool) -> Rule {
    if registered { Rule::TierLowVisitorRegistered } else { Rule::TierLowVisitorUnregistered }
}

/// Whether a vehicle of this category may pass in this tier and direction (DESIGN.md §4, vehicles).
pub fn vehicle_category_allowed(tier: Tier, direction: Direction, category: Category) -> bool {
    use Category as C;
    if category == C::Emergency {
        return true;
    }
    match (tier, direction) {
        (Tier::Low, _) | (Tier::Medium, Direction::Out) => true,
        (Tier::Medium, Direction::In) => {
            matches!(category, C::Resident | C::WorkResumption | C::Service)
        }
        (Tier::High, _) => category == C::Service,
    }
}

fn vehicle_rule(tier: Tier, direction: Direction, v: &Vehicle, people: &[PersonDecision]) -> Rule {
    if v.category == Category::Emergency {
        return Rule::VehicleEmergency;
    }
    if people.is_empty() {
        return Rule::VehicleNoOccupants;
    }
    if v.plate.trim().is_empty() {
        return Rule::VehiclePlateMissing;
    }
    if people.iter().any(|d| d.verdict == Verdict::Deny) {
        return Rule::VehicleOccupantDenied;
    }
    if !vehicle_category_allowed(tier, direction, v.category) {
        return Rule::VehicleCategoryNotAllowed;
    }
    if people.iter().any(|d| d.verdict == Verdict::Refer) {
        return Rule::VehicleOccupantReferred;
    }
    Rule::VehiclePass
}

#[cfg(test)]
mod tests;

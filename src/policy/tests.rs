//! Table-driven tests of every cell of DESIGN.md §4, an exhaustive sweep of the single-person input space, and
//! property tests of the invariants over groups, vehicles and every allowed threshold.

use proptest::prelude::*;

use super::*;
use crate::domain::{Category as C, CodeStatus as S, Direction as D, IdentityKind as I, MaskState as M, Tier as T};

const NOW: Timestamp = Timestamp(1_790_000_000_000);

fn reading(deg: f64) -> Option<Reading> {
    Some(Reading { celsius: Celsius::from_f64(deg).unwrap(), taken_at: Some(NOW.plus_ms(-2_000)) })
}

/// A person who clears every check before the tier table.
fn clear(category: Category) -> Person {
    Person {
        identity: I::HealthCode,
        code: S::Green,
        temperature: reading(36.5),
        mask: M::Worn,
        ..Person::unknown(category)
    }
}

fn one(tier: Tier, direction: Direction, p: Person) -> PersonDecision {
    let policy = Policy::default().with_fixed_tier(tier);
    let d = decide(&policy, &Presentation { direction, vehicle: None, people: vec![p] }, NOW);
    assert_eq!(d.tier, tier);
    assert_eq!(d.people.len(), 1);
    assert_eq!(d.verdict, d.people[0].verdict);
    d.people.into_iter().next().unwrap()
}

fn check(tier: Tier, direction: Direction, p: Person, verdict: Verdict, rule: Rule) {
    let d = one(tier, direction, p.clone());
    assert_eq!((d.verdict, d.rule), (verdict, rule), "{tier:?} {direction:?} {p:?}");
    assert_eq!(d.reasons[0], rule);
    assert_eq!(d.message_zh, rule.message_zh());
}

#[test]
fn tier_table_every_cell_entering() {
    use Rule as R;
    use Verdict::{Deny, Pass, Refer};
    let visitor_reg = Person { visitor_registered: true, ..clear(C::Visitor) };
    let courier_reg = Person { courier_registered: true, ..clear(C::Courier) };
    let courier_as_visitor = Person { visitor_registered: true, ..clear(C::Courier) };
    let rostered = Person { service_roster: true, ..clear(C::WorkResumption) };
    let approved = |p: Person| Person { operator_approved: true, ..p };
    let rows: Vec<(Tier, Person, Verdict, Rule)> = vec![
        // resident
        (T::Low, clear(C::Resident), Pass, R::TierResident),
        (T::Medium, clear(C::Resident), Pass, R::TierResident),
        (T::High, clear(C::Resident), Refer, R::TierHighResidentIn),
        (T::High, approved(clear(C::Resident)), Pass, R::TierHighResidentInApproved),
        // visitor
        (T::Low, visitor_reg.clone(), Pass, R::TierLowVisitorRegistered),
        (T::Low, clear(C::Visitor), Refer, R::TierLowVisitorUnregistered),
        (T::Medium, visitor_reg.clone(), Refer, R::TierMediumVisitor),
        (T::Medium, approved(clear(C::Visitor)), Pass, R::TierMediumVisitorApproved),
        (T::High, visitor_reg.clone(), Deny, R::TierHighVisitor),
        (T::High, approved(visitor_reg), Deny, R::TierHighVisitor),
        // courier
        (T::Low, courier_reg.clone(), Pass, R::TierLowCourierRegistered),
        (T::Low, courier_as_visitor, Pass, R::TierLowCourierVisitorRegistered),
        (T::Low, clear(C::Courier), Refer, R::TierLowCourierUnregistered),
        (T::Medium, courier_reg.clone(), Deny, R::TierMediumCourier),
        (T::High, courier_reg, Deny, R::TierHighCourier),
        // work resumption
        (T::Low, clear(C::WorkResumption), Pass, R::TierWorkResumption),
        (T::Medium, clear(C::WorkResumption), Pass, R::TierWorkResumption),
        (T::High, clear(C::WorkResumption), Deny, R::TierHighWorkResumption),
        (T::High, rostered, Pass, R::TierHighWorkResumptionRostered),
        // service
        (T::Low, clear(C::Service), Pass, R::TierService),
        (T::Medium, clear(C::Service), Pass, R::TierService),
        (T::High, clear(C::Service), Pass, R::TierService),
    ];
    for (tier, p, v, r) in rows {
        check(tier, D::In, p, v, r);
    }
    // Returned from a risk area / inbound: refer in every tier and category but service... and service too.
    for tier in Tier::ALL {
        for cat in [C::Resident, C::Visitor, C::Courier, C::WorkResumption, C::Service] {
            check(tier, D::In, Person { from_risk_area: true, ..clear(cat) }, Refer, R::ArrivalRiskArea);
            check(tier, D::In, Person { inbound: true, ..clear(cat) }, Refer, R::ArrivalInbound);
        }
    }
}

#[test]
fn courier_admission_off_treats_registered_couriers_as_visitors() {
    let policy = Policy { courier_admission: false, ..Policy::default() };
    let p = Person { courier_registered: true, ..clear(C::Courier) };
    assert_eq!(tier_rule(&policy, T::Low, D::In, &p), Rule::TierLowCourierUnregistered);
    let p = Person { visitor_registered: true, ..p };
    assert_eq!(tier_rule(&policy, T::Low, D::In, &p), Rule::TierLowCourierVisitorRegistered);
}

#[test]
fn going_out() {
    for tier in [T::Low, T::Medium] {
        for cat in [C::Resident, C::Visitor, C::Courier, C::WorkResumption, C::Service] {
            check(tier, D::Out, clear(cat), Verdict::Pass, Rule::OutPass);
            // Arrivals matter only coming in.
            check(tier, D::Out, Person { from_risk_area: true, ..clear(cat) }, Verdict::Pass, Rule::OutPass);
        }
    }
    check(T::High, D::Out, clear(C::Resident), Verdict::Deny, Rule::TierHighResidentOut);
    check(T::High, D::Out, clear(C::Visitor), Verdict::Deny, Rule::TierHighVisitor);
    check(T::High, D::Out, clear(C::Courier), Verdict::Deny, Rule::TierHighCourier);
    check(T::High, D::Out, clear(C::WorkResumption), Verdict::Deny, Rule::TierHighWorkResumption);
    check(T::High, D::Out, clear(C::Service), Verdict::Pass, Rule::TierService);
}

#[test]
fn emergency_lane_in_every_tier_and_direction_whatever_else_is_wrong() {
    for tier in Tier::ALL {
        for dir in Direction::ALL {
            let worst = Person {
                code: S::Red,
                temperature: reading(39.5),
                retest: true,
                mask: M::NotWorn,
                quarantined: true,
                ..Person::unknown(C::Emergency)
            };
            let d = one(tier, dir, worst);
            assert_eq!((d.verdict, d.rule), (Verdict::Pass, Rule::Emergency));
            assert!(d.flagged);
            assert_eq!(d.actions, vec![Action::CoordinateEmergencyVehicle, Action::Disinfect]);
        }
    }
}

#[test]
fn identity_then_every_code_status() {
    check(
        T::Low,
        D::In,
        Person { identity: I::None, code: S::None, ..clear(C::Resident) },
        Verdict::Refer,
        Rule::IdentityUnknown,
    );
    let cases = [
        (S::Green, Verdict::Pass, Rule::TierResident),
        (S::Yellow, Verdict::Deny, Rule::CodeYellow),
        (S::Red, Verdict::Deny, Rule::CodeRed),
        (S::Expired, Verdict::Refer, Rule::CodeExpired),
        (S::NotFound, Verdict::Refer, Rule::CodeNotFound),
        (S::Failed, Verdict::Refer, Rule::CodeFailed),
        (S::Timeout, Verdict::Refer, Rule::CodeTimeout),
        (S::Unverified, Verdict::Refer, Rule::CodeUnverified),
        (S::None, Verdict::Refer, Rule::CodeMissing),
    ];
    for (code, v, r) in cases {
        check(T::Low, D::In, Person { code, ..clear(C::Resident) }, v, r);
    }
    // Red and yellow are deny whatever else is missing, and notify the community.
    let d = one(T::Low, D::In, Person { code: S::Red, temperature: None, mask: M::Unchecked, ..clear(C::Visitor) });
    assert_eq!(d.rule, Rule::CodeRed);
    assert_eq!(
        d.reasons,
        vec![Rule::CodeRed, Rule::TemperatureMissing, Rule::MaskUnchecked, Rule::TierLowVisitorUnregistered]
    );
    assert!(d.actions.contains(&Action::NotifyCommunity));
    // A community pass stands in for the code for residents, not for others.
    check(
        T::Low,
        D::In,
        Person { identity: I::Pass, code: S::None, ..clear(C::Resident) },
        Verdict::Pass,
        Rule::TierResident,
    );
    check(
        T::Low,
        D::In,
        Person { identity: I::Pass, code: S::None, ..clear(C::Service) },
        Verdict::Refer,
        Rule::CodeMissing,
    );
    // The offline lane: registered by hand, no code needed.
    check(
        T::Low,
        D::In,
        Person { identity: I::Manual, code: S::None, ..clear(C::Resident) },
        Verdict::Pass,
        Rule::TierResident,
    );
    // But a pass holder whose code is known red is still denied.
    check(
        T::Low,
        D::In,
        Person { identity: I::Pass, code: S::Red, ..clear(C::Resident) },
        Verdict::Deny,
        Rule::CodeRed,
    );
}

#[test]
fn temperature_band_edges() {
    let cases: &[(Option<f64>, bool, Verdict, Rule, TemperatureMust)] = &[
        (Some(33.99), false, Verdict::Refer, Rule::TemperatureImplausible, TemperatureMust::Invalid),
        (Some(34.0), false, Verdict::Pass, Rule::TierResident, TemperatureMust::Normal),
        (Some(37.29), false, Verdict::Pass, Rule::TierResident, TemperatureMust::Normal),
        (Some(37.3), false, Verdict::Refer, Rule::FeverFirst, TemperatureMust::Fever),
        (Some(37.3), true, Verdict::Deny, Rule::FeverConfirmed, TemperatureMust::Fever),
        (Some(42.5), false, Verdict::Refer, Rule::FeverFirst, TemperatureMust::Fever),
        (Some(42.5), true, Verdict::Deny, Rule::FeverConfirmed, TemperatureMust::Fever),
        (Some(42.51), false, Verdict::Refer, Rule::TemperatureImplausible, TemperatureMust::Invalid),
        (Some(42.51), true, Verdict::Refer, Rule::TemperatureImplausible, TemperatureMust::Invalid),
        (Some(36.6), true, Verdict::Pass, Rule::TierResident, TemperatureMust::Normal),
        (None, false, Verdict::Refer, Rule::TemperatureMissing, TemperatureMust::Missing),
        (None, true, Verdict::Refer, Rule::TemperatureMissing, TemperatureMust::Missing),
    ];
    for &(t, retest, v, r, m) in cases {
        let p = Person { temperature: t.and_then(reading_opt), retest, ..clear(C::Resident) };
        let d = one(T::Low, D::In, p);
        assert_eq!((d.verdict, d.rule, d.musts.temperature), (v, r, m), "{t:?} retest={retest}");
    }
    let confirmed = one(T::Low, D::In, Person { temperature: reading(38.0), retest: true, ..clear(C::Resident) });
    assert_eq!(confirmed.actions, vec![Action::FeverClinic, Action::NotifyCommunityDoctor]);
    let first = one(T::Low, D::In, Person { temperature: reading(38.0), ..clear(C::Resident) });
    assert_eq!(first.actions, vec![Action::RestAndRemeasure]);
}

fn reading_opt(deg: f64) -> Option<Reading> {
    reading(deg)
}

#[test]
fn readings_expire_after_sixty_seconds_and_threshold_follows_the_policy() {
    let at = |age_ms: i64| Some(Reading { celsius: Celsius::from_centi(3650), taken_at: Some(NOW.plus_ms(-age_ms)) });
    check(T::Low, D::In, Person { temperature: at(60_000), ..clear(C::Resident) }, Verdict::Pass, Rule::TierResident);
    check(
        T::Low,
        D::In,
        Person { temperature: at(60_001), ..clear(C::Resident) },
        Verdict::Refer,
        Rule::TemperatureStale,
    );
    check(
        T::Low,
        D::In,
        Person { temperature: at(-60_000), ..clear(C::Resident) },
        Verdict::Refer,
        Rule::TemperatureStale,
    );
    let strict = Policy { fever_threshold: THRESHOLD_MIN, ..Policy::default() };
    let p = Person { temperature: reading(37.1), ..clear(C::Resident) };
    let d = decide(&strict, &Presentation { direction: D::In, vehicle: None, people: vec![p] }, NOW);
    assert_eq!(d.rule, Rule::FeverFirst);
}

#[test]
fn every_mask_state() {
    check(T::Low, D::In, clear(C::Resident), Verdict::Pass, Rule::TierResident);
    check(T::Low, D::In, Person { mask: M::NotWorn, ..clear(C::Resident) }, Verdict::Refer, Rule::MaskNotWorn);
    check(T::Low, D::In, Person { mask: M::Unchecked, ..clear(C::Resident) }, Verdict::Refer, Rule::MaskUnchecked);
}

#[test]
fn quarantine_in_and_out() {
    for tier in Tier::ALL {
        check(tier, D::Out, Person { quarantined: true, ..clear(C::Resident) }, Verdict::Deny, Rule::QuarantineOut);
        check(tier, D::In, Person { quarantined: true, ..clear(C::Resident) }, Verdict::Refer, Rule::QuarantineIn);
    }
    // An operator registers the return: then the tier table decides, and the approval is on the record.
    let d = one(T::Low, D::In, Person { quarantined: true, operator_approved: true, ..clear(C::Resident) });
    assert_eq!((d.verdict, d.rule), (Verdict::Pass, Rule::TierResident));
    assert_eq!(d.approved, vec![Rule::QuarantineIn]);
    // Approval cannot let a quarantined person out.
    let d = one(T::Low, D::Out, Person { quarantined: true, operator_approved: true, ..clear(C::Resident) });
    assert_eq!(d.rule, Rule::QuarantineOut);
}

fn vehicle(tier: Tier, direction: Direction, category: Category, people: Vec<Person>) -> Decision {
    let policy = Policy::default().with_fixed_tier(tier);
    let v = Vehicle { plate: "鄂A12345".into(), category };
    decide(&policy, &Presentation { direction, vehicle: Some(v), people }, NOW)
}

#[test]
fn vehicles() {
    let ok = clear(C::Resident);
    let red = Person { code: S::Red, ..clear(C::Resident) };
    let unmasked = Person { mask: M::NotWorn, ..clear(C::Resident) };
    let d = vehicle(T::Low, D::In, C::Resident, vec![ok.clone(), ok.clone()]);
    assert_eq!((d.verdict, d.rule), (Verdict::Pass, Rule::VehiclePass));
    let d = vehicle(T::Low, D::In, C::Resident, vec![ok.clone(), red.clone()]);
    assert_eq!((d.verdict, d.rule), (Verdict::Deny, Rule::VehicleOccupantDenied));
    assert_eq!(d.people[0].verdict, Verdict::Pass);
    assert_eq!(d.people[1].rule, Rule::CodeRed);
    let d = vehicle(T::Low, D::In, C::Resident, vec![ok.clone(), unmasked]);
    assert_eq!((d.verdict, d.rule), (Verdict::Refer, Rule::VehicleOccupantReferred));
    // Category by tier.
    let svc = clear(C::Service);
    for (tier, cat, allowed) in [
        (T::Low, C::Visitor, true),
        (T::Low, C::Courier, true),
        (T::Medium, C::Resident, true),
        (T::Medium, C::WorkResumption, true),
        (T::Medium, C::Service, true),
        (T::Medium, C::Visitor, false),
        (T::Medium, C::Courier, false),
        (T::High, C::Service, true),
        (T::High, C::Resident, false),
        (T::High, C::WorkResumption, false),
    ] {
        let d = vehicle(tier, D::In, cat, vec![svc.clone()]);
        let want = if allowed { Rule::VehiclePass } else { Rule::VehicleCategoryNotAllowed };
        assert_eq!(d.rule, want, "{tier:?} {cat:?}");
    }
    // An emergency vehicle always passes, whoever is in it.
    for tier in Tier::ALL {
        let d = vehicle(tier, D::In, C::Emergency, vec![red.clone(), Person::unknown(C::Visitor)]);
        assert_eq!((d.verdict, d.rule), (Verdict::Pass, Rule::VehicleEmergency));
        assert!(d.people.iter().all(|p| p.flagged && p.verdict == Verdict::Pass));
    }
    // Missing plate, no occupants.
    let policy = Policy::default();
    let v = Vehicle { plate: " ".into(), category: C::Resident };
    let d =
        decide(&policy, &Presentation { direction: D::In, vehicle: Some(v.clone()), people: vec![ok.clone()] }, NOW);
    assert_eq!(d.rule, Rule::VehiclePlateMissing);
    let d = decide(&policy, &Presentation { direction: D::In, vehicle: Some(v), people: vec![] }, NOW);
    assert_eq!(d.rule, Rule::VehicleNoOccupants);
    let d = decide(&policy, &Presentation { direction: D::In, vehicle: None, people: vec![] }, NOW);
    assert_eq!((d.verdict, d.rule), (Verdict::Refer, Rule::NobodyPresented));
}

#[test]
fn a_group_on_foot_is_as_strict_as_its_strictest_member() {
    let policy = Policy::default();
    let people = vec![
        clear(C::Resident),
        Person { mask: M::NotWorn, ..clear(C::Resident) },
        Person { code: S::Yellow, ..clear(C::Resident) },
    ];
    let d = decide(&policy, &Presentation { direction: D::In, vehicle: None, people }, NOW);
    assert_eq!((d.verdict, d.rule), (Verdict::Deny, Rule::CodeYellow));
    assert!(d.actions.contains(&Action::PutOnMask));
}

#[test]
fn a_refer_lists_everything_the_operator_can_fix_at_once() {
    let d = one(T::Low, D::In, Person { temperature: None, mask: M::Unchecked, ..clear(C::Resident) });
    assert_eq!(d.reasons, vec![Rule::TemperatureMissing, Rule::MaskUnchecked]);
    assert_eq!(d.actions, vec![Action::MeasureTemperature, Action::ConfirmMask]);
}

#[test]
fn decisions_record_tier_and_policy_version_in_force() {
    let policy = Policy {
        version: "v7".into(),
        tiers: vec![
            TierChange { tier: T::Low, effective: Timestamp(0) },
            TierChange { tier: T::High, effective: NOW.plus_ms(1) },
        ],
        ..Policy::default()
    };
    let pres = Presentation { direction: D::In, vehicle: None, people: vec![clear(C::Resident)] };
    let before = decide(&policy, &pres, NOW);
    let after = decide(&policy, &pres, NOW.plus_ms(1));
    assert_eq!((before.tier, before.verdict), (T::Low, Verdict::Pass));
    assert_eq!((after.tier, after.verdict), (T::High, Verdict::Refer));
    assert_eq!(after.policy_version, "v7");
}

// --- exhaustive sweep and properties -------------------------------------------------------------------------------

const TEMPS: [Option<f64>; 9] =
    [None, Some(33.99), Some(34.0), Some(36.5), Some(37.29), Some(37.3), Some(38.5), Some(42.5), Some(42.51)];

fn valid_credential(p: &Person) -> bool {
    match p.identity {
        I::None => false,
        I::Pass if p.category == C::Resident => matches!(p.code, S::Green | S::None),
        I::Manual => matches!(p.code, S::Green | S::None),
        _ => p.code == S::Green,
    }
}

fn assert_invariants(policy: &Policy, dir: Direction, p: &Person, d: &PersonDecision) {
    // A pass implies the musts, except in the emergency lane.
    if d.verdict == Verdict::Pass && !d.flagged {
        assert!(d.musts.all_hold(), "pass without the musts: {p:?} -> {d:?}");
    }
    // The emergency lane is never denied.
    if p.category == C::Emergency {
        assert_eq!(d.verdict, Verdict::Pass, "{p:?}");
    }
    // Every decision has a reason a person can read.
    assert!(!d.message_zh.is_empty() && d.reasons.first() == Some(&d.rule));
    let _ = (policy, dir);
}

/// Every combination of the discrete inputs for one person, in every tier and direction, at the band edges of
/// temperature: 3 tiers × 2 directions × 6 categories × 6 identities × 9 codes × 9 temperatures × 2 retests × 3 masks
/// × 2^7 flags = 13.4 M decisions.
#[test]
fn exhaustive_single_person_sweep() {
    let policy = Policy::default();
    let flag_masks: Vec<u8> = (0..128).collect();
    let mut n = 0u64;
    for tier in Tier::ALL {
        let policy = policy.with_fixed_tier(tier);
        for dir in Direction::ALL {
            for category in Category::ALL {
                for identity in IdentityKind::ALL {
                    for code in CodeStatus::ALL {
                        for t in TEMPS {
                            for retest in [false, true] {
                                for mask in MaskState::ALL {
                                    for &f in &flag_masks {
                                        let p = Person {
                                            category,
                                            identity,
                                            code,
                                            temperature: t.and_then(reading_opt),
                                            retest,
                                            mask,
                                            quarantined: f & 1 != 0,
                                            from_risk_area: f & 2 != 0,
                                            inbound: f & 4 != 0,
                                            courier_registered: f & 8 != 0,
                                            visitor_registered: f & 16 != 0,
                                            service_roster: f & 32 != 0,
                                            operator_approved: f & 64 != 0,
                                        };
                                        let d = decide_person(&policy, tier, dir, &p, NOW);
                                        assert_invariants(&policy, dir, &p, &d);
                                        // Residents with a valid credential, normal temperature and a mask are never
                                        // denied in low or medium tier unless the quarantine list keeps them in.
                                        if tier != T::High
                                            && category == C::Resident
                                            && valid_credential(&p)
                                            && d.musts.temperature == TemperatureMust::Normal
                                            && mask == M::Worn
                                            && !p.quarantined
                                        {
                                            assert_ne!(d.verdict, Verdict::Deny, "{p:?}");
                                        }
                                        n += 1;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(n, 3 * 2 * 6 * 6 * 9 * 9 * 2 * 3 * 128);
}

fn arb_category() -> impl Strategy<Value = Category> {
    prop::sample::select(Category::ALL.to_vec())
}

prop_compose! {
    fn arb_person()(
        category in arb_category(),
        identity in prop::sample::select(IdentityKind::ALL.to_vec()),
        code in prop::sample::select(CodeStatus::ALL.to_vec()),
        centi in prop::option::of(2_500i32..4_800),
        age in -10_000i64..90_000,
        retest in any::<bool>(),
        mask in prop::sample::select(MaskState::ALL.to_vec()),
        flags in any::<[bool; 7]>(),
    ) -> Person {
        Person {
            category, identity, code,
            temperature: centi.map(|c| Reading { celsius: Celsius::from_centi(c), taken_at: Some(NOW.plus_ms(-age)) }),
            retest, mask,
            quarantined: flags[0], from_risk_area: flags[1], inbound: flags[2], courier_registered: flags[3],
            visitor_registered: flags[4], service_roster: flags[5], operator_approved: flags[6],
        }
    }
}

prop_compose! {
    fn arb_policy()(threshold in 3_700i32..=3_750, courier in any::<bool>(), tier in prop::sample::select(Tier::ALL.to_vec())) -> Policy {
        Policy { fever_threshold: Celsius::from_centi(threshold), courier_admission: courier, ..Policy::default() }.with_fixed_tier(tier)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, failure_persistence: None, ..ProptestConfig::default() })]

    /// The three invariants over arbitrary groups and vehicles, any allowed threshold and courier setting.
    #[test]
    fn invariants_hold_for_groups_and_vehicles(
        policy in arb_policy(),
        dir in prop::sample::select(Direction::ALL.to_vec()),
        people in prop::collection::vec(arb_person(), 0..5),
        vehicle in prop::option::of((arb_category(), "[鄂京]A[0-9]{5}|")),
    ) {
        let vehicle = vehicle.map(|(category, plate)| Vehicle { plate, category });
        let pres = Presentation { direction: dir, vehicle: vehicle.clone(), people: people.clone() };
        let d = decide(&policy, &pres, NOW);
        let emergency_vehicle = vehicle.as_ref().is_some_and(|v| v.category == C::Emergency);
        for (p, pd) in people.iter().zip(&d.people) {
            assert_invariants(&policy, dir, p, pd);
            if emergency_vehicle { prop_assert_eq!(pd.verdict, Verdict::Pass); }
            if d.tier != T::High && p.category == C::Resident && valid_credential(p)
                && pd.musts.temperature == TemperatureMust::Normal && p.mask == M::Worn && !p.quarantined {
                prop_assert_ne!(pd.verdict, Verdict::Deny);
            }
        }
        match &vehicle {
            Some(v) if v.category == C::Emergency => prop_assert_eq!(d.verdict, Verdict::Pass),
            Some(_) => if d.verdict == Verdict::Pass {
                prop_assert!(!d.people.is_empty());
                prop_assert!(d.people.iter().all(|p| p.verdict == Verdict::Pass));
            },
            None => {
                let worst = d.people.iter().map(|p| p.verdict.severity()).max().unwrap_or(1);
                prop_assert_eq!(d.verdict.severity(), worst);
            }
        }
        prop_assert_eq!(d.verdict, d.rule.verdict());
    }
}

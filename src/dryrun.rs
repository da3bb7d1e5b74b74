//! `sibi decide`: the policy dry run of DESIGN.md §6, for training and for the street office to preview a tier change.
//!
//! Input JSON → [`Presentation`] → [`decide`] → one JSON object. Bad input is an error naming the field
//! (`people[0].code: unknown variant ...`); the caller exits 2.

use serde::Deserialize;

use crate::domain::{Category, Celsius, CodeStatus, Direction, IdentityKind, MaskState, Tier, Timestamp};
use crate::policy::{Decision, Person, Policy, Presentation, Reading, Vehicle, decide};

/// One case, as the contract spells it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseInput {
    tier: Option<Tier>,
    direction: Direction,
    #[serde(default)]
    vehicle: Option<VehicleInput>,
    people: Vec<PersonInput>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VehicleInput {
    plate: String,
    category: Category,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonInput {
    category: Category,
    #[serde(default = "none_identity")]
    identity: IdentityKind,
    #[serde(default = "none_code")]
    code: CodeStatus,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    retest: bool,
    #[serde(default = "unchecked")]
    mask: MaskState,
    #[serde(default)]
    quarantined: bool,
    #[serde(default)]
    from_risk_area: bool,
    #[serde(default)]
    inbound: bool,
    #[serde(default)]
    courier_registered: bool,
    #[serde(default)]
    visitor_registered: bool,
    /// Extension: on the high-tier service roster.
    #[serde(default)]
    service_roster: bool,
    /// Extension: an operator approved what the guidance leaves to the operator.
    #[serde(default)]
    operator_approved: bool,
}

fn none_identity() -> IdentityKind {
    IdentityKind::None
}
fn none_code() -> CodeStatus {
    CodeStatus::None
}
fn unchecked() -> MaskState {
    MaskState::Unchecked
}

/// A dry-run input the engine will not take, with the field at fault.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InputError {
    /// The JSON path of the field (`people[0].temperature`), or `input` for the whole document.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Parse a case and decide it under `policy` at `now`.
pub fn run(policy: &Policy, input: &str, now: Timestamp) -> Result<Decision, InputError> {
    let mut de = serde_json::Deserializer::from_str(input);
    let case: CaseInput = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path.is_empty() || path == "." || path == "?" { "input".to_string() } else { path };
        InputError { field, message: e.into_inner().to_string() }
    })?;
    de.end().map_err(|e| InputError { field: "input".into(), message: e.to_string() })?;
    if case.people.is_empty() {
        return Err(InputError {
            field: "people".into(),
            message: "is empty: a presentation has at least one person (a vehicle lists its occupants)".into(),
        });
    }
    let mut people = Vec::with_capacity(case.people.len());
    for (i, p) in case.people.into_iter().enumerate() {
        let temperature = match p.temperature {
            None => None,
            Some(t) if t < 0.0 => {
                return Err(InputError {
                    field: format!("people[{i}].temperature"),
                    message: format!("{t} is negative: give the reading in degrees Celsius, or null if none"),
                });
            }
            Some(t) if t >= 100.0 => {
                return Err(InputError {
                    field: format!("people[{i}].temperature"),
                    message: format!("{t} is not a body temperature in degrees Celsius (36.6, not 366 or 97.9 ℉)"),
                });
            }
            Some(t) => Some(Reading {
                celsius: Celsius::from_f64(t).ok_or_else(|| InputError {
                    field: format!("people[{i}].temperature"),
                    message: "is not a number".into(),
                })?,
                taken_at: None,
            }),
        };
        people.push(Person {
            category: p.category,
            identity: p.identity,
            code: p.code,
            temperature,
            retest: p.retest,
            mask: p.mask,
            quarantined: p.quarantined,
            from_risk_area: p.from_risk_area,
            inbound: p.inbound,
            courier_registered: p.courier_registered,
            visitor_registered: p.visitor_registered,
            service_roster: p.service_roster,
            operator_approved: p.operator_approved,
        });
    }
    let vehicle = case.vehicle.map(|v| Vehicle { plate: v.plate, category: v.category });
    let presentation = Presentation { direction: case.direction, vehicle, people };
    let policy = match case.tier {
        Some(t) => policy.with_fixed_tier(t),
        None => policy.clone(),
    };
    Ok(decide(&policy, &presentation, now))
}

/// `sibi decide --config F --input CASE [--pretty] [--at T]`: prints one JSON decision. `input` `-` is standard input.
pub fn command(
    config: &std::path::Path,
    input: &std::path::Path,
    pretty: bool,
    at: Option<&str>,
) -> crate::cli::Outcome {
    use crate::cli::Failure;
    let mut policy = crate::config::load_policy(config).map_err(|e| Failure::Usage(e.to_string()))?;
    // A whole gate config whose database holds an applied bundle: its tier schedule, as the daemon decides with it
    // (a tier designated from above reaches the preview too).
    if let Ok(gate) = crate::config::load(config)
        && let Ok(Some((version, tiers))) = crate::app::applied_tiers(&gate)
    {
        policy.tiers = tiers;
        policy.version = format!("{}+bundle-{version}", policy.version);
    }
    let now = crate::cli::time_arg("--at", at)?;
    let text = if input.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| Failure::usage(format!("cannot read the case from standard input: {e}")))?;
        s
    } else {
        std::fs::read_to_string(input).map_err(|e| Failure::usage(format!("cannot read `{}`: {e}", input.display())))?
    };
    let decision =
        run(&policy, &text, now).map_err(|e| Failure::usage(format!("bad input in `{}`: {e}", input.display())))?;
    let out = if pretty { serde_json::to_string_pretty(&decision) } else { serde_json::to_string(&decision) };
    let out = out.map_err(|e| Failure::Failed(format!("cannot print the decision: {e}")))?;
    println!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Verdict;

    fn go(input: &str) -> Result<Decision, InputError> {
        run(&Policy::default(), input, Timestamp(0))
    }

    #[test]
    fn a_full_case_decides() {
        let d = go(r#"{"tier":"medium","direction":"in","vehicle":null,"people":[{"category":"resident",
            "identity":"pass","code":"none","temperature":36.6,"retest":false,"mask":"worn","quarantined":false,
            "from_risk_area":false,"inbound":false,"courier_registered":false,"visitor_registered":false}]}"#)
        .unwrap();
        assert_eq!(d.verdict, Verdict::Pass);
        assert_eq!(d.tier, Tier::Medium);
    }

    #[test]
    fn bad_inputs_name_the_field() {
        let cases = [
            ("{", "input"),
            (r#"{"direction":"in","people":[{"category":"resident","code":"purple"}]}"#, "people[0].code"),
            (r#"{"direction":"in","people":[{"category":"alien"}]}"#, "people[0].category"),
            (r#"{"direction":"up","people":[]}"#, "direction"),
            (r#"{"direction":"in","people":[]}"#, "people"),
            (r#"{"direction":"in","people":[{"category":"resident","temperature":-1}]}"#, "people[0].temperature"),
            (r#"{"direction":"in","people":[{"category":"resident","temperature":366}]}"#, "people[0].temperature"),
            (r#"{"direction":"in","people":[{"category":"resident","temperature":"hot"}]}"#, "people[0].temperature"),
            (r#"{"direction":"in","people":[{"category":"resident","colour":"green"}]}"#, "people[0].colour"),
            (r#"{"direction":"in","vehicle":{"plate":"x"},"people":[{"category":"resident"}]}"#, "vehicle"),
            (r#"{"direction":"in","people":[{"category":"resident"}]} trailing"#, "input"),
        ];
        for (input, field) in cases {
            let e = go(input).expect_err(input);
            assert_eq!(e.field, field, "{input}: {e}");
        }
    }
}

//! The office's commands: `sibi office serve | publish | export`.

use std::path::{Path, PathBuf};

use base64::Engine;

use crate::cli::{Failure, Outcome};

/// What `sibi office publish` changes for a community, as given on the command line.
#[derive(Debug, Default)]
pub struct PublishArgs {
    /// The community.
    pub community: String,
    /// The new tier (`low`, `medium`, `high`).
    pub tier: Option<String>,
    /// When the tier takes effect (any form `Timestamp::parse` takes; default now).
    pub effective: Option<String>,
    /// Pass ids to revoke.
    pub revoke: Vec<String>,
    /// A file replacing the whole home-quarantine list.
    pub quarantine_list: Option<PathBuf>,
    /// Pass ids to put under home quarantine.
    pub quarantine: Vec<String>,
    /// Pass ids to release from home quarantine.
    pub release: Vec<String>,
    /// Pass ids to add to the courier registry.
    pub courier: Vec<String>,
    /// Health-code issuers as `name,region,prefix`.
    pub issuer: Vec<String>,
    /// DCC document signer certificate files.
    pub dcc_signer: Vec<PathBuf>,
}

/// The bundle changes that `args` ask for, checked; reads the files they name.
pub fn changes_of(args: PublishArgs) -> Result<crate::bundle::Changes, Failure> {
    let usage = |m: String| Failure::Usage(m);
    let tier = match &args.tier {
        None => None,
        Some(t) => {
            let Ok(tier) = serde_json::from_value::<crate::domain::Tier>(serde_json::Value::String(t.clone())) else {
                return Err(usage(format!("--tier `{t}`: use low, medium or high")));
            };
            // Any accepted form in; RFC 3339 (China time) in the signed bundle.
            let at = crate::cli::time_arg("--effective", args.effective.as_deref())?;
            Some(crate::bundle::BundleTier { tier, effective: at.to_rfc3339() })
        }
    };
    let mut issuers = Vec::new();
    for i in &args.issuer {
        match i.splitn(3, ',').collect::<Vec<_>>()[..] {
            [name, region, prefix] if !name.is_empty() && !prefix.is_empty() => {
                issuers.push(crate::credential::health_code::Issuer {
                    name: name.into(),
                    region: region.into(),
                    prefixes: vec![prefix.into()],
                })
            }
            _ => return Err(usage(format!("--issuer `{i}`: expected `name,region,prefix`"))),
        }
    }
    let mut dcc_signers = Vec::new();
    for p in &args.dcc_signer {
        let der = std::fs::read(p)
            .map_err(|e| e.to_string())
            .and_then(|bytes| x509_der(&bytes))
            .map_err(|e| usage(format!("--dcc-signer `{}`: {e}", p.display())))?;
        dcc_signers.push(base64::engine::general_purpose::STANDARD.encode(der));
    }
    let quarantine_list = match &args.quarantine_list {
        None => None,
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| e.to_string())
                .and_then(|t| crate::bundle::parse_id_list(&t))
                .map_err(|e| usage(format!("--quarantine-list `{}`: {e}", p.display())))?,
        ),
    };
    let changes = crate::bundle::Changes {
        tier,
        revoke: args.revoke,
        quarantine_list,
        quarantine: args.quarantine,
        release: args.release,
        couriers: args.courier,
        issuers,
        dcc_signers,
    };
    if changes.is_empty() {
        return Err(usage(
            "nothing to publish: give --tier, --revoke, --quarantine-list, --quarantine, --release, --courier, --issuer or \
             --dcc-signer"
                .into(),
        ));
    }
    Ok(changes)
}

/// `sibi office publish`: signs and stores the community's next bundle.
pub fn publish(config: &Path, args: PublishArgs) -> Outcome {
    let office = super::load(config).map_err(Failure::Usage)?;
    let Some(key) = &office.signing_key else {
        return Err(Failure::usage(format!(
            "{} has no `office.signing_key`: bundles cannot be signed",
            config.display()
        )));
    };
    let community = args.community.clone();
    let changes = changes_of(args)?;
    // A tier designated from above stands: the street republishes it, and may not publish its own over it.
    if let Some(t) = &changes.tier {
        let held = super::OfficeDb::open(&office.database)
            .and_then(|mut db| db.designation(&community))
            .map_err(Failure::Usage)?;
        if let Some((_, text)) = held {
            let d = serde_json::from_str::<super::designate::SignedDesignation>(&text)
                .ok()
                .and_then(|s| serde_json::from_str::<super::designate::Designation>(&s.body).ok());
            if let Some(why) =
                d.filter(|d| d.by != office.id).and_then(|d| super::designate::refusal(&d, t.tier, "street"))
            {
                return Err(Failure::Usage(why));
            }
        }
    }
    let bundle = super::OfficeDb::open(&office.database)
        .and_then(|mut db| db.publish(key, &community, &changes, crate::hw::now()))
        .map_err(Failure::Usage)?;
    println!("published bundle for {community}: {}", bundle.summary().replacen("applied ", "", 1));
    Ok(())
}

/// A certificate file's DER: PEM (the first CERTIFICATE block) or DER as is.
pub fn x509_der(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        let pem = x509_parser::pem::Pem::iter_from_buffer(bytes)
            .filter_map(Result::ok)
            .find(|p| p.label == "CERTIFICATE")
            .ok_or("no CERTIFICATE block in the PEM file")?;
        Ok(pem.contents)
    } else {
        crate::credential::dcc::Signer::from_der(bytes)?;
        Ok(bytes.to_vec())
    }
}

/// `sibi office export`: entries or daily reports from `from` to `to` (inclusive days, China time) into `out`.
pub fn export(config: &Path, what: &str, from: &str, to: Option<&str>, out: &Path) -> Outcome {
    let office = super::load(config).map_err(Failure::Usage)?;
    let to = to.unwrap_or(from);
    let (Some((start, _)), Some((_, end))) = (crate::report::day_bounds(from), crate::report::day_bounds(to)) else {
        return Err(Failure::usage(format!("--from `{from}` / --to `{to}`: use YYYY-MM-DD")));
    };
    if end <= start {
        return Err(Failure::usage("--to is before --from"));
    }
    let mut db = super::OfficeDb::open(&office.database).map_err(Failure::Usage)?;
    let table = match what {
        "entries" => {
            let secret = match office.seal_key.as_deref().map(crate::privacy::read_secret) {
                None => {
                    eprintln!("note: no `office.seal_key`: names, phones and ID numbers are written masked");
                    None
                }
                Some(Ok(k)) => Some(k),
                Some(Err(e)) => return Err(Failure::usage(format!("`office.seal_key`: {e}"))),
            };
            let rows = db.entries_between(start, end).map_err(Failure::Usage)?;
            super::export::entries_table(&rows, secret.as_ref())
        }
        "reports" => {
            let reports = db.reports_between(from, to).map_err(Failure::Usage)?;
            super::export::reports_table(&reports, office.report_due_hour)
        }
        "rollups" => {
            let office = super::Office::open(office).map_err(Failure::Usage)?;
            let now = crate::hw::now();
            let mut day = start;
            let mut all = Vec::new();
            while day < end {
                all.push(office.rollup(&day.to_rfc3339()[..10], now).map_err(Failure::Usage)?);
                day = day.plus_ms(86_400_000);
            }
            super::export::rollups_table(&all)
        }
        other => return Err(Failure::usage(format!("--what `{other}`: use entries, reports or rollups"))),
    };
    table.write(out).map_err(Failure::Usage)?;
    println!("wrote {} {what} row(s) from {from} to {to} to {}", table.rows.len(), out.display());
    Ok(())
}

/// `sibi office serve`: serves until SIGINT or SIGTERM, telling systemd it is ready and alive.
pub fn serve(config: &Path) -> Outcome {
    let office = super::load(config).map_err(Failure::Usage)?;
    crate::systemd::init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::usage(format!("cannot start the async runtime: {e}")))?;
    // Opened outside the runtime: the PostgreSQL client blocks on a runtime of its own while it connects.
    let listen = office.listen;
    let office = super::Office::open(office).map_err(Failure::Usage)?;
    let result: Result<(), String> = rt.block_on(async {
        let listener =
            tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        tracing::info!(%listen, "street office serving");
        let mut systemd = crate::systemd::Notifier::from_env();
        systemd.ready(&format!("serving on {listen}"));
        // The office's watchdog: pinged by a task on the same runtime that serves the requests.
        if let Some(period) = systemd.watchdog() {
            tokio::spawn(async move {
                let mut every = tokio::time::interval(period / 3);
                loop {
                    every.tick().await;
                    systemd.alive();
                }
            });
        }
        // 问题不过夜 and 四级联动: every round (`upstream.every_secs`, 300 s without a parent) the problems seen are
        // raised, then the day's roll-ups go to the office above and its designations are fetched.
        {
            let office = office.clone();
            let every = office.config().upstream.as_ref().map_or(std::time::Duration::from_secs(300), |u| u.every);
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(every);
                loop {
                    ticks.tick().await;
                    let o = office.clone();
                    let now = crate::hw::now();
                    let round = tokio::task::spawn_blocking(move || -> Result<usize, String> {
                        if o.config().upstream.is_none() {
                            return o.detect_problems(now).map(|_| 0);
                        }
                        let sent = o.send_rollups(&super::rollup::round_dates(now), now)?;
                        if let Err(e) = o.apply_designations(now) {
                            tracing::warn!(error = %e, "designations not fetched; next round retries");
                        }
                        Ok(sent)
                    });
                    match round.await {
                        Ok(Ok(0)) => {}
                        Ok(Ok(n)) => tracing::info!(sent = n, "roll-ups sent to the office above"),
                        Ok(Err(e)) => tracing::warn!(error = %e, "roll-up round failed; the next one retries"),
                        Err(e) => tracing::warn!(error = %e, "roll-up task failed"),
                    }
                }
            });
        }
        let result = super::serve(office, listener, crate::app::stop_signal()).await.map_err(|e| e.to_string());
        crate::systemd::Notifier::from_env().stopping();
        result
    });
    result.map_err(Failure::Failed)
}

/// `sibi office enroll --config F --csv FILE`: enrols every row of the file in one transaction, or none (every bad
/// row is listed by line).
pub fn enroll(config: &Path, csv: &Path) -> Outcome {
    let office = super::load(config).map_err(Failure::Usage)?;
    let text =
        std::fs::read_to_string(csv).map_err(|e| Failure::usage(format!("cannot read {}: {e}", csv.display())))?;
    let mut db = super::OfficeDb::open(&office.database).map_err(Failure::Usage)?;
    let mut taken = |id: &str| -> Result<Option<String>, String> {
        if let Some(g) = office.gates.get(id) {
            return Ok(Some(crate::keys::hex(g.key.as_bytes())));
        }
        Ok(db.enrolled(id)?.map(|e| e.public_key))
    };
    let rows = super::enroll::parse_csv(&text, crate::hw::now().0, &mut taken).map_err(|problems| {
        Failure::usage(format!(
            "{}: {} bad row(s), nothing enrolled:\n  {}",
            csv.display(),
            problems.len(),
            problems.join("\n  ")
        ))
    })?;
    let changed = db.enroll(&rows).map_err(Failure::Usage)?;
    println!("enrolled {changed} new or changed, {} already as given, from {}", rows.len() - changed, csv.display());
    Ok(())
}

/// `sibi office gates --config F`: every enrolment, office.toml's and the database's, one per line.
pub fn gates(config: &Path) -> Outcome {
    let office = super::load(config).map_err(Failure::Usage)?;
    let mut db = super::OfficeDb::open(&office.database).map_err(Failure::Usage)?;
    for (id, g) in &office.gates {
        println!("{id}\tgate\t{}\t{}\tenrolled in office.toml", g.name, g.community);
    }
    for e in db.enrollments().map_err(Failure::Usage)? {
        let state = match e.revoked_ms {
            Some(t) => format!("revoked {}", crate::domain::Timestamp(t).to_rfc3339()),
            None => format!("enrolled {}", crate::domain::Timestamp(e.enrolled_ms).to_rfc3339()),
        };
        println!("{}\t{}\t{}\t{}\t{state}", e.id, e.kind, e.name, e.community);
    }
    Ok(())
}

/// `sibi office revoke --config F --id ID`: the signer's requests are refused from now on.
pub fn revoke(config: &Path, id: &str) -> Outcome {
    let office = super::load(config).map_err(Failure::Usage)?;
    if office.gates.contains_key(id) {
        return Err(Failure::usage(format!("`{id}` is enrolled in {}: remove its [[gate]] there", config.display())));
    }
    let mut db = super::OfficeDb::open(&office.database).map_err(Failure::Usage)?;
    if !db.revoke_enrollment(id, crate::hw::now()).map_err(Failure::Usage)? {
        return Err(Failure::usage(format!("`{id}` is not enrolled (or is revoked already): see `sibi office gates`")));
    }
    println!("revoked {id}: its requests are refused from now on");
    Ok(())
}

/// `sibi office rollup --config F [--date D] [--send]`: prints the office's roll-up of the day (counts only) as JSON;
/// with `send`, sends it to `[upstream]` too.
pub fn rollup(config: &Path, date: Option<&str>, send: bool) -> Outcome {
    let office = super::load(config).map_err(Failure::Usage)?;
    let now = crate::hw::now();
    let date = date.map(str::to_string).unwrap_or_else(|| now.to_rfc3339()[..10].to_string());
    if send && office.upstream.is_none() {
        return Err(Failure::usage(format!("{} has no [upstream]: nothing to send to", config.display())));
    }
    let office = super::Office::open(office).map_err(Failure::Usage)?;
    office.detect_problems(now).map_err(Failure::Usage)?;
    let r = office.rollup(&date, now).map_err(Failure::Usage)?;
    println!("{}", serde_json::to_string_pretty(&r).map_err(|e| Failure::Failed(e.to_string()))?);
    if send {
        office.send_rollups(std::slice::from_ref(&date), now).map_err(Failure::Failed)?;
        eprintln!("sent to {}", office.config().upstream.as_ref().map_or("", |u| u.url.as_str()));
    }
    Ok(())
}

/// `sibi office designate --config F --community C --tier T [--effective E]`: a district designates a community's
/// tier, signed; its streets republish it to their gates.
pub fn designate(config: &Path, community: &str, tier: &str, effective: Option<&str>) -> Outcome {
    let office = super::load(config).map_err(Failure::Usage)?;
    if office.level == super::rollup::Level::Street {
        return Err(Failure::usage(format!(
            "{} is a street office: tiers are designated by the district (`level = \"district\"`); a street publishes \
             with `sibi office publish`",
            config.display()
        )));
    }
    let Ok(tier) = serde_json::from_value::<crate::domain::Tier>(serde_json::Value::String(tier.into())) else {
        return Err(Failure::usage(format!("--tier `{tier}`: use low, medium or high")));
    };
    let at = crate::cli::time_arg("--effective", effective)?;
    let office = super::Office::open(office).map_err(Failure::Usage)?;
    let d = office.designate(community, tier, at).map_err(Failure::Usage)?;
    println!("designated {} {} from {} (version {})", d.community, d.tier.as_str(), d.effective, d.version);
    Ok(())
}

/// `sibi office designations --config F [--apply]`: with `apply`, fetches the office above's designations and
/// republishes the newer ones to the gates; then lists the designations held.
pub fn designations(config: &Path, apply: bool) -> Outcome {
    let office = super::Office::open(super::load(config).map_err(Failure::Usage)?).map_err(Failure::Usage)?;
    if apply {
        let applied = office.apply_designations(crate::hw::now()).map_err(Failure::Failed)?;
        eprintln!("applied {} designation(s) from above", applied.len());
    }
    for text in office.with_db(|db| db.designations()).map_err(Failure::Usage)? {
        if let Some(d) = serde_json::from_str::<super::designate::SignedDesignation>(&text)
            .ok()
            .and_then(|s| serde_json::from_str::<super::designate::Designation>(&s.body).ok())
        {
            let carried = d.from.map(|o| format!("\tfor {} (its version {})", o.by, o.version)).unwrap_or_default();
            println!(
                "{}\t{}\tfrom {}\tby {}\tversion {}{carried}",
                d.community,
                d.tier.as_str(),
                d.effective,
                d.by,
                d.version
            );
        }
    }
    Ok(())
}

/// `sibi office problems --config F [--all]`: the 问题清单, open ones (all with `all`), after raising what is seen now.
pub fn problems(config: &Path, all: bool) -> Outcome {
    let office = super::Office::open(super::load(config).map_err(Failure::Usage)?).map_err(Failure::Usage)?;
    let now = crate::hw::now();
    office.detect_problems(now).map_err(Failure::Usage)?;
    for p in office.with_db(|db| db.problems(all)).map_err(Failure::Usage)? {
        let state = match (&p.closed_ms, &p.closed_by) {
            (Some(t), by) => format!(
                "closed {} by {}: {}",
                crate::domain::Timestamp(*t).to_rfc3339(),
                by.as_deref().unwrap_or(""),
                p.note.as_deref().unwrap_or("")
            ),
            (None, _) if p.overnight(now) => "OPEN OVERNIGHT".to_string(),
            (None, _) => "open".to_string(),
        };
        println!("{}\t{}\t{}\t{state}", p.key, p.kind_zh(), p.detail);
    }
    Ok(())
}

/// `sibi office close-problem --config F --key K --by WHO --note WHAT`: closes an open problem with what was done;
/// the levels above see it closed at the next roll-up.
pub fn close_problem(config: &Path, key: &str, by: &str, note: &str) -> Outcome {
    if by.trim().is_empty() || note.trim().is_empty() {
        return Err(Failure::usage("--by and --note must say who closed it and what was done"));
    }
    let office = super::load(config).map_err(Failure::Usage)?;
    let mut db = super::OfficeDb::open(&office.database).map_err(Failure::Usage)?;
    if !db.close_problem(key, by.trim(), note.trim(), crate::hw::now()).map_err(Failure::Usage)? {
        return Err(Failure::usage(format!("no open problem `{key}`: see `sibi office problems`")));
    }
    println!("closed {key}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_with_nothing_in_it_is_refused() {
        let Err(Failure::Usage(m)) = changes_of(PublishArgs { community: "c".into(), ..Default::default() }) else {
            panic!("empty publish accepted");
        };
        assert!(m.starts_with("nothing to publish"), "{m}");
    }

    #[test]
    fn publish_arguments_are_checked_one_by_one() {
        let bad_tier = PublishArgs { tier: Some("severe".into()), ..Default::default() };
        assert!(changes_of(bad_tier).unwrap_err().message().contains("low, medium or high"));
        let bad_time = PublishArgs { tier: Some("high".into()), effective: Some("soon".into()), ..Default::default() };
        assert!(changes_of(bad_time).unwrap_err().message().starts_with("--effective "));
        let bad_issuer = PublishArgs { issuer: vec!["only-a-name".into()], ..Default::default() };
        assert!(changes_of(bad_issuer).unwrap_err().message().contains("name,region,prefix"));
        let tier = PublishArgs {
            tier: Some("medium".into()),
            effective: Some("2026-12-01T08:00:00+0800".into()),
            ..Default::default()
        };
        let changes = changes_of(tier).unwrap();
        assert_eq!(changes.tier.unwrap().effective, "2026-12-01T08:00:00+08:00");
    }

    #[test]
    fn a_certificate_file_that_is_neither_pem_nor_der_is_refused() {
        assert!(x509_der(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err());
        assert!(x509_der(b"not a certificate").is_err());
    }
}

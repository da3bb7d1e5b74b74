//! 四级联动: an office's daily roll-up to the office above it — counts only, never personal data. A street office
//! sums its gates' daily reports (and whether each came on time, late, or not at all); a district sums its streets'
//! roll-ups; the city sees its districts. Each roll-up is signed like a gate's request (the office's own key, a
//! request counter), sent to `POST /v1/rollup` of the parent, which keeps the latest per (child, date).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Office, ReportStatus};
use crate::domain::Timestamp;

/// Where an office stands in 市、区、街道、社区.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// 街道办: its units are gates.
    Street,
    /// 区: its units are streets.
    District,
    /// 市: its units are districts.
    City,
}

impl Level {
    /// The level's name in Chinese.
    pub fn zh(self) -> &'static str {
        match self {
            Level::Street => "街道",
            Level::District => "区",
            Level::City => "市",
        }
    }

    /// What its units are called.
    pub fn units_zh(self) -> &'static str {
        match self {
            Level::Street => "闸口",
            Level::District => "街道",
            Level::City => "区",
        }
    }
}

/// `[upstream]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// The parent office's URL (`https://district.example.gov.cn`; plain http only to loopback).
    url: String,
    /// This office's private key (`sibi keygen --name office-up`); the parent enrols its `.pub` as kind `office`.
    key: PathBuf,
    /// Seconds between roll-ups (10–3600; default 300).
    every_secs: Option<u64>,
    /// The parent office's public key (its `office.pub`): designations of a tier are taken only if it signed them.
    office_key: Option<PathBuf>,
}

/// The parent office.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Its URL, without a trailing slash.
    pub url: String,
    /// This office's signing key.
    pub key: ed25519_dalek::SigningKey,
    /// Between roll-ups.
    pub every: std::time::Duration,
    /// The parent's key for designations.
    pub office_key: Option<ed25519_dalek::VerifyingKey>,
}

impl Upstream {
    /// Check `[upstream]`; paths relative to `base`.
    pub fn load(raw: RawUpstream, base: &Path) -> Result<Upstream, String> {
        let url = raw.url.trim_end_matches('/').to_string();
        let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"].iter().any(|p| url.starts_with(p));
        if !(url.starts_with("https://") || loopback) {
            return Err(format!("`upstream.url` = `{url}`: use https:// (plain http only to a loopback address)"));
        }
        let key = crate::credential::pass::read_signing_key(&base.join(&raw.key))
            .map_err(|e| format!("`upstream.key`: {e}"))?;
        let every = raw.every_secs.unwrap_or(300);
        if !(10..=3600).contains(&every) {
            return Err(format!("`upstream.every_secs` = {every}: use 10–3600"));
        }
        let office_key = raw
            .office_key
            .map(|p| crate::credential::pass::read_verifying_key(&base.join(p)))
            .transpose()
            .map_err(|e| format!("`upstream.office_key`: {e}"))?;
        Ok(Upstream { url, key, every: std::time::Duration::from_secs(every), office_key })
    }
}

/// The counts of a day, for one gate or summed over many.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Gates counted.
    pub gates: i64,
    /// Their daily reports: on time, late (迟报), missing (漏报), not yet due.
    pub on_time: i64,
    /// Late reports.
    pub late: i64,
    /// Missing reports.
    pub missing: i64,
    /// Reports not yet due.
    pub pending: i64,
    /// Zero reports (零报告).
    pub zero_reports: i64,
    /// Presentations decided.
    pub total: i64,
    /// By verdict.
    pub by_verdict: BTreeMap<String, i64>,
    /// By category.
    pub by_category: BTreeMap<String, i64>,
    /// By deciding rule.
    pub by_reason: BTreeMap<String, i64>,
    /// Vehicles.
    pub vehicles: i64,
    /// Confirmed fevers.
    pub fevers: i64,
    /// Red codes.
    pub red_codes: i64,
    /// Yellow codes.
    pub yellow_codes: i64,
    /// Emergency passages.
    pub emergency_passages: i64,
    /// Device faults journaled.
    pub device_faults: i64,
    /// Periods a gate could not reach its office.
    pub offline_periods: i64,
    /// Problems open (问题清单).
    #[serde(default)]
    pub open_problems: i64,
    /// Problems open since before the roll-up's day (问题不过夜: flagged red at every level above).
    #[serde(default)]
    pub overnight_problems: i64,
}

impl Figures {
    /// Add `o` into these.
    pub fn add(&mut self, o: &Figures) {
        for (a, b) in [
            (&mut self.gates, o.gates),
            (&mut self.on_time, o.on_time),
            (&mut self.late, o.late),
            (&mut self.missing, o.missing),
            (&mut self.pending, o.pending),
            (&mut self.zero_reports, o.zero_reports),
            (&mut self.total, o.total),
            (&mut self.vehicles, o.vehicles),
            (&mut self.fevers, o.fevers),
            (&mut self.red_codes, o.red_codes),
            (&mut self.yellow_codes, o.yellow_codes),
            (&mut self.emergency_passages, o.emergency_passages),
            (&mut self.device_faults, o.device_faults),
            (&mut self.offline_periods, o.offline_periods),
            (&mut self.open_problems, o.open_problems),
            (&mut self.overnight_problems, o.overnight_problems),
        ] {
            *a += b;
        }
        for (mine, theirs) in [
            (&mut self.by_verdict, &o.by_verdict),
            (&mut self.by_category, &o.by_category),
            (&mut self.by_reason, &o.by_reason),
        ] {
            for (k, v) in theirs {
                *mine.entry(k.clone()).or_default() += v;
            }
        }
    }

    /// One gate's figures from its daily report (if it came) and the report's status.
    pub fn of_gate(report: Option<&crate::report::DailyReport>, status: ReportStatus) -> Figures {
        let mut f = Figures { gates: 1, ..Default::default() };
        match status {
            ReportStatus::OnTime => f.on_time = 1,
            ReportStatus::Late => f.late = 1,
            ReportStatus::Missing => f.missing = 1,
            ReportStatus::Pending => f.pending = 1,
        }
        if let Some(r) = report {
            f.zero_reports = i64::from(r.zero_report);
            f.total = r.total;
            f.by_verdict = r.by_verdict.clone();
            f.by_category = r.by_category.clone();
            f.by_reason = r.by_reason.clone();
            f.vehicles = r.vehicles;
            f.fevers = r.fevers;
            f.red_codes = r.red_codes;
            f.yellow_codes = r.yellow_codes;
            f.emergency_passages = r.emergency_passages;
            f.device_faults = r.device_faults.len() as i64;
            f.offline_periods = r.offline.len() as i64;
        }
        f
    }
}

/// One unit of a roll-up: a gate (from a street), a street (from a district), a district (from the city's view).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Unit {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// A gate's community; empty for an office.
    #[serde(default)]
    pub community: String,
    /// Whether its own roll-up reached this office (always true for a gate).
    pub reported: bool,
    /// Its figures.
    pub figures: Figures,
}

/// An office's roll-up of one day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollUp {
    /// The sending office.
    pub office: String,
    /// Its name.
    pub name: String,
    /// Its level.
    pub level: Level,
    /// The day (YYYY-MM-DD, China time).
    pub date: String,
    /// As at (ms).
    pub made_ms: i64,
    /// Its units.
    pub units: Vec<Unit>,
    /// The sum of its units.
    pub total: Figures,
    /// The problems open at the street (forwarded by the levels above), oldest first.
    #[serde(default)]
    pub problems: Vec<Problem>,
}

/// A problem on the 问题清单: raised at the street (the level that owns it), open until closed there with a note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `KIND:UNIT:DATE`: one problem per kind, gate and day.
    pub key: String,
    /// `missing_report`, `gate_silent`, `fever_follow_up` or `self_check_failed`.
    pub kind: String,
    /// The gate.
    pub unit: String,
    /// The day it concerns.
    pub date: String,
    /// What was seen.
    pub detail: String,
    /// When it was opened (ms).
    pub opened_ms: i64,
    /// When it was closed (ms).
    pub closed_ms: Option<i64>,
    /// Who closed it.
    pub closed_by: Option<String>,
    /// What was done.
    pub note: Option<String>,
}

impl Problem {
    /// The kind in Chinese.
    pub fn kind_zh(&self) -> &'static str {
        match self.kind.as_str() {
            "missing_report" => "漏报",
            "gate_silent" => "闸口失联",
            "fever_follow_up" => "发热待随访",
            "self_check_failed" => "体温计自检未通过",
            _ => "问题",
        }
    }

    /// Open since before the day of `at` (China time): it stayed overnight.
    pub fn overnight(&self, at: Timestamp) -> bool {
        crate::report::day_bounds(&at.to_rfc3339()[..10]).is_some_and(|(start, _)| self.opened_ms < start.0)
    }
}

impl Office {
    /// This office's roll-up of `date` as at `at`: a street's from its gates' reports, a district's or city's from
    /// its children's roll-ups (a child that sent none counts its gates as unknown and itself as not reported).
    pub fn rollup(&self, date: &str, at: Timestamp) -> Result<RollUp, String> {
        if crate::report::day_bounds(date).is_none() {
            return Err(format!("`{date}` is not a day (YYYY-MM-DD)"));
        }
        let mut units = Vec::new();
        let mut problems = Vec::new();
        match self.config.level {
            Level::Street => {
                let (received, reports) = self.reports_on(date)?;
                let open = self.with_db(|db| db.problems(false))?;
                for (id, g) in self.gate_directory()? {
                    let status = self.status_of(received.get(&id).copied(), date, at)?;
                    let mut figures = Figures::of_gate(reports.get(&id), status);
                    for p in open.iter().filter(|p| p.unit == id) {
                        figures.open_problems += 1;
                        figures.overnight_problems += i64::from(p.overnight(at));
                    }
                    units.push(Unit { figures, id, name: g.name, community: g.community, reported: true });
                }
                problems = open;
            }
            Level::District | Level::City => {
                let sent = self.with_db(|db| db.rollups_on(date))?;
                for child in self.with_db(|db| db.enrollments())?.into_iter().filter(|e| e.kind == "office") {
                    if child.revoked_ms.is_some() {
                        continue;
                    }
                    let theirs = sent.get(&child.id).and_then(|(b, _)| serde_json::from_str::<RollUp>(b).ok());
                    let mut figures = theirs.as_ref().map(|r| r.total.clone()).unwrap_or_default();
                    if let Some(r) = &theirs {
                        // Overnight as at this roll-up: a problem the street reported yesterday evening is red here
                        // this morning.
                        figures.overnight_problems = r.problems.iter().filter(|p| p.overnight(at)).count() as i64;
                        problems.extend(r.problems.iter().cloned());
                    }
                    units.push(Unit {
                        reported: theirs.is_some(),
                        figures,
                        id: child.id,
                        name: child.name,
                        community: String::new(),
                    });
                }
            }
        }
        let mut total = Figures::default();
        for u in &units {
            total.add(&u.figures);
        }
        Ok(RollUp {
            office: self.config.id.clone(),
            name: self.config.name.clone(),
            level: self.config.level,
            date: date.to_string(),
            made_ms: at.0,
            units,
            total,
            problems,
        })
    }

    /// The gates' reports for `date`, with when each first arrived (one query).
    #[allow(clippy::type_complexity)]
    fn reports_on(
        &self,
        date: &str,
    ) -> Result<(BTreeMap<String, i64>, BTreeMap<String, crate::report::DailyReport>), String> {
        let stored = self.with_db(|db| db.reports_between(date, date))?;
        let received = stored.iter().map(|r| (r.gate.clone(), r.first_received_ms)).collect();
        let reports =
            stored.into_iter().filter_map(|r| Some((r.gate.clone(), serde_json::from_str(&r.body).ok()?))).collect();
        Ok((received, reports))
    }

    /// Raise the problems a street sees as at `at` (问题清单), for yesterday and today: a gate's report missing, a
    /// gate silent for more than 30 minutes, confirmed fevers (open until the follow-up is recorded by closing it),
    /// a failed thermometer self-check. Each is raised once; returns how many were new.
    pub fn detect_problems(&self, at: Timestamp) -> Result<usize, String> {
        if self.config.level != Level::Street {
            return Ok(0);
        }
        let gates = self.gate_directory()?;
        let seen: BTreeMap<String, super::GateState> = self.gates()?.into_iter().map(|g| (g.gate.clone(), g)).collect();
        let mut found = Vec::new();
        let today = at.to_rfc3339()[..10].to_string();
        for date in round_dates(at) {
            let (received, reports) = self.reports_on(&date)?;
            for id in gates.keys() {
                let mut raise = |kind: &str, detail: String| {
                    found.push(Problem {
                        key: format!("{kind}:{id}:{date}"),
                        kind: kind.into(),
                        unit: id.clone(),
                        date: date.clone(),
                        detail,
                        opened_ms: at.0,
                        closed_ms: None,
                        closed_by: None,
                        note: None,
                    })
                };
                if self.status_of(received.get(id).copied(), &date, at)? == ReportStatus::Missing {
                    raise("missing_report", format!("{date} 日报告未报"));
                }
                if let Some(r) = reports.get(id) {
                    if r.fevers > 0 {
                        raise("fever_follow_up", format!("{} 人发热，待记录随访", r.fevers));
                    }
                    if let Some(bad) =
                        r.thermometer_self_check.iter().find(|l| l.contains("FAIL") || l.contains("no reading"))
                    {
                        raise("self_check_failed", bad.clone());
                    }
                }
                if date == today {
                    // A gate that has called and then fell silent (a gate never seen is shown as 从未联系).
                    let silent = seen
                        .get(id)
                        .and_then(|s| s.last_contact_ms)
                        .is_some_and(|m| at.0 - m > super::STALE_CONTACT_MS);
                    if silent {
                        raise("gate_silent", "30 分钟以上无联系".into());
                    }
                }
            }
        }
        // One transaction for the round: a street's thousands of gates do not hold the database a commit each.
        self.with_db(|db| db.open_problems(&found))
    }

    /// Send this office's roll-ups of `dates` to its parent, signed; returns how many the parent took.
    pub fn send_rollups(&self, dates: &[String], at: Timestamp) -> Result<usize, String> {
        let Some(up) = &self.config.upstream else {
            return Err("no [upstream] in the office config: nothing to send to".into());
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(10)))
            .build()
            .new_agent();
        self.detect_problems(at)?;
        let mut sent = 0;
        for date in dates {
            let body = serde_json::to_vec(&self.rollup(date, at)?).map_err(|e| e.to_string())?;
            let counter = self.with_db(|db| db.next_own_counter(crate::hw::now()))?;
            let mut answer = agent
                .post(&format!("{}/v1/rollup", up.url))
                .header("content-type", "application/json")
                .header("x-sibi-gate", &self.config.id)
                .header(crate::keys::COUNTER_HEADER, counter.to_string())
                .header("x-sibi-signature", &crate::keys::sign_request(&up.key, counter, &body))
                .send(&body[..])
                .map_err(|e| format!("{}: {e}", up.url))?;
            let status = answer.status().as_u16();
            if status != 200 {
                let text = answer.body_mut().read_to_string().unwrap_or_default();
                return Err(format!("{}: HTTP {status}: {}", up.url, text.chars().take(200).collect::<String>()));
            }
            sent += 1;
        }
        Ok(sent)
    }
}

/// Today's and yesterday's dates as at `at` (China time): what a roll-up round sends.
pub fn round_dates(at: Timestamp) -> Vec<String> {
    vec![at.plus_ms(-86_400_000).to_rfc3339()[..10].to_string(), at.to_rfc3339()[..10].to_string()]
}

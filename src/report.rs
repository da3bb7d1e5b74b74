//! The daily report (日报告): what happened at a gate on one calendar day in China Standard Time, and an explicit
//! zero report (零报告) when nothing abnormal happened.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::Timestamp;
use crate::store::{Store, StoreError};

/// One gate's day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DailyReport {
    /// Gate id.
    pub gate: String,
    /// Community.
    pub community: String,
    /// The day, `YYYY-MM-DD` (UTC+8).
    pub date: String,
    /// Presentations decided (final entries).
    pub total: i64,
    /// By verdict (pass / refer / deny).
    pub by_verdict: BTreeMap<String, i64>,
    /// By category.
    pub by_category: BTreeMap<String, i64>,
    /// By deciding rule (the reason).
    pub by_reason: BTreeMap<String, i64>,
    /// By direction.
    pub by_direction: BTreeMap<String, i64>,
    /// Vehicles decided.
    pub vehicles: i64,
    /// Confirmed fevers (sent to the fever clinic).
    pub fevers: i64,
    /// Red codes seen.
    pub red_codes: i64,
    /// Yellow codes seen.
    pub yellow_codes: i64,
    /// Emergency passages.
    pub emergency_passages: i64,
    /// Device faults, as journaled (time and detail).
    pub device_faults: Vec<String>,
    /// Periods without the office (sync failures), as journaled.
    pub offline: Vec<String>,
    /// The thermometer self-check results of the day.
    pub thermometer_self_check: Vec<String>,
    /// Nothing abnormal: no fever, no red or yellow code, no deny, no emergency passage.
    pub zero_report: bool,
    /// Presentations whose mask must was met by the camera (口罩 自动).
    #[serde(default)]
    pub mask_by_camera: i64,
    /// Presentations whose mask must was met by the operator's confirmation (口罩 人工).
    #[serde(default)]
    pub mask_by_operator: i64,
}

/// Parse `YYYY-MM-DD` and give the day's bounds in UTC+8.
pub fn day_bounds(date: &str) -> Option<(Timestamp, Timestamp)> {
    let start = Timestamp::parse_rfc3339(&format!("{date}T00:00:00+08:00"))?;
    (start.to_rfc3339().get(..10)? == date).then(|| (start, start.plus_ms(86_400_000)))
}

/// Build the report for `date` from the store.
pub fn daily(store: &Store, gate: &str, community: &str, date: &str) -> Result<Option<DailyReport>, StoreError> {
    let Some((from, to)) = day_bounds(date) else { return Ok(None) };
    let mut r = DailyReport {
        gate: gate.into(),
        community: community.into(),
        date: date.into(),
        total: 0,
        by_verdict: BTreeMap::new(),
        by_category: BTreeMap::new(),
        by_reason: BTreeMap::new(),
        by_direction: BTreeMap::new(),
        vehicles: 0,
        fevers: 0,
        red_codes: 0,
        yellow_codes: 0,
        emergency_passages: 0,
        device_faults: Vec::new(),
        offline: Vec::new(),
        thermometer_self_check: Vec::new(),
        zero_report: true,
        mask_by_camera: 0,
        mask_by_operator: 0,
    };
    for [verdict, category, rule, direction, identity, code, emergency, mask, mask_by] in
        store.final_rows_between(from, to)?
    {
        let s = |o: Option<String>| o.unwrap_or_default();
        r.total += 1;
        let (verdict, rule, code) = (s(verdict), s(rule), s(code));
        *r.by_verdict.entry(verdict.clone()).or_default() += 1;
        *r.by_category.entry(s(category)).or_default() += 1;
        *r.by_direction.entry(s(direction)).or_default() += 1;
        if s(identity) == "vehicle" {
            r.vehicles += 1;
        }
        if rule == "temperature.fever_confirmed" {
            r.fevers += 1;
        }
        match code.as_str() {
            "red" => r.red_codes += 1,
            "yellow" => r.yellow_codes += 1,
            _ => {}
        }
        if emergency.is_some() {
            r.emergency_passages += 1;
        }
        if mask.as_deref() == Some("worn") {
            match mask_by.as_deref() {
                Some("detected") => r.mask_by_camera += 1,
                Some("operator") => r.mask_by_operator += 1,
                _ => {}
            }
        }
        if verdict == "deny" {
            r.zero_report = false;
        }
        *r.by_reason.entry(rule).or_default() += 1;
    }
    for (at, kind, detail) in store.journal_between(from, to)? {
        let line = format!("{} {detail}", Timestamp(at).to_rfc3339());
        match kind.as_str() {
            "device_fault" => r.device_faults.push(line),
            "sync_offline" | "sync_online" => r.offline.push(line),
            "thermometer_self_check" => r.thermometer_self_check.push(line),
            _ => {}
        }
    }
    r.zero_report &= r.fevers == 0 && r.red_codes == 0 && r.yellow_codes == 0 && r.emergency_passages == 0;
    Ok(Some(r))
}

impl DailyReport {
    /// The report as the office reads it, in Chinese.
    pub fn to_text(&self) -> String {
        let map = |m: &BTreeMap<String, i64>| {
            if m.is_empty() {
                "无".to_string()
            } else {
                m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join("，")
            }
        };
        let list = |v: &[String]| if v.is_empty() { "无".to_string() } else { v.join("；") };
        format!(
            "日报告 {date} · 闸口 {gate}（{community}）{zero}\n\
             通行记录 {total} 条：{verdicts}\n\
             人员类别：{categories}\n\
             方向：{directions}\n\
             原因：{reasons}\n\
             车辆 {vehicles}，发热 {fevers}，红码 {red}，黄码 {yellow}，紧急通行 {emergency}\n\
             口罩确认：自动 {mask_auto}，人工 {mask_manual}\n\
             设备故障：{faults}\n\
             离线：{offline}\n\
             体温计自检：{check}\n",
            date = self.date,
            gate = self.gate,
            community = self.community,
            zero = if self.zero_report { " · 零报告（无异常）" } else { "" },
            total = self.total,
            verdicts = map(&self.by_verdict),
            categories = map(&self.by_category),
            directions = map(&self.by_direction),
            reasons = map(&self.by_reason),
            vehicles = self.vehicles,
            fevers = self.fevers,
            red = self.red_codes,
            yellow = self.yellow_codes,
            emergency = self.emergency_passages,
            mask_auto = self.mask_by_camera,
            mask_manual = self.mask_by_operator,
            faults = list(&self.device_faults),
            offline = list(&self.offline),
            check = list(&self.thermometer_self_check),
        )
    }

    /// One row per counted item (`gate,date,section,key,count`), for CSV or XLSX.
    pub fn to_table(&self) -> crate::table::Table {
        use crate::table::Cell;
        let mut t = crate::table::Table::new("日报", &["gate", "date", "section", "key", "count"]);
        let mut row = |section: &str, key: &str, n: i64| {
            t.rows.push(vec![
                self.gate.clone().into(),
                self.date.clone().into(),
                section.into(),
                key.into(),
                Cell::Int(n),
            ]);
        };
        row("total", "", self.total);
        for (section, m) in [
            ("verdict", &self.by_verdict),
            ("category", &self.by_category),
            ("reason", &self.by_reason),
            ("direction", &self.by_direction),
        ] {
            for (k, v) in m {
                row(section, k, *v);
            }
        }
        row("vehicles", "", self.vehicles);
        row("fevers", "", self.fevers);
        row("red_codes", "", self.red_codes);
        row("yellow_codes", "", self.yellow_codes);
        row("emergency_passages", "", self.emergency_passages);
        row("mask_by_camera", "", self.mask_by_camera);
        row("mask_by_operator", "", self.mask_by_operator);
        row("device_faults", "", self.device_faults.len() as i64);
        row("zero_report", "", i64::from(self.zero_report));
        t
    }
}

/// `sibi report --config F [--date D] [--json] [--out FILE] [--queue]`: prints the day's report (text, or JSON),
/// writes it to `out` (XLSX or CSV by extension) and queues it for the office when asked.
pub fn command(
    config: &std::path::Path,
    date: Option<String>,
    json: bool,
    out: Option<&std::path::Path>,
    queue: bool,
) -> crate::cli::Outcome {
    use crate::cli::Failure;
    let usage = |e: &dyn std::fmt::Display| Failure::Usage(e.to_string());
    let config = crate::config::load(config).map_err(|e| usage(&e))?;
    let date = date.unwrap_or_else(|| crate::hw::now().to_rfc3339()[..10].to_string());
    let mut store = Store::open(&config.db_path, &config.gate.id).map_err(|e| usage(&e))?;
    let r = daily(&store, &config.gate.id, &config.gate.community, &date)
        .map_err(|e| usage(&e))?
        .ok_or_else(|| Failure::usage(format!("--date `{date}`: give a day as YYYY-MM-DD")))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    } else {
        print!("{}", r.to_text());
    }
    if let Some(file) = out {
        r.to_table().write(file).map_err(Failure::Usage)?;
    }
    if queue {
        crate::sync::queue_report(&mut store, &config.gate.id, &config.gate.community, &date)
            .map_err(Failure::Usage)?;
        eprintln!("queued for the office");
    }
    Ok(())
}

//! `sibi office export`: entries and daily reports for a date range as CSV or XLSX. Personal data is opened here,
//! and only here, with the office's secret sealing key; without it (or for a record it cannot open) the masked forms
//! are written and the row says so.

use crate::domain::Timestamp;
use crate::table::{Cell, Table};

use super::db::StoredReport;

fn verdict_zh(v: &str) -> &str {
    match v {
        "pass" => "通行",
        "deny" => "禁止",
        "refer" => "请处理",
        other => other,
    }
}

/// The entries as a sheet, opening sealed personal data with `secret` where given.
pub fn entries_table(rows: &[serde_json::Value], secret: Option<&crypto_box::SecretKey>) -> Table {
    let mut t = Table::new(
        "通行记录",
        &[
            "闸口",
            "序号",
            "时间",
            "方向",
            "类别",
            "结论",
            "规则",
            "说明",
            "体温",
            "健康码",
            "口罩",
            "姓名",
            "电话",
            "身份证号",
            "住址",
            "去向",
            "事由",
            "紧急通行",
            "个人信息",
        ],
    );
    for row in rows {
        let text = |k: &str| row.get(k).and_then(serde_json::Value::as_str).unwrap_or("").to_string();
        let int = |k: &str| row.get(k).and_then(serde_json::Value::as_i64);
        let sealed = row.get("personal_sealed").and_then(serde_json::Value::as_str);
        let opened = match (sealed, secret) {
            (Some(s), Some(k)) => Some(crate::privacy::unseal(k, s)),
            _ => None,
        };
        let address = match &opened {
            Some(Ok(p)) => p.address.clone().unwrap_or_default(),
            _ => String::new(),
        };
        let (name, phone, id, note) = match opened {
            Some(Ok(p)) => (p.name, p.phone.unwrap_or_default(), p.id_number.unwrap_or_default(), "已解密".to_string()),
            Some(Err(e)) => {
                tracing::warn!(gate = %text("gate_id"), seq = int("seq"), error = %e, "a sealed record did not open");
                (text("holder_masked"), text("phone_masked"), text("id_masked"), "无法解密（仅掩码）".to_string())
            }
            None if sealed.is_some() => {
                (text("holder_masked"), text("phone_masked"), text("id_masked"), "未解密（无私钥）".to_string())
            }
            None => (text("holder_masked"), text("phone_masked"), text("id_masked"), String::new()),
        };
        t.rows.push(vec![
            text("gate_id").into(),
            int("seq").map_or(Cell::Empty, Cell::Int),
            int("at_ms").map_or(Cell::Empty, |m| Cell::Text(Timestamp(m).to_rfc3339())),
            text("direction").into(),
            text("category").into(),
            verdict_zh(&text("verdict")).into(),
            text("rule").into(),
            text("message_zh").into(),
            int("temperature_centi").map_or(Cell::Empty, |c| Cell::Num(c as f64 / 100.0)),
            text("code").into(),
            text("mask").into(),
            name.into(),
            phone.into(),
            id.into(),
            address.into(),
            text("destination").into(),
            text("visit_reason").into(),
            text("emergency").into(),
            note.into(),
        ]);
    }
    t
}

/// The daily reports as a sheet: one row per gate and day, with when it arrived and whether that was on time.
pub fn reports_table(reports: &[StoredReport], due_hour: u8) -> Table {
    let mut t = Table::new(
        "日报",
        &[
            "日期",
            "闸口",
            "小区",
            "总人次",
            "通行",
            "禁止",
            "请处理",
            "车辆",
            "发热",
            "红码",
            "黄码",
            "紧急通行",
            "设备故障",
            "离线",
            "体温计自检",
            "零报告",
            "到达时间",
            "报送",
        ],
    );
    for r in reports {
        let Ok(d) = serde_json::from_str::<crate::report::DailyReport>(&r.body) else {
            tracing::warn!(gate = %r.gate, date = %r.date, "a stored report does not parse; skipped");
            continue;
        };
        let due = crate::report::day_bounds(&r.date).map(|(start, _)| start.plus_ms(i64::from(due_hour) * 3_600_000));
        let on_time = due.is_some_and(|due| r.first_received_ms <= due.0);
        let verdict = |k: &str| Cell::Int(d.by_verdict.get(k).copied().unwrap_or(0));
        t.rows.push(vec![
            r.date.clone().into(),
            r.gate.clone().into(),
            d.community.clone().into(),
            Cell::Int(d.total),
            verdict("pass"),
            verdict("deny"),
            verdict("refer"),
            Cell::Int(d.vehicles),
            Cell::Int(d.fevers),
            Cell::Int(d.red_codes),
            Cell::Int(d.yellow_codes),
            Cell::Int(d.emergency_passages),
            Cell::Int(d.device_faults.len() as i64),
            d.offline.join("；").into(),
            d.thermometer_self_check.join("；").into(),
            (if d.zero_report { "是" } else { "否" }).into(),
            Timestamp(r.first_received_ms).to_rfc3339().into(),
            (if on_time { "按时" } else { "迟报" }).into(),
        ]);
    }
    t
}

/// Roll-ups as a sheet (any level): one row per day and unit — a street's gates, a district's streets, the city's
/// districts — counts only.
pub fn rollups_table(rollups: &[super::rollup::RollUp]) -> Table {
    let mut t = Table::new(
        "汇总",
        &[
            "日期",
            "单位",
            "名称",
            "上报",
            "闸口",
            "总人次",
            "通行",
            "禁止",
            "请处理",
            "按时",
            "迟报",
            "漏报",
            "零报告",
            "车辆",
            "发热",
            "红码",
            "黄码",
            "紧急通行",
            "设备故障",
            "离线",
            "待办问题",
            "隔夜未结",
        ],
    );
    for r in rollups {
        for u in &r.units {
            let f = &u.figures;
            let verdict = |k: &str| Cell::Int(f.by_verdict.get(k).copied().unwrap_or(0));
            t.rows.push(vec![
                r.date.clone().into(),
                u.id.clone().into(),
                u.name.clone().into(),
                if u.reported { "是" } else { "未上报" }.to_string().into(),
                Cell::Int(f.gates),
                Cell::Int(f.total),
                verdict("pass"),
                verdict("deny"),
                verdict("refer"),
                Cell::Int(f.on_time),
                Cell::Int(f.late),
                Cell::Int(f.missing),
                Cell::Int(f.zero_reports),
                Cell::Int(f.vehicles),
                Cell::Int(f.fevers),
                Cell::Int(f.red_codes),
                Cell::Int(f.yellow_codes),
                Cell::Int(f.emergency_passages),
                Cell::Int(f.device_faults),
                Cell::Int(f.offline_periods),
                Cell::Int(f.open_problems),
                Cell::Int(f.overnight_problems),
            ]);
        }
    }
    t
}

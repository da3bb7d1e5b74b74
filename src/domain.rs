//! The vocabulary every other module speaks: tiers, directions, categories, code states, temperatures, verdicts,
//! and the masking helpers that keep personal data out of logs.
//!
//! Nothing here does I/O. Enum values serialize in `snake_case`, exactly as the `sibi decide` contract spells them
//! (DESIGN.md §6).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The community's risk tier (低/中/高风险), set by the street office.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// 低风险: 外防输入.
    Low,
    /// 中风险: 外防输入、内防扩散.
    Medium,
    /// 高风险: 内防扩散、外防输出、严格管控.
    High,
}

impl Tier {
    /// Every tier, lowest first.
    pub const ALL: [Tier; 3] = [Tier::Low, Tier::Medium, Tier::High];

    /// The stable lowercase name used in rule ids, config and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Low => "low",
            Tier::Medium => "medium",
            Tier::High => "high",
        }
    }

    /// The Chinese name shown to operators.
    pub fn zh(self) -> &'static str {
        match self {
            Tier::Low => "低风险",
            Tier::Medium => "中风险",
            Tier::High => "高风险",
        }
    }
}

/// Which way the person or vehicle is going through the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Entering the compound.
    In,
    /// Leaving the compound.
    Out,
}

impl Direction {
    /// Both directions.
    pub const ALL: [Direction; 2] = [Direction::In, Direction::Out];

    /// The stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// Who the person (or vehicle) is, as far as the tier table is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// 居民.
    Resident,
    /// 访客.
    Visitor,
    /// 快递/外卖.
    Courier,
    /// 复工人员.
    WorkResumption,
    /// 社区工作者、志愿者、医务、保供人员 on duty.
    Service,
    /// 急症/发热病人就医、孕产妇、救护车.
    Emergency,
}

impl Category {
    /// Every category.
    pub const ALL: [Category; 6] = [
        Category::Resident,
        Category::Visitor,
        Category::Courier,
        Category::WorkResumption,
        Category::Service,
        Category::Emergency,
    ];

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Resident => "resident",
            Category::Visitor => "visitor",
            Category::Courier => "courier",
            Category::WorkResumption => "work_resumption",
            Category::Service => "service",
            Category::Emergency => "emergency",
        }
    }

    /// The Chinese name shown to operators.
    pub fn zh(self) -> &'static str {
        match self {
            Category::Resident => "居民",
            Category::Visitor => "访客",
            Category::Courier => "快递外卖",
            Category::WorkResumption => "复工人员",
            Category::Service => "工作人员",
            Category::Emergency => "紧急",
        }
    }
}

/// How the person's identity was established (身份必问).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// A community pass (居民通行证) signed by the community office.
    Pass,
    /// A provincial health code (健康码).
    HealthCode,
    /// An international certificate (EU DCC).
    Dcc,
    /// A resident ID card (or residence card) tapped on the reader.
    IdCard,
    /// Registered by hand by the operator (the offline lane).
    Manual,
    /// Nothing presented yet.
    None,
}

impl IdentityKind {
    /// Every identity kind.
    pub const ALL: [IdentityKind; 6] = [
        IdentityKind::Pass,
        IdentityKind::HealthCode,
        IdentityKind::Dcc,
        IdentityKind::IdCard,
        IdentityKind::Manual,
        IdentityKind::None,
    ];

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Pass => "pass",
            IdentityKind::HealthCode => "health_code",
            IdentityKind::Dcc => "dcc",
            IdentityKind::IdCard => "id_card",
            IdentityKind::Manual => "manual",
            IdentityKind::None => "none",
        }
    }
}

/// The state of a health code (or of a certificate's verification).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeStatus {
    /// 绿码.
    Green,
    /// 黄码.
    Yellow,
    /// 红码.
    Red,
    /// The code or certificate has expired.
    Expired,
    /// The issuer does not know the code.
    NotFound,
    /// Verification failed (bad signature, garbled code).
    Failed,
    /// The online check timed out.
    Timeout,
    /// Not verified online (network down): the operator must look at the phone.
    Unverified,
    /// No code was presented.
    None,
}

impl CodeStatus {
    /// Every status.
    pub const ALL: [CodeStatus; 9] = [
        CodeStatus::Green,
        CodeStatus::Yellow,
        CodeStatus::Red,
        CodeStatus::Expired,
        CodeStatus::NotFound,
        CodeStatus::Failed,
        CodeStatus::Timeout,
        CodeStatus::Unverified,
        CodeStatus::None,
    ];

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CodeStatus::Green => "green",
            CodeStatus::Yellow => "yellow",
            CodeStatus::Red => "red",
            CodeStatus::Expired => "expired",
            CodeStatus::NotFound => "not_found",
            CodeStatus::Failed => "failed",
            CodeStatus::Timeout => "timeout",
            CodeStatus::Unverified => "unverified",
            CodeStatus::None => "none",
        }
    }
}

/// Whether a mask is worn (口罩必戴).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskState {
    /// Worn (detected or confirmed by the operator).
    Worn,
    /// Not worn.
    NotWorn,
    /// Nobody has checked yet.
    Unchecked,
}

impl MaskState {
    /// Every mask state.
    pub const ALL: [MaskState; 3] = [MaskState::Worn, MaskState::NotWorn, MaskState::Unchecked];

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            MaskState::Worn => "worn",
            MaskState::NotWorn => "not_worn",
            MaskState::Unchecked => "unchecked",
        }
    }
}

/// What the camera's mask judge saw on a face (口罩必戴 by machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskSeen {
    /// A mask, confidently: meets the must by machine.
    Worn,
    /// No mask (or one below the nose): the person is asked to put it on.
    NotWorn,
    /// Not sure: the operator confirms, as without a camera.
    Unsure,
}

impl MaskSeen {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            MaskSeen::Worn => "worn",
            MaskSeen::NotWorn => "not_worn",
            MaskSeen::Unsure => "unsure",
        }
    }
}

/// How the mask must was met (or refused): by the camera, with the mask probability, or by the operator.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaskBy {
    /// The camera's judge, with its score (0..1).
    Detected(f32),
    /// The operator (console or button).
    Operator,
}

impl MaskBy {
    /// The stored name: `detected` or `operator`.
    pub fn as_str(self) -> &'static str {
        match self {
            MaskBy::Detected(_) => "detected",
            MaskBy::Operator => "operator",
        }
    }

    /// The score, when detected.
    pub fn score(self) -> Option<f32> {
        match self {
            MaskBy::Detected(s) => Some(s),
            MaskBy::Operator => None,
        }
    }
}

/// A temperature in hundredths of a degree Celsius.
///
/// Whole hundredths make the band edges exact: 37.29 is below a 37.30 threshold, 42.51 is above the 42.50 limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Celsius(i32);

impl Celsius {
    /// From hundredths of a degree.
    pub const fn from_centi(centi: i32) -> Celsius {
        Celsius(centi)
    }

    /// From degrees, rounded to the nearest hundredth. `None` for NaN, infinities and absurd magnitudes.
    pub fn from_f64(degrees: f64) -> Option<Celsius> {
        if !degrees.is_finite() || degrees.abs() > 10_000.0 {
            return None;
        }
        Some(Celsius((degrees * 100.0).round() as i32))
    }

    /// Hundredths of a degree.
    pub const fn centi(self) -> i32 {
        self.0
    }

    /// Degrees as a float (for JSON and display).
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

impl fmt::Display for Celsius {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let a = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}℃", a / 100, a % 100)
    }
}

impl Serialize for Celsius {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_f64())
    }
}

/// Milliseconds since the Unix epoch. Time is always an input to the pure core; only the drivers read the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Milliseconds elapsed from `earlier` to `self` (negative if `earlier` is later).
    pub fn since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// `self` plus `ms` milliseconds.
    pub fn plus_ms(self, ms: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }

    /// Parse a date-time as every part of the program reads one ([`Timestamp::parse`]), or `None`.
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        Timestamp::parse(s).ok()
    }

    /// Parse a date-time: RFC 3339 (`2026-11-25T08:00:00+08:00`, `…Z`), and the ISO 8601 forms public test data
    /// writes — an offset without a colon (`2021-07-02T07:38:27+0000`) or with hours only (`+08`), no offset at all
    /// (`2021-06-08T15:57:06.589470`, taken as UTC), fractional seconds of any length.
    pub fn parse(s: &str) -> Result<Timestamp, TimeError> {
        use time::format_description::well_known::Rfc3339;
        let s = s.trim();
        let millis = |t: time::OffsetDateTime| Timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64);
        if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
            return Ok(millis(t));
        }
        let bad = || TimeError(s.chars().take(64).collect());
        // The offset, if any, starts at the last sign after the date (whose own dashes end by index 10).
        let (local, offset) = if let Some(body) = s.strip_suffix(['Z', 'z']) {
            (body, time::UtcOffset::UTC)
        } else {
            match s.char_indices().rev().find(|&(i, c)| i > 10 && (c == '+' || c == '-')) {
                Some((i, _)) => (&s[..i], parse_offset(&s[i..]).ok_or_else(bad)?),
                None => (s, time::UtcOffset::UTC),
            }
        };
        let format = time::macros::format_description!(
            "[year]-[month]-[day][first [T][t][ ]][hour]:[minute]:[second][optional [.[subsecond]]]"
        );
        let local = time::PrimitiveDateTime::parse(local, format).map_err(|_| bad())?;
        Ok(millis(local.assume_offset(offset)))
    }

    /// The moment in UTC+8 (China Standard Time), the zone the street office reads and ID cards' dates are in.
    pub fn china(self) -> time::OffsetDateTime {
        let utc = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        utc.to_offset(time::macros::offset!(+8))
    }

    /// Format as RFC 3339 in UTC+8 (China Standard Time).
    pub fn to_rfc3339(self) -> String {
        self.china().format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| self.0.to_string())
    }
}

/// `+08:00`, `+0800` or `+08` (and the same with `-`).
fn parse_offset(s: &str) -> Option<time::UtcOffset> {
    let sign: i8 = if s.starts_with('-') { -1 } else { 1 };
    let digits: String = s[1..].chars().filter(|c| *c != ':').collect();
    if !(digits.len() == 2 || digits.len() == 4) || !digits.bytes().all(|b| b.is_ascii_digit()) || s[1..].len() > 5 {
        return None;
    }
    let hours: i8 = digits[..2].parse().ok()?;
    let minutes: i8 = if digits.len() == 4 { digits[2..].parse().ok()? } else { 0 };
    time::UtcOffset::from_hms(sign * hours, sign * minutes, 0).ok()
}

/// A date-time in none of the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a date-time: give RFC 3339 (2026-11-25T08:00:00+08:00 or …Z), or ISO 8601 with the offset \
     written +0800 or left out (UTC), seconds optionally with a fraction (2021-06-08T15:57:06.589470)"
)]
pub struct TimeError(pub String);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// The outcome at the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// 通行: the gate opens.
    Pass,
    /// 请处理: an operator must act (register, re-measure, check a colour...).
    Refer,
    /// 禁止: the gate stays closed.
    Deny,
}

impl Verdict {
    /// The stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Refer => "refer",
            Verdict::Deny => "deny",
        }
    }

    /// The word on the operator's panel.
    pub fn zh(self) -> &'static str {
        match self {
            Verdict::Pass => "通行",
            Verdict::Refer => "请处理",
            Verdict::Deny => "禁止",
        }
    }

    /// How severe the verdict is: deny > refer > pass. Used to combine several people into one outcome.
    pub fn severity(self) -> u8 {
        match self {
            Verdict::Pass => 0,
            Verdict::Refer => 1,
            Verdict::Deny => 2,
        }
    }
}

/// 身份必问: was identity established?
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityMust {
    /// A credential was read or the person was registered.
    Asked,
    /// Nothing yet.
    Missing,
}

/// 体温必测: the state of the temperature must.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemperatureMust {
    /// A fresh, plausible reading below the threshold.
    Normal,
    /// A fresh, plausible reading at or above the threshold.
    Fever,
    /// A reading outside 34.0–42.5 ℃ (a measuring error).
    Invalid,
    /// No reading, or one too old to belong to this person.
    Missing,
}

/// The state of three of the four musts for one person. The fourth, 信息必录, is set by the store when the row is
/// written (see [`crate::store`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Musts {
    /// 身份必问.
    pub identity: IdentityMust,
    /// 体温必测.
    pub temperature: TemperatureMust,
    /// 口罩必戴.
    pub mask: MaskState,
}

impl Musts {
    /// True when identity is asked, the temperature is normal and the mask is worn.
    pub fn all_hold(&self) -> bool {
        self.identity == IdentityMust::Asked
            && self.temperature == TemperatureMust::Normal
            && self.mask == MaskState::Worn
    }
}

/// Mask a Chinese name for display: keep the first character and, for three or more, the last (张*三, 李*).
pub fn mask_name(name: &str) -> String {
    let chars: Vec<char> = name.trim().chars().collect();
    match chars.len() {
        0 => String::new(),
        1 => "*".to_string(),
        2 => format!("{}*", chars[0]),
        n => format!("{}{}{}", chars[0], "*".repeat(n - 2), chars[n - 1]),
    }
}

/// GB 11643-1999 (ISO 7064 MOD 11-2): the 18th character of a resident ID number from its first 17 digits.
pub fn id_check_char(first17: &str) -> Option<char> {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    if first17.len() != 17 || !first17.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sum: u32 = first17.bytes().zip(WEIGHTS).map(|(b, w)| u32::from(b - b'0') * w).sum();
    Some(char::from(b"10X98765432"[(sum % 11) as usize]))
}

/// The 18-character number for `first17` with its check character (for simulated cards and tests, which give
/// only the first 17 digits so that no full number is written anywhere by hand).
pub fn complete_id(first17: &str) -> Option<String> {
    id_check_char(first17).map(|c| format!("{first17}{c}"))
}

/// Mask a resident ID number: keep the first four and the last four characters (4201**********1234).
pub fn mask_id_number(id: &str) -> String {
    let chars: Vec<char> = id.trim().chars().collect();
    let n = chars.len();
    if n <= 8 {
        return "*".repeat(n);
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[n - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(n - 8))
}

/// Mask a phone number: keep the first three and the last four digits (138****5678).
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.trim().chars().collect();
    let n = chars.len();
    if n <= 7 {
        return "*".repeat(n);
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[n - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(n - 7))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn celsius_rounds_to_hundredths_at_band_edges() {
        assert_eq!(Celsius::from_f64(37.29).unwrap().centi(), 3729);
        assert_eq!(Celsius::from_f64(37.3).unwrap().centi(), 3730);
        assert_eq!(Celsius::from_f64(42.51).unwrap().centi(), 4251);
        assert_eq!(Celsius::from_f64(34.0).unwrap().centi(), 3400);
        assert_eq!(Celsius::from_f64(f64::NAN), None);
        assert_eq!(Celsius::from_f64(f64::INFINITY), None);
        assert_eq!(Celsius::from_centi(3655).to_string(), "36.55℃");
        assert_eq!(Celsius::from_centi(-5).to_string(), "-0.05℃");
    }

    #[test]
    fn masking_keeps_only_the_edges() {
        assert_eq!(mask_name("张三丰"), "张*丰");
        assert_eq!(mask_name("李四"), "李*");
        assert_eq!(mask_name("欧阳娜娜"), "欧**娜");
        assert_eq!(mask_name(""), "");
        assert_eq!(mask_id_number(&format!("4201{}1234", "0".repeat(10))), "4201**********1234");
        assert_eq!(mask_phone("13800000000"), "138****0000");
        assert_eq!(mask_phone("12345"), "*****");
    }

    #[test]
    fn timestamps_round_trip_through_rfc3339_in_china_time() {
        let t = Timestamp::parse_rfc3339("2026-11-25T08:00:00+08:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-25T08:00:00+08:00");
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
        assert_eq!(t.plus_ms(1500).since(t), 1500);
    }

    #[test]
    fn one_parser_reads_rfc_3339_and_the_iso_8601_forms_of_public_test_data() {
        let at = |s: &str| Timestamp::parse(s).map(|t| t.0);
        let utc = Timestamp::parse("2021-07-02T07:38:27Z").unwrap().0;
        // The EU DCC test data's own clock strings.
        assert_eq!(at("2021-07-02T07:38:27+0000"), Ok(utc));
        assert_eq!(at("2021-07-02T07:38:27+00:00"), Ok(utc));
        assert_eq!(at("2021-07-02T07:38:27"), Ok(utc), "no offset is UTC");
        assert_eq!(at("2021-07-02T15:38:27+0800"), Ok(utc));
        assert_eq!(at("2021-07-02T15:38:27+08"), Ok(utc));
        assert_eq!(at("2021-07-02T02:38:27-0500"), Ok(utc));
        assert_eq!(at("2021-07-02 07:38:27"), Ok(utc), "a space for the T");
        let frac = Timestamp::parse("2021-06-08T15:57:06.589470").unwrap();
        assert_eq!(frac.0 % 1000, 589);
        assert_eq!(Timestamp::parse("2021-06-08T15:57:06.589470Z"), Ok(frac));
        for bad in [
            "yesterday",
            "2021-06-08",
            "2021-06-08T25:00:00",
            "2021-06-08T15:57:06+8",
            "2021-06-08T15:57:06+08:00:00",
            "",
        ] {
            let e = Timestamp::parse(bad).unwrap_err().to_string();
            assert!(e.contains("RFC 3339") && e.contains("+0800"), "{bad}: {e}");
        }
    }
}

//! The card's 256-byte text block (UTF-16LE, fields padded with spaces), for the four card types: the resident ID
//! card, the residence permit for Hong Kong, Macau and Taiwan residents (`J` at byte 248), and the foreigner's
//! permanent residence cards of 2017 (`I`) and 2023 (`Y`). Pure and total: any 256 bytes give a card or an error,
//! never a panic (fuzzed: `fuzz/fuzz_targets/idcard_text.rs`). The photo is not part of it and is never decoded.

use std::fmt;

/// The text block's length.
pub const TEXT_LEN: usize = 256;

/// Which card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardKind {
    /// 居民身份证.
    Resident,
    /// 港澳台居民居住证 (`J`).
    HkMoTw,
    /// 外国人永久居留身份证, 2017 (`I`).
    Foreign2017,
    /// 外国人永久居留身份证, 2023 (`Y`).
    Foreign2023,
}

impl CardKind {
    /// The stable name (DESIGN.md §6).
    pub fn as_str(self) -> &'static str {
        match self {
            CardKind::Resident => "resident",
            CardKind::HkMoTw => "hk_mo_tw",
            CardKind::Foreign2017 => "foreign_2017",
            CardKind::Foreign2023 => "foreign_2023",
        }
    }

    /// The Chinese name, for the operator.
    pub fn zh(self) -> &'static str {
        match self {
            CardKind::Resident => "居民身份证",
            CardKind::HkMoTw => "港澳台居民居住证",
            CardKind::Foreign2017 | CardKind::Foreign2023 => "外国人永久居留身份证",
        }
    }
}

/// Sex (GB/T 2261.1 codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sex {
    /// 0 未知的性别.
    Unknown,
    /// 1 男.
    Male,
    /// 2 女.
    Female,
    /// 9 未说明的性别.
    Unstated,
}

impl Sex {
    fn from_code(c: &str) -> Option<Sex> {
        match c {
            "0" => Some(Sex::Unknown),
            "1" => Some(Sex::Male),
            "2" => Some(Sex::Female),
            "9" => Some(Sex::Unstated),
            _ => None,
        }
    }

    /// 男, 女, 未知, 未说明.
    pub fn zh(self) -> &'static str {
        match self {
            Sex::Unknown => "未知",
            Sex::Male => "男",
            Sex::Female => "女",
            Sex::Unstated => "未说明",
        }
    }
}

/// GB 3304 nation names by code (01–56; 97 其他; 98 外国血统中国籍人士), as printed on the card.
pub fn nation(code: &str) -> Option<&'static str> {
    const NATIONS: [&str; 56] = [
        "汉",
        "蒙古",
        "回",
        "藏",
        "维吾尔",
        "苗",
        "彝",
        "壮",
        "布依",
        "朝鲜",
        "满",
        "侗",
        "瑶",
        "白",
        "土家",
        "哈尼",
        "哈萨克",
        "傣",
        "黎",
        "傈僳",
        "佤",
        "畲",
        "高山",
        "拉祜",
        "水",
        "东乡",
        "纳西",
        "景颇",
        "柯尔克孜",
        "土",
        "达斡尔",
        "仫佬",
        "羌",
        "布朗",
        "撒拉",
        "毛南",
        "仡佬",
        "锡伯",
        "阿昌",
        "普米",
        "塔吉克",
        "怒",
        "乌孜别克",
        "俄罗斯",
        "鄂温克",
        "德昂",
        "保安",
        "裕固",
        "京",
        "塔塔尔",
        "独龙",
        "鄂伦春",
        "赫哲",
        "门巴",
        "珞巴",
        "基诺",
    ];
    if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match code.parse::<usize>().ok()? {
        n @ 1..=56 => Some(NATIONS[n - 1]),
        97 => Some("其他"),
        98 => Some("外国血统中国籍人士"),
        _ => None,
    }
}

/// A calendar date as the card writes it (YYYYMMDD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ymd {
    /// Year.
    pub year: u16,
    /// Month, 1–12.
    pub month: u8,
    /// Day, 1–31.
    pub day: u8,
}

impl Ymd {
    /// Parse `YYYYMMDD` (a real calendar date).
    pub fn parse(s: &str) -> Option<Ymd> {
        if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (year, month, day) = (s[..4].parse().ok()?, s[4..6].parse().ok()?, s[6..].parse().ok()?);
        let month_enum = time::Month::try_from(month).ok()?;
        time::Date::from_calendar_date(i32::from(year), month_enum, day).ok()?;
        Some(Ymd { year, month, day })
    }
}

impl From<time::Date> for Ymd {
    fn from(d: time::Date) -> Ymd {
        Ymd { year: d.year().clamp(0, 9999) as u16, month: u8::from(d.month()), day: d.day() }
    }
}

impl fmt::Display for Ymd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// The end of validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidTo {
    /// A date (the last day of validity).
    Date(Ymd),
    /// 长期 (a long-term card).
    LongTerm,
}

impl fmt::Display for ValidTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValidTo::Date(d) => d.fmt(f),
            ValidTo::LongTerm => f.write_str("长期"),
        }
    }
}

/// One card's text, decoded. Holds personal data in clear: it lives only between the reader and the sealing store,
/// and its `Debug` masks the name, number and address.
#[derive(Clone, PartialEq, Eq)]
pub struct IdCard {
    /// Which card.
    pub kind: CardKind,
    /// The name in Chinese (may be empty on a foreigner's card).
    pub name: String,
    /// The English name (foreigners' cards), inner spaces kept.
    pub name_en: Option<String>,
    /// Sex.
    pub sex: Sex,
    /// The nation (resident cards only).
    pub nation: Option<&'static str>,
    /// The nationality code (foreigners' cards, e.g. `CAN`).
    pub nationality: Option<String>,
    /// Date of birth.
    pub birth: Ymd,
    /// The address (resident and HK/Macau/Taiwan cards).
    pub address: String,
    /// The ID number (18 characters; the 2017 foreigner's card: the 15-character permit number).
    pub id_number: String,
    /// Whether the number's check character is right (GB 11643; the 2017 foreigner's card: its format).
    pub id_check: bool,
    /// The issuing authority (or its code).
    pub authority: String,
    /// Valid from.
    pub valid_from: Ymd,
    /// Valid to.
    pub valid_to: ValidTo,
    /// The HK/Macau/Taiwan pass number (J cards).
    pub pass_number: Option<String>,
}

impl fmt::Debug for IdCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdCard")
            .field("kind", &self.kind)
            .field("name", &self.masked_name())
            .field("id", &self.masked_id())
            .field("valid_to", &self.valid_to)
            .finish_non_exhaustive()
    }
}

impl IdCard {
    /// The name to show: the Chinese one, or the English one where there is none.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() { self.name_en.as_deref().unwrap_or("") } else { &self.name }
    }

    /// 王*英.
    pub fn masked_name(&self) -> String {
        crate::domain::mask_name(self.display_name())
    }

    /// 1101**********0012.
    pub fn masked_id(&self) -> String {
        crate::domain::mask_id_number(&self.id_number)
    }

    /// Expired on `today` (the day after the last valid day). A long-term card never expires.
    pub fn expired(&self, today: Ymd) -> bool {
        matches!(self.valid_to, ValidTo::Date(d) if d < today)
    }

    /// Not yet valid on `today`.
    pub fn not_yet_valid(&self, today: Ymd) -> bool {
        self.valid_from > today
    }
}

/// Why a text block is not a card.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// Not 256 bytes.
    #[error("the text block is {0} bytes, not 256")]
    Length(usize),
    /// A field is not valid UTF-16.
    #[error("field `{0}` is not valid UTF-16")]
    Encoding(&'static str),
    /// A date field is no date.
    #[error("field `{0}` is not a date")]
    Date(&'static str),
    /// The sex code is none of 0, 1, 2, 9.
    #[error("unknown sex code")]
    Sex,
    /// The card type byte is none of space, J, I, Y.
    #[error("unknown card type byte {0:#04x}")]
    Kind(u8),
    /// The ID number is missing or malformed.
    #[error("the ID number is malformed")]
    Number,
}

/// A field: UTF-16LE, padding (spaces, NULs) trimmed at the end only, so inner spaces (English names) stay.
fn field(text: &[u8], at: usize, len: usize, name: &'static str) -> Result<String, TextError> {
    let units: Vec<u16> = text[at..at + len].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    let s = String::from_utf16(&units).map_err(|_| TextError::Encoding(name))?;
    let s = s.trim_end_matches([' ', '\0', '\u{3000}']).trim_start_matches('\0');
    if s.chars().any(|c| c.is_control()) {
        return Err(TextError::Encoding(name));
    }
    Ok(s.to_string())
}

fn date(text: &[u8], at: usize, name: &'static str) -> Result<Ymd, TextError> {
    Ymd::parse(&field(text, at, 16, name)?).ok_or(TextError::Date(name))
}

fn valid_to(text: &[u8]) -> Result<ValidTo, TextError> {
    let s = field(text, 204, 16, "valid_to")?;
    if s == "长期" {
        return Ok(ValidTo::LongTerm);
    }
    Ymd::parse(&s).map(ValidTo::Date).ok_or(TextError::Date("valid_to"))
}

/// True when `id` is 18 characters whose last is the GB 11643 check character of the first 17 digits.
pub fn id_number_ok(id: &str) -> bool {
    id.len() == 18
        && crate::domain::id_check_char(&id[..17]).is_some_and(|c| id[17..].eq_ignore_ascii_case(&c.to_string()))
}

/// The 2017 foreigner's permit number: three letters (nationality) and twelve digits.
fn permit_2017_ok(id: &str) -> bool {
    id.len() == 15 && id[..3].bytes().all(|b| b.is_ascii_uppercase()) && id[3..].bytes().all(|b| b.is_ascii_digit())
}

/// Decode a 256-byte text block.
pub fn decode(text: &[u8]) -> Result<IdCard, TextError> {
    if text.len() != TEXT_LEN {
        return Err(TextError::Length(text.len()));
    }
    let kind = match (text[248], text[249]) {
        (b' ', 0) | (0, 0) => CardKind::Resident,
        (b'J', 0) => CardKind::HkMoTw,
        (b'I', 0) => CardKind::Foreign2017,
        (b'Y', 0) => CardKind::Foreign2023,
        (b, _) => return Err(TextError::Kind(b)),
    };
    let sex_at = if kind == CardKind::Foreign2017 { 120 } else { 30 };
    let sex = Sex::from_code(&field(text, sex_at, 2, "sex")?).ok_or(TextError::Sex)?;
    let card = match kind {
        CardKind::Resident | CardKind::HkMoTw => {
            let id_number = field(text, 122, 36, "id_number")?;
            let nation_code = field(text, 32, 4, "nation")?;
            IdCard {
                kind,
                name: field(text, 0, 30, "name")?,
                name_en: None,
                sex,
                nation: if kind == CardKind::Resident { nation(&nation_code) } else { None },
                nationality: None,
                birth: date(text, 36, "birth")?,
                address: field(text, 52, 70, "address")?,
                id_check: id_number_ok(&id_number),
                id_number,
                authority: field(text, 158, 30, "authority")?,
                valid_from: date(text, 188, "valid_from")?,
                valid_to: valid_to(text)?,
                pass_number: if kind == CardKind::HkMoTw {
                    Some(field(text, 220, 18, "pass_number")?).filter(|p| !p.is_empty())
                } else {
                    None
                },
            }
        }
        CardKind::Foreign2017 => {
            let id_number = field(text, 122, 30, "id_number")?;
            IdCard {
                kind,
                name: field(text, 158, 30, "name")?,
                name_en: Some(field(text, 0, 120, "name_en")?).filter(|n| !n.is_empty()),
                sex,
                nation: None,
                nationality: Some(field(text, 152, 6, "nationality")?).filter(|n| !n.is_empty()),
                birth: date(text, 220, "birth")?,
                address: String::new(),
                id_check: permit_2017_ok(&id_number),
                id_number,
                authority: field(text, 240, 8, "authority")?,
                valid_from: date(text, 188, "valid_from")?,
                valid_to: valid_to(text)?,
                pass_number: None,
            }
        }
        CardKind::Foreign2023 => {
            let id_number = field(text, 122, 36, "id_number")?;
            IdCard {
                kind,
                name: field(text, 0, 30, "name")?,
                name_en: Some(field(text, 52, 70, "name_en")?).filter(|n| !n.is_empty()),
                sex,
                nation: None,
                nationality: Some(field(text, 242, 6, "nationality")?).filter(|n| !n.is_empty()),
                birth: date(text, 36, "birth")?,
                address: String::new(),
                id_check: id_number_ok(&id_number),
                id_number,
                authority: String::new(),
                valid_from: date(text, 188, "valid_from")?,
                valid_to: valid_to(text)?,
                pass_number: None,
            }
        }
    };
    if card.id_number.is_empty() || !card.id_number.is_ascii() {
        return Err(TextError::Number);
    }
    Ok(card)
}

/// Builds text blocks (for the simulated reader, the tests and the benchmark): fields written UTF-16LE and padded
/// with spaces, as a card holds them.
#[derive(Debug, Clone)]
pub struct TextBuilder {
    bytes: [u8; TEXT_LEN],
}

impl TextBuilder {
    /// A block of spaces with the card type byte for `kind`.
    pub fn new(kind: CardKind) -> TextBuilder {
        let mut bytes = [0u8; TEXT_LEN];
        for c in bytes.chunks_exact_mut(2) {
            c.copy_from_slice(&[b' ', 0]);
        }
        bytes[248] = match kind {
            CardKind::Resident => b' ',
            CardKind::HkMoTw => b'J',
            CardKind::Foreign2017 => b'I',
            CardKind::Foreign2023 => b'Y',
        };
        TextBuilder { bytes }
    }

    /// The card type byte for `kind` (the resident layout also serves the HK/Macau/Taiwan permit).
    pub fn kind(mut self, kind: CardKind) -> TextBuilder {
        self.bytes[248] = TextBuilder::new(kind).bytes[248];
        self
    }

    /// Write `value` at byte `at` (at most `len` bytes; longer values are cut).
    pub fn put(mut self, at: usize, len: usize, value: &str) -> TextBuilder {
        let units: Vec<u16> = value.encode_utf16().take(len / 2).collect();
        for (i, u) in units.iter().enumerate() {
            self.bytes[at + 2 * i..at + 2 * i + 2].copy_from_slice(&u.to_le_bytes());
        }
        self
    }

    /// A resident card.
    #[allow(clippy::too_many_arguments)]
    pub fn resident(
        name: &str,
        sex: &str,
        nation: &str,
        birth: &str,
        address: &str,
        id: &str,
        from: &str,
        to: &str,
    ) -> TextBuilder {
        TextBuilder::new(CardKind::Resident)
            .put(0, 30, name)
            .put(30, 2, sex)
            .put(32, 4, nation)
            .put(36, 16, birth)
            .put(52, 70, address)
            .put(122, 36, id)
            .put(158, 30, "示范市公安局")
            .put(188, 16, from)
            .put(204, 16, to)
    }

    /// The 256 bytes.
    pub fn build(&self) -> [u8; TEXT_LEN] {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{complete_id, id_check_char as check_char};

    /// A synthetic number from its first 17 digits, with its check character.
    fn id(first17: &str) -> String {
        complete_id(first17).unwrap()
    }

    /// The same number with a wrong check character.
    fn bad_id(first17: &str) -> String {
        let good = check_char(first17).unwrap();
        format!("{first17}{}", if good == '0' { '1' } else { '0' })
    }

    fn resident(id: &str, to: &str) -> [u8; 256] {
        TextBuilder::resident("王秀英", "2", "01", "19900307", "北京市东城区示范街道1号", id, "20200101", to).build()
    }

    #[test]
    fn the_check_digit_follows_gb_11643() {
        // The two synthetic numbers of ID-CARD.md: …0038 and …2176.
        assert_eq!(check_char("11010119900307003"), Some('8'));
        assert_eq!(check_char("11010120231101217"), Some('6'));
        assert!(id_number_ok(&id("11010119900307003")));
        assert!(!id_number_ok(&bad_id("11010119900307003")));
        assert!(!id_number_ok(&format!("{}X", "11010119900307003")), "X where 8 belongs");
        assert!(!id_number_ok("1101011990030700A8"), "letters in the first 17 places");
        assert!(!id_number_ok("11010119900307003"));
        // X (value 10) as a check character, either case.
        let x = (0..1000u32).map(|n| format!("11010119900307{n:03}")).find(|s| check_char(s) == Some('X')).unwrap();
        assert!(id_number_ok(&format!("{x}X")) && id_number_ok(&format!("{x}x")));
    }

    #[test]
    fn a_resident_card_decodes_with_its_tables() {
        let c = decode(&resident(&id("11010119900307003"), "20300101")).unwrap();
        assert_eq!(c.kind, CardKind::Resident);
        assert_eq!((c.name.as_str(), c.sex, c.nation), ("王秀英", Sex::Female, Some("汉")));
        assert_eq!(c.birth.to_string(), "1990-03-07");
        assert_eq!(c.address, "北京市东城区示范街道1号");
        assert!(c.id_check);
        assert_eq!(c.masked_name(), "王*英");
        assert_eq!(c.masked_id(), "1101**********0038");
        assert_eq!(c.valid_to.to_string(), "2030-01-01");
        let today = Ymd::parse("20301231").unwrap();
        assert!(c.expired(today));
        assert!(!c.expired(Ymd::parse("20300101").unwrap()), "valid through its last day");
        let long = decode(&resident(&id("11010119900307003"), "长期")).unwrap();
        assert_eq!(long.valid_to, ValidTo::LongTerm);
        assert!(!long.expired(Ymd::parse("29991231").unwrap()));
        assert!(!decode(&resident(&bad_id("11010119900307003"), "长期")).unwrap().id_check);
        assert!(!format!("{long:?}").contains("王秀英") && !format!("{long:?}").contains("199003070038"));
    }

    #[test]
    fn sex_and_nation_codes_map_each_value() {
        assert_eq!(
            ["0", "1", "2", "9"].map(|c| Sex::from_code(c).unwrap().zh()),
            ["未知", "男", "女", "未说明"],
            "a code other than 1 is not 女"
        );
        assert_eq!(Sex::from_code("3"), None);
        assert_eq!((nation("01"), nation("05"), nation("56")), (Some("汉"), Some("维吾尔"), Some("基诺")));
        assert_eq!((nation("97"), nation("98")), (Some("其他"), Some("外国血统中国籍人士")));
        assert_eq!((nation("00"), nation("57"), nation("1"), nation("ab")), (None, None, None, None));
        let bad_sex =
            TextBuilder::resident("王秀英", "5", "01", "19900307", "x", &id("11010119900307003"), "20200101", "长期");
        assert_eq!(decode(&bad_sex.build()), Err(TextError::Sex));
    }

    #[test]
    fn the_other_three_card_types_decode() {
        let j = TextBuilder::new(CardKind::HkMoTw)
            .put(0, 30, "陈大文")
            .put(30, 2, "1")
            .put(36, 16, "19850505")
            .put(52, 70, "广东省深圳市福田区示范路2号")
            .put(122, 36, &id("81000019850505001"))
            .put(158, 30, "深圳市公安局")
            .put(188, 16, "20220101")
            .put(204, 16, "20270101")
            .put(220, 18, "H12345678")
            .put(238, 4, "01")
            .build();
        let c = decode(&j).unwrap();
        assert_eq!((c.kind, c.nation, c.pass_number.as_deref()), (CardKind::HkMoTw, None, Some("H12345678")));
        assert_eq!(c.id_check, id_number_ok(&id("81000019850505001")));
        let i = TextBuilder::new(CardKind::Foreign2017)
            .put(0, 120, "SMITH JOHN PAUL")
            .put(120, 2, "1")
            .put(122, 30, "CAN110090010016")
            .put(152, 6, "CAN")
            .put(158, 30, "史密斯")
            .put(188, 16, "20200101")
            .put(204, 16, "20300101")
            .put(220, 16, "19900101")
            .put(236, 4, "01")
            .put(240, 8, "1500")
            .build();
        let c = decode(&i).unwrap();
        assert_eq!(c.kind, CardKind::Foreign2017);
        assert_eq!(c.name_en.as_deref(), Some("SMITH JOHN PAUL"), "inner spaces kept");
        assert_eq!(
            (c.name.as_str(), c.nationality.as_deref(), c.birth.to_string()),
            ("史密斯", Some("CAN"), "1990-01-01".into())
        );
        assert!(c.id_check);
        let y = TextBuilder::new(CardKind::Foreign2023)
            .put(0, 30, "")
            .put(30, 2, "2")
            .put(32, 4, "00")
            .put(36, 16, "19920202")
            .put(52, 70, "GARCIA MARIA DE LOS ANGELES")
            .put(122, 36, &id("93200019920202002"))
            .put(188, 16, "20240101")
            .put(204, 16, "20340101")
            .put(242, 6, "ESP")
            .build();
        let c = decode(&y).unwrap();
        assert_eq!(c.kind, CardKind::Foreign2023);
        assert_eq!(c.display_name(), "GARCIA MARIA DE LOS ANGELES");
        assert_eq!(c.masked_name().chars().count(), "GARCIA MARIA DE LOS ANGELES".chars().count());
        assert_eq!(c.id_check, id_number_ok(&id("93200019920202002")));
        assert_eq!(c.sex, Sex::Female);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(decode(&[0u8; 10]), Err(TextError::Length(10)));
        let mut t = resident(&id("11010119900307003"), "20300101");
        t[248] = b'Q';
        assert_eq!(decode(&t), Err(TextError::Kind(b'Q')));
        let mut t = resident(&id("11010119900307003"), "20301301");
        assert_eq!(decode(&t), Err(TextError::Date("valid_to")));
        t = resident(&id("11010119900307003"), "20300101");
        t[1] = 0xD8; // a lone surrogate in the name
        assert_eq!(decode(&t), Err(TextError::Encoding("name")));
        let mut seed = 3u64;
        for _ in 0..5000 {
            let mut b = [0u8; 256];
            for x in &mut b {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                *x = (seed >> 56) as u8;
            }
            b[248] = b' ';
            b[249] = 0;
            let _ = decode(&b);
        }
    }
}

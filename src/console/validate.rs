//! Checks on what an operator types at the gate: a registration (name, phone, destination, reason, optional ID number)
//! and a vehicle plate. Every problem is a message in Chinese for the field it concerns; nothing reaches the
//! checkpoint or the store unless every field passes.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::checkpoint::Registration;
use crate::domain::Category;

/// A registration as the console form sends it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationForm {
    /// 姓名.
    #[serde(default)]
    pub name: String,
    /// 手机号.
    #[serde(default)]
    pub phone: String,
    /// 身份证号 (optional).
    #[serde(default)]
    pub id_number: String,
    /// 去往 (3栋201).
    #[serde(default)]
    pub destination: String,
    /// 事由.
    #[serde(default)]
    pub reason: String,
    /// `resident` for a resident picked from the roster; otherwise a visitor.
    #[serde(default)]
    pub category: Option<Category>,
    /// The person tapped their ID card: name and number come from the card (the form shows them masked and sends
    /// neither), and a phone number is optional (an elderly resident without a phone may have none).
    #[serde(default)]
    pub from_card: bool,
}

/// Field → message.
pub type Problems = BTreeMap<&'static str, String>;

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// A mainland mobile number (11 digits, 1[3-9]…) or a landline with its area code (0xx-xxxxxxx).
pub fn phone_problem(phone: &str) -> Option<String> {
    let p: String = phone.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    if p.is_empty() {
        return Some("请填写手机号".into());
    }
    if !p.chars().all(|c| c.is_ascii_digit()) {
        return Some("手机号只能包含数字".into());
    }
    let mobile = p.len() == 11 && p.starts_with('1') && matches!(p.as_bytes()[1], b'3'..=b'9');
    let landline = p.starts_with('0') && (10..=12).contains(&p.len());
    if mobile || landline { None } else { Some(format!("手机号应为11位数字（现在是{}位）", p.len())) }
}

/// An 18-character resident ID number: digits, a real birth date, and the right check character.
pub fn id_problem(id: &str) -> Option<String> {
    let id = id.trim().to_ascii_uppercase();
    if chars(&id) != 18 {
        return Some(format!("身份证号应为18位（现在是{}位）", chars(&id)));
    }
    let (first17, last) = id.split_at(17);
    let Some(check) = crate::domain::id_check_char(first17) else {
        return Some("身份证号前17位应为数字".into());
    };
    let (y, m, d) = (&first17[6..10], &first17[10..12], &first17[12..14]);
    let date = format!("{y}-{m}-{d}T00:00:00+08:00");
    if crate::domain::Timestamp::parse_rfc3339(&date).is_none_or(|t| t.to_rfc3339()[..10] != date[..10]) {
        return Some("身份证号中的出生日期无效".into());
    }
    if !last.starts_with(check) {
        return Some("身份证号校验位错误，请核对".into());
    }
    None
}

const PROVINCES: &str = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼";

fn plate_char(c: char) -> bool {
    (c.is_ascii_uppercase() && c != 'I' && c != 'O') || c.is_ascii_digit()
}

/// A Chinese plate: province, issuing-office letter, then five characters (ordinary, 7 in all), six with D/F at the
/// start or end (new energy, 8 in all), or four and a suffix (挂学警港澳).
pub fn plate_problem(plate: &str) -> Option<String> {
    let p: Vec<char> = plate.trim().to_uppercase().chars().filter(|c| !matches!(c, ' ' | '·' | '-')).collect();
    let bad = || Some(format!("车牌号格式不正确：{}（例如 鄂A12345，新能源 鄂AD12345）", plate.trim()));
    if p.len() < 2 || !PROVINCES.contains(p[0]) || !p[1].is_ascii_uppercase() {
        return bad();
    }
    let rest = &p[2..];
    let ok = match rest.len() {
        5 => rest.iter().all(|&c| plate_char(c)),
        // Small new-energy: D/F, a letter or digit, four digits; large: five digits, then D/F.
        6 => {
            (matches!(rest[0], 'D' | 'F') && plate_char(rest[1]) && rest[2..].iter().all(char::is_ascii_digit))
                || (matches!(rest[5], 'D' | 'F') && rest[..5].iter().all(char::is_ascii_digit))
        }
        _ => false,
    } || (rest.len() == 5 && rest[..4].iter().all(|&c| plate_char(c)) && "挂学警港澳".contains(rest[4]));
    if ok { None } else { bad() }
}

impl RegistrationForm {
    /// The registration, or every problem with it.
    pub fn check(&self) -> Result<Registration, Problems> {
        let mut p = Problems::new();
        // From a card, the card's name and number stand (Registration::over); the form's are not taken.
        let (name, id) = if self.from_card { ("", "") } else { (self.name.trim(), self.id_number.trim()) };
        if name.is_empty() && !self.from_card {
            p.insert("name", "请填写姓名".into());
        } else if chars(name) > 20 || name.chars().any(|c| c.is_ascii_digit() || c.is_control()) {
            p.insert("name", "姓名不应超过20个字，也不应包含数字".into());
        }
        // A resident picked from the roster, or someone who tapped their card, may have no phone at all; any other
        // visitor must leave one.
        let phone_optional =
            (self.category == Some(Category::Resident) || self.from_card) && self.phone.trim().is_empty();
        if !phone_optional && let Some(e) = phone_problem(&self.phone) {
            p.insert("phone", e);
        }
        if !id.is_empty()
            && let Some(e) = id_problem(id)
        {
            p.insert("id_number", e);
        }
        let destination = self.destination.trim();
        if destination.is_empty() {
            p.insert("destination", "请填写去往的楼栋房号".into());
        } else if chars(destination) > 40 {
            p.insert("destination", "去往地址过长".into());
        }
        if chars(self.reason.trim()) > 40 {
            p.insert("reason", "事由请简要填写（40字以内）".into());
        }
        if !p.is_empty() {
            return Err(p);
        }
        let phone: String = self.phone.chars().filter(|c| c.is_ascii_digit()).collect();
        Ok(Registration {
            name: name.to_string(),
            phone: (!phone.is_empty()).then_some(phone),
            id_number: (!id.is_empty()).then(|| id.to_ascii_uppercase()),
            address: None,
            destination: Some(destination.to_string()),
            reason: (!self.reason.trim().is_empty()).then(|| self.reason.trim().to_string()),
            category: self.category,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic ID number with the right check character (the digits are made up here, not copied).
    fn synthetic_id(first17: &str) -> String {
        crate::domain::complete_id(first17).unwrap()
    }

    #[test]
    fn phones() {
        assert_eq!(phone_problem("13000000001"), None);
        assert_eq!(phone_problem("130 0000 0001"), None);
        assert_eq!(phone_problem("027-12345678"), None);
        assert_eq!(phone_problem("13000000001000000000").unwrap(), "手机号应为11位数字（现在是20位）");
        assert_eq!(phone_problem("1300000000a").unwrap(), "手机号只能包含数字");
        assert_eq!(phone_problem("").unwrap(), "请填写手机号");
        assert!(phone_problem("12000000001").is_some(), "no mobile number starts 12");
    }

    #[test]
    fn id_numbers() {
        let good = synthetic_id("42010019900101123");
        assert_eq!(id_problem(&good), None);
        assert_eq!(id_problem(&good.to_lowercase()), None);
        let wrong_check = format!("{}{}", &good[..17], if good.ends_with('0') { '1' } else { '0' });
        assert_eq!(id_problem(&wrong_check).unwrap(), "身份证号校验位错误，请核对");
        assert!(id_problem(&synthetic_id("42010019901301123")).unwrap().contains("出生日期"), "month 13");
        assert!(id_problem("4201001990").unwrap().contains("18位"));
        assert!(id_problem("42010019900101A23X").unwrap().contains("前17位"));
    }

    #[test]
    fn plates() {
        for ok in ["鄂A12345", "鄂AD12345", "鄂AFA1234", "鄂A12345F", "京B·1234学", "粤B 12AB3", "沪A1234警"]
        {
            assert_eq!(plate_problem(ok), None, "{ok}");
        }
        for bad in ["鄂A1234", "鄂A123456", "鄂AD1234A", "AB12345", "鄂112345", "鄂AI2345", "鄂AX12345", ""] {
            assert!(plate_problem(bad).is_some(), "{bad}");
        }
        assert!(plate_problem("鄂A1234").unwrap().contains("车牌号格式不正确"));
    }

    #[test]
    fn a_registration_reports_every_problem_at_once_and_nothing_else() {
        let form = RegistrationForm {
            name: " ".into(),
            phone: "13000000001000000000".into(),
            id_number: "4201001990".into(),
            destination: String::new(),
            reason: "探亲".into(),
            category: None,
            from_card: false,
        };
        let p = form.check().unwrap_err();
        assert_eq!(p.keys().copied().collect::<Vec<_>>(), vec!["destination", "id_number", "name", "phone"]);
        let ok = RegistrationForm {
            name: "样例访客".into(),
            phone: "130-0000-0001".into(),
            destination: "3栋201".into(),
            ..Default::default()
        };
        let r = ok.check().unwrap();
        assert_eq!((r.phone.as_deref(), r.id_number, r.reason), (Some("13000000001"), None, None));
    }

    #[test]
    fn a_card_tap_needs_only_destination_and_reason() {
        // The form shows the card's masked name and number; neither is taken, and no phone is needed.
        let card = RegistrationForm {
            name: "王*英".into(),
            id_number: "1101**********0020".into(),
            destination: "3栋201".into(),
            reason: "探望父母".into(),
            from_card: true,
            ..Default::default()
        };
        let r = card.check().unwrap();
        assert_eq!((r.name.as_str(), r.phone, r.id_number), ("", None, None));
        assert_eq!((r.destination.as_deref(), r.reason.as_deref()), (Some("3栋201"), Some("探望父母")));
        // The destination is still asked for, and a phone given is still checked.
        let missing = RegistrationForm { phone: "123".into(), from_card: true, ..Default::default() };
        assert_eq!(missing.check().unwrap_err().keys().copied().collect::<Vec<_>>(), vec!["destination", "phone"]);
    }
}

//! An ID card read becomes a credential (身份必问 and 信息必录 in one tap; 卡码合一 when the network is up).
//!
//! - A failing check digit is a read error and an expired (or not yet valid) card a prompt: neither is an identity.
//! - The resident roster on the box holds no clear ID numbers: it matches by a keyed hash (HMAC-SHA256 under the
//!   community's roster key) of the number. A hit is a resident with building and room; a miss a visitor, with the
//!   registration prefilled so the volunteer adds only destination and reason.
//! - Name, number and address travel as the presentation's registration, which the store seals to the office key; the
//!   credential itself carries only the masked name and a keyed digest for de-duplication.
//! - The health status comes from the office's gateway by ID number (bounded timeout); without one, `unverified`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use hmac::{KeyInit, Mac};

use crate::checkpoint::{CredentialRead, Registration};
use crate::domain::{Category, CodeStatus, IdentityKind};
use crate::hw::idcard::{CardItem, IdCard, IdCardReader, Ymd};
use crate::hw::{DeviceFault, Polled};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The keyed hash of an ID number under `key` (hex, 128 bits): what the roster and the records hold instead of it.
pub fn id_hash(key: &[u8], id_number: &str) -> String {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id_number.trim().to_ascii_uppercase().as_bytes());
    crate::keys::hex(&mac.finalize().into_bytes()[..16])
}

/// Read a roster key file (64 hex digits), as `sibi idcard roster-key` writes it.
pub fn read_roster_key(path: &Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    crate::keys::unhex32(&text)
        .map(|k| k.to_vec())
        .ok_or_else(|| format!("{}: expected a key of 64 hex digits (sibi idcard roster-key)", path.display()))
}

/// Where a resident lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    /// 楼栋.
    pub building: String,
    /// 房号.
    pub room: String,
}

/// The roster by keyed hash.
#[derive(Debug, Clone, Default)]
pub struct IdRoster {
    key: Vec<u8>,
    homes: HashMap<String, Home>,
}

impl IdRoster {
    /// A roster under `key` with `(id_hash, home)` entries.
    pub fn new(key: Vec<u8>, entries: impl IntoIterator<Item = (String, Home)>) -> IdRoster {
        IdRoster { key, homes: entries.into_iter().map(|(h, home)| (h.to_ascii_lowercase(), home)).collect() }
    }

    /// A roster with no entries and a random key (no roster configured: every card is a visitor, and the digests
    /// that de-duplicate taps change at every start).
    pub fn empty() -> IdRoster {
        let key = crate::keys::random32().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no random key for the ID digests: they are unkeyed until the next start");
            [0; 32]
        });
        IdRoster { key: key.to_vec(), homes: HashMap::new() }
    }

    /// Residents on the roster.
    pub fn len(&self) -> usize {
        self.homes.len()
    }

    /// True when nobody is on the roster.
    pub fn is_empty(&self) -> bool {
        self.homes.is_empty()
    }

    /// The home of the holder of `id_number`, if on the roster.
    pub fn home(&self, id_number: &str) -> Option<&Home> {
        self.homes.get(&id_hash(&self.key, id_number))
    }

    /// The keyed digest of `id_number`.
    pub fn digest(&self, id_number: &str) -> String {
        id_hash(&self.key, id_number)
    }
}

/// Why a card is not an identity, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRefused {
    /// For the log (English, nothing personal).
    pub detail: String,
    /// For the operator (Chinese).
    pub message_zh: String,
}

/// Why `card` is no identity on `today`, if it is none: a failing check digit (a read error), an expired or not yet
/// valid card (a prompt).
pub fn refusal(card: &IdCard, today: Ymd) -> Option<CardRefused> {
    if !card.id_check {
        return Some(CardRefused {
            detail: format!("{} with a failing check digit ({})", card.kind.as_str(), card.masked_id()),
            message_zh: "读卡失败（证件号码校验不符），请重新放卡".into(),
        });
    }
    if card.expired(today) {
        return Some(CardRefused {
            detail: format!("{} expired on {}", card.kind.as_str(), card.valid_to),
            message_zh: format!("{}已过期（有效期至{}），请人工登记", card.kind.zh(), card.valid_to),
        });
    }
    if card.not_yet_valid(today) {
        return Some(CardRefused {
            detail: format!("{} valid only from {}", card.kind.as_str(), card.valid_from),
            message_zh: format!("{}尚未生效（{}起有效），请人工登记", card.kind.zh(), card.valid_from),
        });
    }
    None
}

/// The credential a card that passed [`refusal`] gives, with `code` its health status.
pub fn credential_of(card: &IdCard, roster: &IdRoster, code: CodeStatus) -> CredentialRead {
    let home = roster.home(&card.id_number);
    let category = if home.is_some() { Category::Resident } else { Category::Visitor };
    let mut read = CredentialRead::new(
        format!("id:{}", roster.digest(&card.id_number)),
        IdentityKind::IdCard,
        category,
        code,
        card.masked_name(),
    );
    read.prefill = Some(Box::new(Registration {
        name: card.display_name().to_string(),
        phone: None,
        id_number: Some(card.id_number.clone()),
        address: Some(card.address.clone()).filter(|a| !a.is_empty()),
        destination: home.map(|h| format!("{}栋{}", h.building, h.room)),
        reason: None,
        category: Some(category),
    }));
    read
}

/// What the ID card lane reports to the checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum CardEvent {
    /// A card that is an identity.
    Read(CredentialRead),
    /// Something for the operator (a reader status, an expired card...).
    Notice {
        /// For the log.
        detail: String,
        /// For the operator.
        message_zh: String,
    },
}

/// The gateway lookup by ID number.
pub struct IdHealth {
    client: super::health_code::HealthCodeClient,
    region: Option<String>,
}

impl IdHealth {
    /// Ask `client`, for the province `region` (default: the card's own province, from its first two digits).
    pub fn new(client: super::health_code::HealthCodeClient, region: Option<String>) -> IdHealth {
        IdHealth { client, region }
    }

    fn status(&self, id_number: &str) -> CodeStatus {
        let region = self.region.clone().unwrap_or_else(|| format!("{}0000", id_number.get(..2).unwrap_or("00")));
        self.client.verify_id(&region, id_number)
    }
}

/// The ID card lane: a reader, the roster and (when configured) the gateway.
pub struct IdCardCredentials {
    reader: Box<dyn IdCardReader>,
    roster: IdRoster,
    health: Option<IdHealth>,
}

impl IdCardCredentials {
    /// The lane over `reader`.
    pub fn new(reader: Box<dyn IdCardReader>, roster: IdRoster, health: Option<IdHealth>) -> IdCardCredentials {
        IdCardCredentials { reader, roster, health }
    }

    /// Wait at most `wait` for the next card or notice.
    pub fn poll(&mut self, wait: Duration) -> Result<Polled<CardEvent>, DeviceFault> {
        let item = match self.reader.poll(wait)? {
            Polled::Item(i) => i,
            Polled::Idle => return Ok(Polled::Idle),
            Polled::Done => return Ok(Polled::Done),
        };
        Ok(Polled::Item(match item {
            CardItem::Card(card) => {
                // The card's dates are China dates.
                let today = Ymd::from(crate::hw::now().china().date());
                if let Some(r) = refusal(&card, today) {
                    tracing::info!(detail = %r.detail, "ID card refused");
                    return Ok(Polled::Item(CardEvent::Notice { detail: r.detail, message_zh: r.message_zh }));
                }
                let code = self.health.as_ref().map_or(CodeStatus::Unverified, |h| h.status(&card.id_number));
                let read = credential_of(&card, &self.roster, code);
                tracing::info!(card = card.kind.as_str(), holder = %read.holder, id = %card.masked_id(),
                    category = read.category.as_str(), code = ?read.code, "ID card read");
                CardEvent::Read(read)
            }
            CardItem::Prompt { detail, message_zh } => CardEvent::Notice { detail, message_zh },
            CardItem::Restored(gap) => CardEvent::Notice {
                detail: format!("the ID card reader is back after {} ms", gap.as_millis()),
                message_zh: "身份证阅读器已恢复".into(),
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::complete_id;
    use crate::hw::idcard::TextBuilder;
    use crate::hw::idcard::text::decode;

    /// Synthetic numbers, from their first 17 digits.
    fn resident_id() -> String {
        complete_id("11010119460307002").unwrap()
    }
    fn visitor_id() -> String {
        complete_id("11010119900307003").unwrap()
    }

    fn card(id: &str, to: &str) -> IdCard {
        decode(&TextBuilder::resident("王秀英", "2", "01", "19460307", "示范市示范路1号", id, "20100101", to).build())
            .unwrap()
    }

    #[test]
    fn roster_hit_is_a_resident_and_a_miss_a_prefilled_visitor() {
        let key = b"0123456789abcdef0123456789abcdef".to_vec();
        let home = Home { building: "3".into(), room: "201".into() };
        let roster = IdRoster::new(key.clone(), [(id_hash(&key, &resident_id()), home)]);
        let today = Ymd::parse("20261201").unwrap();
        let hit = card(&resident_id(), "长期");
        assert_eq!(refusal(&hit, today), None);
        let hit = credential_of(&hit, &roster, CodeStatus::Green);
        assert_eq!(
            (hit.identity, hit.category, hit.code),
            (IdentityKind::IdCard, Category::Resident, CodeStatus::Green)
        );
        assert_eq!(hit.holder, "王*英");
        assert!(!hit.key.contains("194603070026"));
        let p = hit.prefill.unwrap();
        assert_eq!((p.name.as_str(), p.destination.as_deref()), ("王秀英", Some("3栋201")));
        assert_eq!(p.address.as_deref(), Some("示范市示范路1号"));
        let miss = credential_of(&card(&visitor_id(), "长期"), &roster, CodeStatus::Unverified);
        assert_eq!(miss.category, Category::Visitor);
        assert_eq!(miss.prefill.as_ref().unwrap().destination, None);
        assert_eq!(miss.prefill.unwrap().id_number.as_deref(), Some(visitor_id().as_str()));
    }

    #[test]
    fn expired_and_bad_check_digit_cards_are_prompts() {
        let today = Ymd::parse("20261201").unwrap();
        let e = refusal(&card(&visitor_id(), "20261130"), today);
        assert!(e.unwrap().message_zh.contains("已过期（有效期至2026-11-30）"));
        assert!(refusal(&card(&visitor_id(), "20261201"), today).is_none());
        let bad = refusal(&card(&format!("{}7", &visitor_id()[..17]), "长期"), today);
        let bad = bad.unwrap();
        assert!(bad.message_zh.contains("读卡失败"));
        assert!(!bad.detail.contains(&visitor_id()[4..14]), "{}", bad.detail);
    }

    #[test]
    fn the_keyed_hash_depends_on_the_key_and_ignores_case() {
        let x = complete_id("11010119900307002").unwrap();
        assert!(x.ends_with('X'), "a number whose check character is X: {x}");
        assert_eq!(id_hash(b"k1", &x.to_lowercase()), id_hash(b"k1", &x));
        assert_ne!(id_hash(b"k1", &visitor_id()), id_hash(b"k2", &visitor_id()));
        assert_eq!(id_hash(b"k1", &visitor_id()).len(), 32);
    }
}

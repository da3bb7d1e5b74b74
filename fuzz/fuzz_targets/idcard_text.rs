//! Any bytes as the card's text block must give a card or an error — never a panic — and a card decoded from them
//! can be masked and printed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sibi::hw::idcard::text::decode;
use sibi::hw::idcard::{CardKind, TextBuilder, Ymd};

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
    // Over a blank resident block (UTF-16 spaces), so short inputs reach the field decoders too.
    let mut block = TextBuilder::new(CardKind::Resident).build();
    for (b, d) in block.iter_mut().zip(data) {
        *b = *d;
    }
    if let Ok(card) = decode(&block) {
        let _ = (card.masked_name(), card.masked_id(), format!("{card:?}"));
        let today = Ymd { year: 2026, month: 12, day: 1 };
        let _ = sibi::hw::idcard::cli::card_json(&card, today).to_string();
        let _ = sibi::credential::idcard::refusal(&card, today);
    }
});

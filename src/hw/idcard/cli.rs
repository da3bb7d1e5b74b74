//! `sibi idcard read` (DESIGN.md §6), `sibi idcard roster-key`, `sibi idcard roster` and `sibi probe idcard`: the
//! command bodies, beside the driver they use. Nothing personal is printed in clear.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{CardItem, IdCard, IdCardReader, IdCardSettings, SerialIdCard, Ymd};
use crate::hw::Polled;

/// The JSON line `sibi idcard read` prints for `card` on `today` (masked name and number; no address, no photo).
pub fn card_json(card: &IdCard, today: Ymd) -> serde_json::Value {
    serde_json::json!({
        "card": card.kind.as_str(),
        "name": card.masked_name(),
        "sex": card.sex.zh(),
        "nation": card.nation,
        "birth": card.birth.to_string(),
        "id": card.masked_id(),
        "id_check": card.id_check,
        "valid_from": card.valid_from.to_string(),
        "valid_to": card.valid_to.to_string(),
        "expired": card.expired(today),
    })
}

/// Why no card was read.
#[derive(Debug)]
pub enum ReadFailure {
    /// The port cannot be used at all (exit 2).
    Port(String),
    /// No card within the timeout, or the reader reported an error (exit 1).
    NoCard(String),
}

/// Wait at most `timeout` for one card on the reader at `settings.port`.
pub fn read_one(settings: &IdCardSettings, timeout: Duration) -> Result<IdCard, ReadFailure> {
    // An unusable port is a usage error, told at once rather than after the timeout.
    serialport::new(settings.port.display().to_string(), settings.baud)
        .open_native()
        .map_err(|e| ReadFailure::Port(format!("cannot open {}: {e}", settings.port.display())))?;
    let mut reader = SerialIdCard::start(settings).map_err(|e| ReadFailure::Port(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    let mut last_problem: Option<String> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadFailure::NoCard(
                last_problem.unwrap_or_else(|| format!("no card on the reader within {} s", timeout.as_secs_f64())),
            ));
        }
        match reader.poll(left.min(Duration::from_millis(100))) {
            Ok(Polled::Item(CardItem::Card(card))) => return Ok(*card),
            Ok(Polled::Item(CardItem::Prompt { detail, message_zh })) => {
                last_problem = Some(format!("{detail} ({message_zh})"));
            }
            Ok(_) => {}
            Err(fault) => last_problem = Some(fault.0),
        }
    }
}

/// `sibi idcard read --port P [--baud B] [--timeout S] [--at T]`: exit 0 with the JSON line, 1 with no card (reason
/// on stderr), 2 for an unusable port or bad arguments.
pub fn read_command(port: std::path::PathBuf, baud: u32, timeout: f64, at: Option<&str>) -> crate::cli::Outcome {
    use crate::cli::Failure;
    let now = crate::cli::time_arg("--at", at)?;
    if !(timeout.is_finite() && (0.1..=3600.0).contains(&timeout)) {
        return Err(Failure::usage(format!("--timeout {timeout}: give 0.1–3600 seconds")));
    }
    let settings = IdCardSettings { port, baud };
    if let Some(p) = settings.problems().first() {
        return Err(Failure::usage(p.clone()));
    }
    let today = Ymd::from(now.china().date());
    match read_one(&settings, Duration::from_secs_f64(timeout)) {
        Ok(card) => {
            println!("{}", card_json(&card, today));
            Ok(())
        }
        Err(ReadFailure::NoCard(why)) => {
            eprintln!("sibi idcard read: {why}");
            Err(Failure::quiet())
        }
        Err(ReadFailure::Port(why)) => {
            eprintln!("sibi idcard read: {why}");
            Err(Failure::Usage(String::new()))
        }
    }
}

/// `sibi probe idcard`: the SAM's status and id, then one masked read. True when all worked.
pub fn probe(settings: &IdCardSettings, timeout: Duration) -> bool {
    use super::frame::{Parsed, Parser, Response, cmd, request};
    let mut port = match serialport::new(settings.port.display().to_string(), settings.baud)
        .timeout(Duration::from_millis(500))
        .open_native()
    {
        Ok(p) => p,
        Err(e) => {
            println!("port {}: cannot open: {e}", settings.port.display());
            return false;
        }
    };
    let mut ask = |c: (u8, u8)| -> Option<Response> {
        std::io::Write::write_all(&mut port, &request(c)).ok()?;
        let (mut parser, mut out, mut buf) = (Parser::new(), Vec::new(), [0u8; 512]);
        let until = Instant::now() + Duration::from_millis(1000);
        while Instant::now() < until {
            if let Ok(n) = std::io::Read::read(&mut port, &mut buf) {
                parser.feed(&buf[..n], &mut out);
            }
            if let Some(Parsed::Frame(body)) = out.first() {
                return Response::from_body(body);
            }
        }
        None
    };
    let status = ask(cmd::SAM_STATUS);
    let id = ask(cmd::SAM_ID);
    match &status {
        Some(r) => {
            println!("SAM status: SW3 {:02X} ({})", r.sw[2], super::machine::status_text(r.sw[2]).map_or("ok", |t| t.0))
        }
        None => println!("SAM status: no answer"),
    }
    match &id {
        Some(r) if r.sw[2] == 0x90 => println!("SAM id: {}", crate::keys::hex(&r.data)),
        Some(r) => println!("SAM id: SW3 {:02X}", r.sw[2]),
        None => println!("SAM id: no answer"),
    }
    drop(port);
    println!("place a card on the reader ({} s)…", timeout.as_secs());
    let _ = std::io::stdout().flush();
    let today = Ymd::from(crate::hw::now().china().date());
    match read_one(settings, timeout) {
        Ok(card) => {
            println!("read: {}", card_json(&card, today));
            status.is_some_and(|r| r.sw[2] == 0x90)
        }
        Err(ReadFailure::NoCard(why) | ReadFailure::Port(why)) => {
            println!("read: {why}");
            false
        }
    }
}

/// `sibi idcard roster-key --out FILE`: a new random roster key (hex), written with mode 0600.
pub fn roster_key(out: &Path) -> Result<(), String> {
    let key = crate::keys::random32()?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    writeln!(f, "{}", crate::keys::hex(&key)).map_err(|e| format!("cannot write {}: {e}", out.display()))
}

/// `sibi idcard roster --key FILE --input CLEAR.csv`: the office's list (`building,room,name,id_number`) → the box's
/// roster (`building,room,name,id_hash`: masked name, keyed hash). Bad rows are refused by line and nothing is
/// written.
pub fn roster(key: &Path, input: &Path, out: &mut dyn Write) -> Result<usize, String> {
    let key = crate::credential::idcard::read_roster_key(key)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(input)
        .map_err(|e| format!("cannot read {}: {e}", input.display()))?;
    let (mut rows, mut problems) = (Vec::new(), Vec::new());
    for (i, row) in reader.records().enumerate() {
        let line = i + 2;
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("line {line}: {e}"));
                continue;
            }
        };
        let (Some(b), Some(r), Some(n), Some(id)) = (row.get(0), row.get(1), row.get(2), row.get(3)) else {
            problems.push(format!("line {line}: expected building,room,name,id_number"));
            continue;
        };
        if !super::text::id_number_ok(id.trim()) {
            problems.push(format!(
                "line {line}: the ID number's check digit fails ({})",
                crate::domain::mask_id_number(id)
            ));
            continue;
        }
        rows.push([
            b.trim().to_string(),
            r.trim().to_string(),
            crate::domain::mask_name(n),
            crate::credential::idcard::id_hash(&key, id),
        ]);
    }
    if !problems.is_empty() {
        return Err(format!(
            "{}: {} bad rows, nothing written:\n  {}",
            input.display(),
            problems.len(),
            problems.join("\n  ")
        ));
    }
    let mut w = csv::Writer::from_writer(out);
    w.write_record(["building", "room", "name", "id_hash"]).map_err(|e| e.to_string())?;
    for r in &rows {
        w.write_record(r).map_err(|e| e.to_string())?;
    }
    w.flush().map_err(|e| e.to_string())?;
    Ok(rows.len())
}

/// `sibi idcard roster-key --out F`.
pub fn roster_key_command(out: &Path) -> crate::cli::Outcome {
    roster_key(out).map_err(crate::cli::Failure::Usage)?;
    eprintln!("wrote {} (keep it with the roster; every gate of the community needs it)", out.display());
    Ok(())
}

/// `sibi idcard roster --key K --input CLEAR.csv`: the box's roster on standard output.
pub fn roster_command(key: &Path, input: &Path) -> crate::cli::Outcome {
    let n = roster(key, input, &mut std::io::stdout()).map_err(crate::cli::Failure::Usage)?;
    eprintln!("{n} residents");
    Ok(())
}

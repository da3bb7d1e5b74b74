//! The credential commands: `sibi pass issue`, `sibi code scan`, `sibi code verify` (DESIGN.md §6).

use std::path::{Path, PathBuf};

use crate::cli::{Failure, Outcome};
use crate::domain::Timestamp;

/// What `sibi pass issue` is asked to sign.
#[derive(Debug, Clone)]
pub struct IssueArgs {
    /// The community's private key file.
    pub key: PathBuf,
    /// The community id (the gate's `gate.community`).
    pub community: String,
    /// The name printed on the card (default: the id).
    pub community_name: Option<String>,
    /// The pass id.
    pub id: String,
    /// The category (`resident`, `work_resumption`, …).
    pub category: String,
    /// The holder's name; only its masked form goes on the card.
    pub holder: String,
    /// First valid day or time (default now).
    pub from: Option<String>,
    /// Last valid day (through its end) or time.
    pub until: String,
    /// The card (SVG); the bare QR code is written beside it as .png.
    pub out: PathBuf,
}

/// A day (China time, `YYYY-MM-DD`) or any time [`Timestamp::parse`] takes, in Unix seconds; `end` takes the end of
/// the day.
pub fn parse_day(s: &str, end: bool) -> Option<i64> {
    if let Ok(t) = Timestamp::parse(s) {
        return Some(t.0 / 1000);
    }
    let clock = if end { "23:59:59" } else { "00:00:00" };
    Timestamp::parse_rfc3339(&format!("{s}T{clock}+08:00")).map(|t| t.0 / 1000)
}

/// The pass `a` asks for, checked (not yet signed).
pub fn pass_of(a: &IssueArgs, now: Timestamp) -> Result<super::pass::Pass, Failure> {
    let Some(category) = crate::domain::Category::ALL.into_iter().find(|c| c.as_str() == a.category) else {
        return Err(Failure::usage(format!(
            "--category `{}`: use resident, visitor, courier, work_resumption or service",
            a.category
        )));
    };
    if a.id.trim().is_empty() || a.community.trim().is_empty() || a.holder.trim().is_empty() {
        return Err(Failure::usage("--id, --community and --holder must not be empty"));
    }
    let from = match a.from.as_deref() {
        None => now.0 / 1000,
        Some(f) => {
            parse_day(f, false).ok_or_else(|| Failure::usage(format!("--from `{f}` is not YYYY-MM-DD or RFC 3339")))?
        }
    };
    let until = parse_day(&a.until, true)
        .ok_or_else(|| Failure::usage(format!("--until `{}` is not YYYY-MM-DD or RFC 3339", a.until)))?;
    if until <= from {
        return Err(Failure::usage("--until is not after --from"));
    }
    Ok(super::pass::Pass {
        community: a.community.clone(),
        id: a.id.clone(),
        category,
        holder: crate::domain::mask_name(&a.holder),
        valid_from: from,
        valid_until: until,
    })
}

/// `sibi pass issue`: signs the pass, writes the printable card (SVG) and the bare QR code (PNG).
pub fn issue(a: IssueArgs) -> Outcome {
    let key = super::pass::read_signing_key(&a.key).map_err(Failure::Usage)?;
    let pass = pass_of(&a, crate::hw::now())?;
    let text = pass.encode(&key);
    let svg = zxingcpp::create(zxingcpp::BarcodeFormat::QRCode)
        .options("ecLevel=M")
        .from_str(&text)
        .map_err(|e| Failure::usage(format!("cannot make the QR code: {e}")))?
        .to_svg()
        .map_err(|e| Failure::usage(format!("cannot render the QR code: {e}")))?;
    let png = super::qr::render(&text, 8).map_err(Failure::Usage)?;
    let card = super::pass::card_svg(&pass, a.community_name.as_deref().unwrap_or(&a.community), &svg);
    let png_path = a.out.with_extension("png");
    std::fs::write(&a.out, card)
        .map_err(|e| e.to_string())
        .and_then(|()| png.save(&png_path).map_err(|e| e.to_string()))
        .map_err(|e| Failure::usage(format!("cannot write {}: {e}", a.out.display())))?;
    println!("card: {}", a.out.display());
    println!("qr:   {}", png_path.display());
    println!("text: {text}");
    Ok(())
}

/// Where `sibi code verify` takes the credential from.
pub enum VerifyInput {
    /// The QR text itself.
    Text(String),
    /// A picture holding the QR code.
    Image(PathBuf),
}

/// `sibi code verify`: prints `{"format", "valid", "stage", ...}`; exit 0 valid, 1 invalid, 2 usage or I/O.
pub fn verify(input: VerifyInput, trust: &[PathBuf], at: Option<&str>, config: Option<&Path>) -> Outcome {
    use super::{Format, Trust, VerifyReport, qr};
    let now = crate::cli::time_arg("--at", at)?;
    let mut trusted = match config {
        None => Trust::default(),
        Some(p) => {
            let c = crate::config::load(p).map_err(|e| Failure::Usage(e.to_string()))?;
            crate::app::current_trust(&c).map_err(|e| Failure::Usage(format!("{e:#}")))?
        }
    };
    for path in trust {
        let bytes = std::fs::read(path)
            .map_err(|e| Failure::usage(format!("cannot read --trust `{}`: {e}", path.display())))?;
        trusted.add_file(&bytes).map_err(|e| {
            Failure::usage(format!("--trust `{}`: not a pass key, certificate or trust list: {e}", path.display()))
        })?;
    }
    let text = match input {
        VerifyInput::Text(t) => t,
        VerifyInput::Image(path) => {
            let frame =
                qr::load_luma(&path).map_err(|e| Failure::usage(format!("--image `{}`: {e}", path.display())))?;
            match qr::DecoderKind::Zxing.decoder().decode(&frame) {
                Ok(codes) if !codes.is_empty() => codes[0].clone(),
                _ => {
                    let report =
                        VerifyReport::failed(Format::Unknown, "picture_decode", "no QR code found in the image");
                    println!("{}", report.to_json());
                    return Err(Failure::quiet());
                }
            }
        }
    };
    let report = super::verify_text(&text, &trusted, now);
    println!("{}", report.to_json());
    crate::cli::ok_if(report.valid)
}

/// One line of `sibi code scan`.
#[derive(Debug, serde::Serialize)]
pub struct ScanLine {
    /// The image as named.
    pub file: String,
    /// The payloads decoded, in the decoder's order.
    pub codes: Vec<String>,
    /// The decode time alone (median of the repeats), ms.
    pub ms: f64,
    /// Why the image could not be read or decoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Decodes one image `repeat` times with `decoder`; `Err` when the image cannot be read.
pub fn scan_one(path: &Path, decoder: &super::qr::Contained, repeat: u16) -> Result<ScanLine, ScanLine> {
    let file = path.display().to_string();
    let frame = super::qr::load_luma(path).map_err(|e| ScanLine {
        file: file.clone(),
        codes: vec![],
        ms: 0.0,
        error: Some(e),
    })?;
    let mut times = Vec::with_capacity(usize::from(repeat.max(1)));
    let mut result = Ok(Vec::new());
    for _ in 0..repeat.max(1) {
        let t = std::time::Instant::now();
        result = decoder.decode(&frame);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let ms = times[times.len() / 2];
    Ok(match result {
        Ok(codes) => ScanLine { file, codes, ms, error: None },
        Err(e) => ScanLine { file, codes: vec![], ms, error: Some(e.to_string()) },
    })
}

/// `sibi code scan`: one JSON line per image (`ms` is the decode time alone). An image that cannot be read gets a
/// line with an `error` and makes the exit status 2; images with no code are not an error.
pub fn scan(images: &[PathBuf], decoder: &str, repeat: u16) -> Outcome {
    let Some(kind) = super::qr::DecoderKind::parse(decoder) else {
        return Err(Failure::usage(format!("--decoder `{decoder}`: use zxing or rqrr")));
    };
    let decoder = kind.decoder();
    let mut outcome = Ok(());
    for path in images {
        let line = scan_one(path, &decoder, repeat).unwrap_or_else(|unreadable| {
            outcome = Err(Failure::Usage(String::new()));
            unreadable
        });
        match serde_json::to_string(&line) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("error: cannot print the result for {}: {e}", line.file),
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> IssueArgs {
        IssueArgs {
            key: PathBuf::from("k"),
            community: "c".into(),
            community_name: None,
            id: "p1".into(),
            category: "resident".into(),
            holder: "李建国".into(),
            from: Some("2026-12-01".into()),
            until: "2026-12-31".into(),
            out: PathBuf::from("o.svg"),
        }
    }

    #[test]
    fn a_pass_runs_from_the_start_of_its_first_day_to_the_end_of_its_last_china_time() {
        let p = pass_of(&args(), Timestamp(0)).unwrap();
        assert_eq!(p.valid_from, Timestamp::parse("2026-12-01T00:00:00+08:00").unwrap().0 / 1000);
        assert_eq!(p.valid_until, Timestamp::parse("2026-12-31T23:59:59+08:00").unwrap().0 / 1000);
        assert_eq!(p.holder, "李*国", "only the masked name is signed");
    }

    #[test]
    fn pass_arguments_that_cannot_make_a_pass_are_refused_with_the_flag() {
        let mut a = args();
        a.category = "vip".into();
        assert!(pass_of(&a, Timestamp(0)).unwrap_err().message().starts_with("--category"));
        let mut a = args();
        a.until = "2026-11-30".into();
        assert_eq!(pass_of(&a, Timestamp(0)).unwrap_err().message(), "--until is not after --from");
        let mut a = args();
        a.from = Some("Monday".into());
        assert!(pass_of(&a, Timestamp(0)).unwrap_err().message().starts_with("--from `Monday`"));
        let mut a = args();
        a.holder = " ".into();
        assert_eq!(pass_of(&a, Timestamp(0)).unwrap_err().status(), 2);
    }

    #[test]
    fn an_unreadable_image_is_a_line_with_its_error() {
        let decoder = super::super::qr::DecoderKind::Zxing.decoder();
        let line = scan_one(Path::new("no/such/image.png"), &decoder, 3).unwrap_err();
        assert!(line.codes.is_empty() && line.error.is_some());
        assert_eq!(scan(&[PathBuf::from("no/such.png")], "zxing", 1).unwrap_err().status(), 2);
        assert_eq!(scan(&[], "opencv", 1).unwrap_err().message(), "--decoder `opencv`: use zxing or rqrr");
    }
}

//! The `sibi` command line. Exit codes: 0 success, 1 failure while running, 2 bad usage, input or config.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use sibi::domain::{Celsius, Timestamp};

/// sibi (四必): the gate checkpoint daemon of a residential compound.
#[derive(Parser)]
#[command(name = "sibi", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gate daemon.
    Run {
        /// The config file (see config/demo.toml and config/gate.example.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file and say what it would run; exit 2 with every problem if it is not usable.
    CheckConfig {
        /// The config file.
        file: PathBuf,
    },
    /// Dry-run the policy on one case (DESIGN.md §6): prints one JSON decision.
    Decide {
        /// The config file whose [policy] applies.
        #[arg(long)]
        config: PathBuf,
        /// The case, as JSON (`-` for standard input).
        #[arg(long)]
        input: PathBuf,
        /// Indent the JSON for reading.
        #[arg(long)]
        pretty: bool,
        /// Decide as at this RFC 3339 time (default: now), for previewing a scheduled tier change.
        #[arg(long)]
        at: Option<String>,
    },
    /// Make a key pair: NAME.key (private, 0600) and NAME.pub in DIR. Never overwrites a key.
    Keygen {
        /// Directory for the key files.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Base name of the files (community for pass signing, gate for a gate's sync key).
        #[arg(long, default_value = "community")]
        name: String,
        /// `sign` (Ed25519: passes, gates) or `seal` (X25519: the office's key that personal data is sealed to).
        #[arg(long, default_value = "sign", value_parser = ["sign", "seal"])]
        kind: String,
    },
    /// Community passes (居民通行证).
    Pass {
        #[command(subcommand)]
        command: PassCommand,
    },
    /// 口罩必戴 by machine: find the faces in pictures and judge their masks.
    Mask {
        #[command(subcommand)]
        command: MaskCommand,
    },
    /// The resident ID card reader (GA 467): read one card; make the roster key and the hashed roster.
    Idcard {
        #[command(subcommand)]
        command: IdcardCommand,
    },
    /// Commissioning checks on the real devices: `probe thermometer|gpio|camera|audio|idcard`.
    Probe {
        #[command(subcommand)]
        command: ProbeCommand,
    },
    /// Sync this gate's records to the street office now, or show where sync stands.
    Sync {
        /// The gate config with a [sync] section.
        #[arg(long)]
        config: PathBuf,
        /// Send the whole backlog now (the daemon may be running: the office ignores what it already holds).
        #[arg(long)]
        now: bool,
    },
    /// The daily report (日报告) for one day: text (Chinese), or --json; --csv writes a CSV file as well.
    Report {
        /// The gate config.
        #[arg(long)]
        config: PathBuf,
        /// The day, YYYY-MM-DD (China Standard Time); default today.
        #[arg(long)]
        date: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also write the report to this file: XLSX if it ends in .xlsx, CSV otherwise.
        #[arg(long, alias = "csv")]
        out: Option<PathBuf>,
        /// Queue it for the office (sent by the daemon's sync, or `sibi sync --now`).
        #[arg(long)]
        queue: bool,
    },
    /// The street office server.
    Office {
        #[command(subcommand)]
        command: OfficeCommand,
    },
    /// Print every voice prompt as `key<TAB>text` (used by scripts/voice-clips to make the clips).
    VoiceList,
    /// The operator console.
    Console {
        #[command(subcommand)]
        command: ConsoleCommand,
    },
    /// Read QR codes.
    Code {
        #[command(subcommand)]
        command: CodeCommand,
    },
}

#[derive(Subcommand)]
enum PassCommand {
    /// Sign a pass and render a printable card (SVG) and the bare QR code (PNG).
    Issue {
        /// The community's private key (from `sibi keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Community id (must match the gate's `gate.community`).
        #[arg(long)]
        community: String,
        /// Community name printed on the card (default: the id).
        #[arg(long)]
        community_name: Option<String>,
        /// Pass id, unique in the community (revocation names it).
        #[arg(long)]
        id: String,
        /// Category: resident, work_resumption, service...
        #[arg(long, default_value = "resident")]
        category: String,
        /// The holder's name; only its masked form (李*国) goes on the card and in the code.
        #[arg(long)]
        holder: String,
        /// First valid day (YYYY-MM-DD, China time) or RFC 3339; default now.
        #[arg(long)]
        from: Option<String>,
        /// Last valid day (YYYY-MM-DD, through its end, China time) or RFC 3339.
        #[arg(long)]
        until: String,
        /// Output card (SVG); the QR code alone is written beside it as .png.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConsoleCommand {
    /// Hash an operator's PIN for `[[console.operator]] pin_hash` (reads the PIN from stdin unless --pin is given).
    HashPin {
        /// The PIN (4–12 digits); prefer stdin, so it stays out of the shell history.
        #[arg(long)]
        pin: Option<String>,
    },
}

#[derive(Subcommand)]
enum OfficeCommand {
    /// Serve ingest and the status page (see config/office.example.toml).
    Serve {
        /// The office config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Publish the next signed policy bundle for a community: a tier change and/or revoked passes.
    Publish {
        /// The office config (with `signing_key`).
        #[arg(long)]
        config: PathBuf,
        /// The community.
        #[arg(long)]
        community: String,
        /// The new tier: low, medium or high.
        #[arg(long)]
        tier: Option<String>,
        /// When it takes effect (RFC 3339; default now).
        #[arg(long)]
        effective: Option<String>,
        /// A pass id to revoke; repeatable.
        #[arg(long)]
        revoke: Vec<String>,
        /// A pass id to put under home quarantine (居家隔离); repeatable.
        #[arg(long)]
        quarantine: Vec<String>,
        /// Replace the whole home-quarantine list with the pass ids in FILE (one per line, or a CSV's first column).
        #[arg(long, value_name = "FILE")]
        quarantine_list: Option<PathBuf>,
        /// A pass id to release from home quarantine; repeatable.
        #[arg(long)]
        release: Vec<String>,
        /// A pass id to add to the courier registry; repeatable.
        #[arg(long)]
        courier: Vec<String>,
        /// A health-code issuer to trust, as `name,region,prefix`; repeatable.
        #[arg(long)]
        issuer: Vec<String>,
        /// A DCC document signer certificate to trust (DER or PEM file); repeatable.
        #[arg(long)]
        dcc_signer: Vec<PathBuf>,
    },
    /// Export entries or daily reports for a date range as CSV or XLSX (by the file's extension). Personal data is
    /// opened with `office.seal_key`; without it the masked forms are written.
    Export {
        /// The office config.
        #[arg(long)]
        config: PathBuf,
        /// `entries` or `reports`.
        #[arg(long, default_value = "entries")]
        what: String,
        /// First day, YYYY-MM-DD (China Standard Time).
        #[arg(long)]
        from: String,
        /// Last day (inclusive); default the first.
        #[arg(long)]
        to: Option<String>,
        /// Output file: .csv or .xlsx.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum ProbeCommand {
    /// List serial ports, then read ten temperatures and print them with their raw frames.
    Thermometer {
        /// Take the port and protocol from this config's [devices.thermometer].
        #[arg(long, conflicts_with = "port")]
        config: Option<PathBuf>,
        /// Or give the port…
        #[arg(long, required_unless_present = "config")]
        port: Option<PathBuf>,
        /// …its protocol (gy-mcu90614, ascii; Modbus needs a config)…
        #[arg(long, default_value = "gy-mcu90614")]
        protocol: String,
        /// …and baud rate.
        #[arg(long, default_value_t = 9600)]
        baud: u32,
        /// How many readings.
        #[arg(long, default_value_t = 10)]
        count: usize,
        /// Daily self-check: the reference temperature (blackbody, or a known reading) in ℃. With --config, the
        /// result is recorded in the gate's journal. Stop the daemon first: it owns the port.
        #[arg(long)]
        reference: Option<f64>,
        /// Self-check tolerance in ℃.
        #[arg(long, default_value_t = 0.3)]
        tolerance: f64,
    },
    /// Say whether this is a Raspberry Pi with GPIO; with a config, blink each light, sound the buzzer, click the relay.
    Gpio {
        /// The gate config with [devices.gate] backend = "gpio".
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Play every voice prompt through the config's [devices.voice] player.
    Audio {
        /// The gate config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Grab frames from the config's V4L2 camera and try to decode them.
    Camera {
        /// The gate config with [devices.credentials] backend = "v4l2".
        #[arg(long)]
        config: PathBuf,
    },
    /// Ask the config's ID card reader for its SAM status and id, then read one card (masked).
    Idcard {
        /// The gate config with [devices.idcard] backend = "serial".
        #[arg(long)]
        config: PathBuf,
        /// Seconds to wait for the card.
        #[arg(long, default_value_t = 15)]
        timeout: u64,
    },
}

#[derive(Subcommand)]
enum IdcardCommand {
    /// Wait for one card and print it as one JSON object (masked name and number; never the address or photo).
    /// Exit 0 on a read, 1 when no card came in time or the reader reported an error, 2 for an unusable port.
    Read {
        /// The reader's serial port (prefer /dev/serial/by-id/...).
        #[arg(long)]
        port: PathBuf,
        /// Baud rate.
        #[arg(long, default_value_t = 115_200)]
        baud: u32,
        /// Seconds to wait for a card.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
        /// "Now" for `expired` (RFC 3339; default: the clock).
        #[arg(long)]
        at: Option<String>,
    },
    /// Make a new roster key (hex, mode 0600): the community's HMAC key for the ID hashes in the roster.
    RosterKey {
        /// Where to write it (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Turn the office's clear list (CSV building,room,name,id_number) into the box's roster (building,room,masked
    /// name,id_hash) on standard output. Bad rows are refused by line and nothing is written.
    Roster {
        /// The roster key.
        #[arg(long)]
        key: PathBuf,
        /// The clear list (stays at the office).
        #[arg(long)]
        input: PathBuf,
    },
}

#[derive(Subcommand)]
enum MaskCommand {
    /// Judge the masks in each image; prints one JSON line per image: {"file", "faces": [{"box", "mask", "score"}],
    /// "ms"}, faces largest first. Exit 2 for an unreadable image or missing models.
    Scan {
        /// Image files (PNG, JPEG, WebP).
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// The prepared models folder (default: $SIBI_MODELS, /usr/share/sibi/models, ~/.cache/sibi/models/current).
        #[arg(long)]
        models: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CodeCommand {
    /// Decode the QR codes in each image; prints one JSON line per image: {"file", "codes", "ms"}.
    Scan {
        /// Image files (PNG, JPEG, WebP).
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Decoder backend: zxing (default) or rqrr.
        #[arg(long, default_value = "zxing")]
        decoder: String,
        /// Decode each image this many times and report the median time (for benchmarks; 1–1000).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
        repeat: u16,
    },
    /// Verify one credential; prints {"format", "valid", "stage", ...}. Exit 0 valid, 1 invalid, 2 usage or I/O.
    Verify {
        /// The QR text.
        #[arg(long, conflicts_with = "image", required_unless_present = "image")]
        text: Option<String>,
        /// An image holding the QR code.
        #[arg(long)]
        image: Option<PathBuf>,
        /// A DCC signer certificate (DER or PEM, several PEM blocks allowed), a pass public key, or a JSON trust
        /// list; repeatable.
        #[arg(long)]
        trust: Vec<PathBuf>,
        /// The validation clock, RFC 3339 (default: now).
        #[arg(long)]
        at: Option<String>,
        /// A gate config: also trust what it trusts ([credentials]) and verify health codes through its
        /// [health_code] issuers and gateway.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // A one-shot command piped into `head` should end quietly when the pipe closes, as other Unix tools do. The
    // daemons keep Rust's default (SIGPIPE ignored): a closed log socket must never kill a gate.
    if !matches!(cli.command, Command::Run { .. } | Command::Office { .. }) {
        // SAFETY: restoring the default disposition of SIGPIPE before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match cli.command {
        Command::Run { config } => run(config),
        Command::CheckConfig { file } => check_config(file),
        Command::Decide { config, input, pretty, at } => decide(config, input, pretty, at),
        Command::Probe { command } => probe(command),
        Command::Sync { config, now } => sync(config, now),
        Command::Report { config, date, json, out, queue } => report(config, date, json, out, queue),
        Command::Office { command: OfficeCommand::Serve { config } } => office_serve(config),
        Command::Office {
            command:
                OfficeCommand::Publish {
                    config,
                    community,
                    tier,
                    effective,
                    revoke,
                    quarantine_list,
                    quarantine,
                    release,
                    courier,
                    issuer,
                    dcc_signer,
                },
        } => office_publish(
            config,
            &community,
            tier,
            effective,
            PublishLists { revoke, quarantine_list, quarantine, release, courier, issuer, dcc_signer },
        ),
        Command::Office { command: OfficeCommand::Export { config, what, from, to, out } } => {
            office_export(config, &what, &from, to.as_deref(), &out)
        }
        Command::Console { command: ConsoleCommand::HashPin { pin } } => hash_pin(pin),
        Command::VoiceList => {
            for v in sibi::policy::Voice::ALL {
                println!("{}\t{}", v.key(), v.zh());
            }
            ExitCode::SUCCESS
        }
        Command::Code { command: CodeCommand::Scan { images, decoder, repeat } } => code_scan(images, &decoder, repeat),
        Command::Idcard { command } => idcard(command),
        Command::Mask { command: MaskCommand::Scan { images, models } } => {
            ExitCode::from(sibi::mask::scan::run(&images, models.as_deref()))
        }
        Command::Code { command: CodeCommand::Verify { text, image, trust, at, config } } => {
            code_verify(text, image, trust, at, config)
        }
        Command::Keygen { out, name, kind } => keygen(&out, &name, &kind),
        Command::Pass {
            command: PassCommand::Issue { key, community, community_name, id, category, holder, from, until, out },
        } => pass_issue(PassArgs { key, community, community_name, id, category, holder, from, until, out }),
    }
}

fn keygen(dir: &std::path::Path, name: &str, kind: &str) -> ExitCode {
    if kind == "seal" {
        return match sibi::privacy::write_key_pair(dir, name) {
            Ok((secret, public)) => {
                println!("secret key: {} (stays at the office; it opens sealed personal data)", secret.display());
                println!("public key: {} (give it to every gate: [privacy] office_key)", public.display());
                ExitCode::SUCCESS
            }
            Err(e) => usage_error(&e),
        };
    }
    let key = match sibi::credential::pass::generate_key() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match sibi::credential::pass::write_key_pair(dir, name, &key) {
        Ok((private, public)) => {
            println!("private key: {} (keep it private: it signs passes, or this gate's batches)", private.display());
            println!("public key:  {} (give it to the gates, or to the office to enroll this gate)", public.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

struct PassArgs {
    key: PathBuf,
    community: String,
    community_name: Option<String>,
    id: String,
    category: String,
    holder: String,
    from: Option<String>,
    until: String,
    out: PathBuf,
}

/// A day (China time) or an RFC 3339 time, in Unix seconds; `end` takes the end of the day.
fn parse_day(s: &str, end: bool) -> Option<i64> {
    if let Some(t) = Timestamp::parse_rfc3339(s) {
        return Some(t.0 / 1000);
    }
    let clock = if end { "23:59:59" } else { "00:00:00" };
    Timestamp::parse_rfc3339(&format!("{s}T{clock}+08:00")).map(|t| t.0 / 1000)
}

fn pass_issue(a: PassArgs) -> ExitCode {
    use sibi::credential::pass::{Pass, card_svg, read_signing_key};
    let usage = |msg: String| {
        eprintln!("error: {msg}");
        ExitCode::from(2)
    };
    let key = match read_signing_key(&a.key) {
        Ok(k) => k,
        Err(e) => return usage(e),
    };
    let Some(category) = sibi::domain::Category::ALL.into_iter().find(|c| c.as_str() == a.category) else {
        return usage(format!(
            "--category `{}`: use resident, visitor, courier, work_resumption or service",
            a.category
        ));
    };
    if a.id.trim().is_empty() || a.community.trim().is_empty() || a.holder.trim().is_empty() {
        return usage("--id, --community and --holder must not be empty".into());
    }
    let from = match a.from.as_deref().map(|f| parse_day(f, false)) {
        None => sibi::hw::now().0 / 1000,
        Some(Some(t)) => t,
        Some(None) => {
            return usage(format!("--from `{}` is not YYYY-MM-DD or RFC 3339", a.from.unwrap_or_default()));
        }
    };
    let Some(until) = parse_day(&a.until, true) else {
        return usage(format!("--until `{}` is not YYYY-MM-DD or RFC 3339", a.until));
    };
    if until <= from {
        return usage("--until is not after --from".into());
    }
    let pass = Pass {
        community: a.community.clone(),
        id: a.id.clone(),
        category,
        holder: sibi::domain::mask_name(&a.holder),
        valid_from: from,
        valid_until: until,
    };
    let text = pass.encode(&key);
    let svg = match zxingcpp::create(zxingcpp::BarcodeFormat::QRCode).options("ecLevel=M").from_str(&text) {
        Ok(q) => match q.to_svg() {
            Ok(svg) => svg,
            Err(e) => return usage(format!("cannot render the QR code: {e}")),
        },
        Err(e) => return usage(format!("cannot make the QR code: {e}")),
    };
    let png = match sibi::credential::qr::render(&text, 8) {
        Ok(p) => p,
        Err(e) => return usage(e),
    };
    let card = card_svg(&pass, a.community_name.as_deref().unwrap_or(&a.community), &svg);
    let png_path = a.out.with_extension("png");
    let written = std::fs::write(&a.out, card)
        .map_err(|e| e.to_string())
        .and_then(|()| png.save(&png_path).map_err(|e| e.to_string()));
    match written {
        Ok(()) => {
            println!("card: {}", a.out.display());
            println!("qr:   {}", png_path.display());
            println!("text: {text}");
            ExitCode::SUCCESS
        }
        Err(e) => usage(format!("cannot write {}: {e}", a.out.display())),
    }
}

/// `sibi code verify`.
fn code_verify(
    text: Option<String>,
    image: Option<PathBuf>,
    trust: Vec<PathBuf>,
    at: Option<String>,
    config: Option<PathBuf>,
) -> ExitCode {
    use sibi::credential::{Format, Trust, VerifyReport, qr};
    let usage = |msg: String| {
        eprintln!("error: {msg}");
        ExitCode::from(2)
    };
    let now = match at.as_deref().map(Timestamp::parse) {
        None => sibi::hw::now(),
        Some(Ok(t)) => t,
        Some(Err(e)) => return usage(format!("--at {e}")),
    };
    let mut trusted = match config.map(|p| sibi::config::load(&p)) {
        None => Trust::default(),
        Some(Ok(c)) => match sibi::app::current_trust(&c) {
            Ok(t) => t,
            Err(e) => return usage(format!("{e:#}")),
        },
        Some(Err(e)) => return usage(format!("{e}")),
    };
    for path in &trust {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => return usage(format!("cannot read --trust `{}`: {e}", path.display())),
        };
        if let Err(e) = trusted.add_file(&bytes) {
            return usage(format!("--trust `{}`: not a pass key, certificate or trust list: {e}", path.display()));
        }
    }
    let text = match (text, image) {
        (Some(t), _) => t,
        (None, Some(path)) => {
            let frame = match qr::load_luma(&path) {
                Ok(f) => f,
                Err(e) => return usage(format!("--image `{}`: {e}", path.display())),
            };
            match qr::DecoderKind::Zxing.decoder().decode(&frame) {
                Ok(codes) if !codes.is_empty() => codes[0].clone(),
                _ => {
                    let report =
                        VerifyReport::failed(Format::Unknown, "picture_decode", "no QR code found in the image");
                    println!("{}", report.to_json());
                    return ExitCode::from(1);
                }
            }
        }
        (None, None) => return usage("give --text or --image".into()),
    };
    let report = sibi::credential::verify_text(&text, &trusted, now);
    println!("{}", report.to_json());
    if report.valid { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// `sibi probe`. Exit 0 when the device answered, 1 when it did not, 2 for usage or config errors.
fn probe(command: ProbeCommand) -> ExitCode {
    use sibi::probe;
    let load = |path: &PathBuf| probe::load(path);
    match command {
        ProbeCommand::Thermometer { config, port, protocol, baud, count, reference, tolerance } => {
            let mut gate = None;
            let settings = match (config, port) {
                (Some(path), _) => match load(&path) {
                    Ok(c) => match probe::serial_of(&c).cloned() {
                        Some(s) => {
                            gate = Some(c);
                            s
                        }
                        None => {
                            eprintln!("error: {} has no `[devices.thermometer] backend = \"serial\"`", path.display());
                            return ExitCode::from(2);
                        }
                    },
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                },
                (None, Some(port)) => {
                    let toml =
                        format!("port = {:?}\nbaud = {baud}\nprotocol = {protocol:?}\n", port.display().to_string());
                    match toml::from_str::<sibi::hw::serial::SerialSettings>(&toml) {
                        Ok(s) => s,
                        Err(e) => {
                            eprintln!("error: {}", e.message());
                            return ExitCode::from(2);
                        }
                    }
                }
                (None, None) => return usage_error("give --config or --port"),
            };
            let check = match reference.map(|r| (Celsius::from_f64(r), Celsius::from_f64(tolerance))) {
                None => None,
                Some((Some(r), Some(t)))
                    if (30.0..=45.0).contains(&r.as_f64()) && (0.0..=2.0).contains(&t.as_f64()) =>
                {
                    Some((r, t))
                }
                Some(_) => return usage_error("--reference is 30–45 ℃ and --tolerance 0–2 ℃"),
            };
            let bodies = probe::thermometer(&settings, count, std::time::Duration::from_secs(10));
            let Some((r, t)) = check else {
                return if bodies.is_empty() { ExitCode::from(1) } else { ExitCode::SUCCESS };
            };
            let (ok, line) = probe::self_check(&bodies, r, t);
            if let Some(c) = gate {
                match sibi::store::Store::open(&c.db_path, &c.gate.id)
                    .and_then(|mut s| s.journal(sibi::hw::now(), "thermometer_self_check", &line))
                {
                    Ok(()) => println!("recorded in {}", c.db_path.display()),
                    Err(e) => eprintln!("error: could not record the self-check in {}: {e}", c.db_path.display()),
                }
            }
            if ok { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        ProbeCommand::Gpio { config } => {
            let config = match config.as_ref().map(load).transpose() {
                Ok(c) => c,
                Err(e) => return usage_error(&e),
            };
            match probe::gpio(config.as_ref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    println!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        ProbeCommand::Audio { config } => {
            let c = match load(&config) {
                Ok(c) => c,
                Err(e) => return usage_error(&e),
            };
            match probe::audio(&c.devices.voice) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    println!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        ProbeCommand::Idcard { config, timeout } => {
            let c = match load(&config) {
                Ok(c) => c,
                Err(e) => return usage_error(&e),
            };
            let Some(sibi::config::IdCardBackend::Serial(settings)) = c.devices.idcard else {
                return usage_error(&format!("{} has no `[devices.idcard] backend = \"serial\"`", config.display()));
            };
            let ok = sibi::hw::idcard::cli::probe(&settings, std::time::Duration::from_secs(timeout));
            if ok { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        ProbeCommand::Camera { config } => {
            let c = match load(&config) {
                Ok(c) => c,
                Err(e) => return usage_error(&e),
            };
            let sibi::config::CredentialBackend::V4l2 { settings, .. } = c.devices.credentials else {
                return usage_error(&format!("{} has no `[devices.credentials] backend = \"v4l2\"`", config.display()));
            };
            let judge = match &c.mask {
                Some(m) => match sibi::mask::MaskJudge::open(m.models.as_deref()) {
                    Ok(j) => Some(j),
                    Err(e) => {
                        println!("mask judge: {e}");
                        None
                    }
                },
                None => None,
            };
            if probe::camera(settings, 10, judge.as_ref()) { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
    }
}

/// `sibi idcard …`.
fn idcard(command: IdcardCommand) -> ExitCode {
    use sibi::hw::idcard::cli;
    match command {
        IdcardCommand::Read { port, baud, timeout, at } => {
            let now = match at.as_deref().map(Timestamp::parse) {
                None => sibi::hw::now(),
                Some(Ok(t)) => t,
                Some(Err(e)) => return usage_error(&format!("--at {e}")),
            };
            if !(timeout.is_finite() && (0.1..=3600.0).contains(&timeout)) {
                return usage_error(&format!("--timeout {timeout}: give 0.1–3600 seconds"));
            }
            let settings = sibi::hw::idcard::IdCardSettings { port, baud };
            if let Some(p) = settings.problems().first() {
                return usage_error(p);
            }
            let today = sibi::hw::idcard::Ymd::from(now.china().date());
            ExitCode::from(cli::read_command(&settings, std::time::Duration::from_secs_f64(timeout), today))
        }
        IdcardCommand::RosterKey { out } => match cli::roster_key(&out) {
            Ok(()) => {
                eprintln!("wrote {} (keep it with the roster; every gate of the community needs it)", out.display());
                ExitCode::SUCCESS
            }
            Err(e) => usage_error(&e),
        },
        IdcardCommand::Roster { key, input } => match cli::roster(&key, &input, &mut std::io::stdout()) {
            Ok(n) => {
                eprintln!("{n} residents");
                ExitCode::SUCCESS
            }
            Err(e) => usage_error(&e),
        },
    }
}

/// `sibi sync`: exit 0 when the backlog is empty (or only status was asked), 1 when the office could not be reached.
fn sync(path: PathBuf, now: bool) -> ExitCode {
    let config = match sibi::config::load(&path) {
        Ok(c) => c,
        Err(e) => return usage_error(&e.to_string()),
    };
    let Some(s) = &config.sync else {
        return usage_error(&format!("{} has no [sync] section: records stay on this gate", path.display()));
    };
    let mut store = match sibi::store::Store::open(&config.db_path, &config.gate.id) {
        Ok(s) => s,
        Err(e) => return usage_error(&e.to_string()),
    };
    let mut code = ExitCode::SUCCESS;
    if now {
        let client = sibi::sync::SyncClient::new(&s.settings, &config.gate.id, s.key.clone());
        match client.exchange(&mut store) {
            Ok((n, r)) => println!("sent {n} entries and {r} daily reports to {}", s.settings.office),
            Err(e) => {
                println!("sync failed: {e}");
                code = ExitCode::from(1);
            }
        }
    }
    match store.sync_status() {
        Ok(st) => println!("{}", sibi::sync::describe(&st)),
        Err(e) => return usage_error(&e.to_string()),
    }
    code
}

/// `sibi report`.
fn report(path: PathBuf, date: Option<String>, json: bool, out: Option<PathBuf>, queue: bool) -> ExitCode {
    let config = match sibi::config::load(&path) {
        Ok(c) => c,
        Err(e) => return usage_error(&e.to_string()),
    };
    let date = date.unwrap_or_else(|| sibi::hw::now().to_rfc3339()[..10].to_string());
    let mut store = match sibi::store::Store::open(&config.db_path, &config.gate.id) {
        Ok(s) => s,
        Err(e) => return usage_error(&e.to_string()),
    };
    let r = match sibi::report::daily(&store, &config.gate.id, &config.gate.community, &date) {
        Ok(Some(r)) => r,
        Ok(None) => return usage_error(&format!("--date `{date}`: give a day as YYYY-MM-DD")),
        Err(e) => return usage_error(&e.to_string()),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    } else {
        print!("{}", r.to_text());
    }
    if let Some(file) = out
        && let Err(e) = r.to_table().write(&file)
    {
        return usage_error(&e);
    }
    if queue {
        if let Err(e) = sibi::sync::queue_report(&mut store, &config.gate.id, &config.gate.community, &date) {
            return usage_error(&e);
        }
        eprintln!("queued for the office");
    }
    ExitCode::SUCCESS
}

/// `sibi console hash-pin`.
fn hash_pin(pin: Option<String>) -> ExitCode {
    let pin = match pin {
        Some(p) => p,
        None => {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err() {
                return usage_error("cannot read the PIN from stdin");
            }
            line.trim().to_string()
        }
    };
    if !(4..=12).contains(&pin.len()) || !pin.bytes().all(|b| b.is_ascii_digit()) {
        return usage_error("a PIN is 4–12 digits");
    }
    match sibi::console::auth::hash_pin(&pin) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => usage_error(&e),
    }
}

/// The list changes of `sibi office publish`.
struct PublishLists {
    revoke: Vec<String>,
    quarantine_list: Option<PathBuf>,
    quarantine: Vec<String>,
    release: Vec<String>,
    courier: Vec<String>,
    issuer: Vec<String>,
    dcc_signer: Vec<PathBuf>,
}

/// `sibi office publish`.
fn office_publish(
    path: PathBuf,
    community: &str,
    tier: Option<String>,
    effective: Option<String>,
    lists: PublishLists,
) -> ExitCode {
    use base64::Engine;
    let config = match sibi::office::load(&path) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    let Some(key) = &config.signing_key else {
        return usage_error(&format!("{} has no `office.signing_key`: bundles cannot be signed", path.display()));
    };
    let change = match tier {
        None => None,
        Some(t) => {
            let Ok(tier) = serde_json::from_value::<sibi::domain::Tier>(serde_json::Value::String(t.clone())) else {
                return usage_error(&format!("--tier `{t}`: use low, medium or high"));
            };
            // Any accepted form in; RFC 3339 (China time) in the signed bundle.
            let at = match effective.as_deref().map(Timestamp::parse) {
                None => sibi::hw::now(),
                Some(Ok(t)) => t,
                Some(Err(e)) => return usage_error(&format!("--effective {e}")),
            };
            Some(sibi::bundle::BundleTier { tier, effective: at.to_rfc3339() })
        }
    };
    let mut issuers = Vec::new();
    for i in &lists.issuer {
        match i.splitn(3, ',').collect::<Vec<_>>()[..] {
            [name, region, prefix] if !name.is_empty() && !prefix.is_empty() => {
                issuers.push(sibi::credential::health_code::Issuer {
                    name: name.into(),
                    region: region.into(),
                    prefixes: vec![prefix.into()],
                })
            }
            _ => return usage_error(&format!("--issuer `{i}`: expected `name,region,prefix`")),
        }
    }
    let mut dcc_signers = Vec::new();
    for p in &lists.dcc_signer {
        let bytes = match std::fs::read(p) {
            Ok(b) => b,
            Err(e) => return usage_error(&format!("--dcc-signer `{}`: {e}", p.display())),
        };
        let der = match x509_der(&bytes) {
            Ok(d) => d,
            Err(e) => return usage_error(&format!("--dcc-signer `{}`: {e}", p.display())),
        };
        dcc_signers.push(base64::engine::general_purpose::STANDARD.encode(der));
    }
    let quarantine_list = match &lists.quarantine_list {
        None => None,
        Some(p) => {
            match std::fs::read_to_string(p).map_err(|e| e.to_string()).and_then(|t| sibi::bundle::parse_id_list(&t)) {
                Ok(ids) => Some(ids),
                Err(e) => return usage_error(&format!("--quarantine-list `{}`: {e}", p.display())),
            }
        }
    };
    let changes = sibi::bundle::Changes {
        tier: change,
        revoke: lists.revoke,
        quarantine_list,
        quarantine: lists.quarantine,
        release: lists.release,
        couriers: lists.courier,
        issuers,
        dcc_signers,
    };
    if changes.is_empty() {
        return usage_error(
            "nothing to publish: give --tier, --revoke, --quarantine-list, --quarantine, --release, --courier, --issuer or \
             --dcc-signer",
        );
    }
    let published = sibi::office::OfficeDb::open(&config.database)
        .and_then(|mut db| db.publish(key, community, &changes, sibi::hw::now()));
    match published {
        Ok(b) => {
            println!("published bundle for {community}: {}", b.summary().replacen("applied ", "", 1));
            ExitCode::SUCCESS
        }
        Err(e) => usage_error(&e),
    }
}

/// A certificate file's DER: PEM (the first CERTIFICATE block) or DER as is.
fn x509_der(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        let pem = x509_parser::pem::Pem::iter_from_buffer(bytes)
            .filter_map(Result::ok)
            .find(|p| p.label == "CERTIFICATE")
            .ok_or("no CERTIFICATE block in the PEM file")?;
        Ok(pem.contents)
    } else {
        sibi::credential::dcc::Signer::from_der(bytes)?;
        Ok(bytes.to_vec())
    }
}

/// `sibi office export`.
fn office_export(path: PathBuf, what: &str, from: &str, to: Option<&str>, out: &std::path::Path) -> ExitCode {
    let config = match sibi::office::load(&path) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    let to = to.unwrap_or(from);
    let (Some((start, _)), Some((_, end))) = (sibi::report::day_bounds(from), sibi::report::day_bounds(to)) else {
        return usage_error(&format!("--from `{from}` / --to `{to}`: use YYYY-MM-DD"));
    };
    if end <= start {
        return usage_error("--to is before --from");
    }
    let mut db = match sibi::office::OfficeDb::open(&config.database) {
        Ok(db) => db,
        Err(e) => return usage_error(&e),
    };
    let table = match what {
        "entries" => {
            let secret = match config.seal_key.as_deref().map(sibi::privacy::read_secret) {
                None => {
                    eprintln!("note: no `office.seal_key`: names, phones and ID numbers are written masked");
                    None
                }
                Some(Ok(k)) => Some(k),
                Some(Err(e)) => return usage_error(&format!("`office.seal_key`: {e}")),
            };
            match db.entries_between(start, end) {
                Ok(rows) => sibi::office::export::entries_table(&rows, secret.as_ref()),
                Err(e) => return usage_error(&e),
            }
        }
        "reports" => match db.reports_between(from, to) {
            Ok(reports) => sibi::office::export::reports_table(&reports, config.report_due_hour),
            Err(e) => return usage_error(&e),
        },
        other => return usage_error(&format!("--what `{other}`: use entries or reports")),
    };
    match table.write(out) {
        Ok(()) => {
            println!("wrote {} {what} row(s) from {from} to {to} to {}", table.rows.len(), out.display());
            ExitCode::SUCCESS
        }
        Err(e) => usage_error(&e),
    }
}

/// `sibi office serve`.
fn office_serve(path: PathBuf) -> ExitCode {
    let config = match sibi::office::load(&path) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    init_logging();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return usage_error(&format!("cannot start the async runtime: {e}")),
    };
    let result: Result<(), String> = rt.block_on(async {
        let listen = config.listen;
        let office = sibi::office::Office::open(config)?;
        let listener =
            tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        tracing::info!(%listen, "street office serving");
        let mut systemd = sibi::systemd::Notifier::from_env();
        systemd.ready(&format!("serving on {listen}"));
        // The office's watchdog: pinged by a task on the same runtime that serves the requests.
        if let Some(period) = systemd.watchdog() {
            tokio::spawn(async move {
                let mut every = tokio::time::interval(period / 3);
                loop {
                    every.tick().await;
                    systemd.alive();
                }
            });
        }
        let result = sibi::office::serve(office, listener, stop_signal()).await.map_err(|e| e.to_string());
        sibi::systemd::Notifier::from_env().stopping();
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

fn init_logging() {
    sibi::systemd::init_logging();
}

fn run(path: PathBuf) -> ExitCode {
    let config = match sibi::config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(async { sibi::app::run(config, stop_signal()).await }) {
        Ok(summary) if summary.clean => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Registers SIGINT and SIGTERM handlers at once (so a stop during start-up is not lost) and returns a future that
/// resolves on either. Must be called inside the runtime.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    async move {
        match (int, term) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// `sibi code scan`: `ms` is the decode time alone (the image is loaded first). An image that cannot be read gets a
/// line with an `error` and makes the exit status 2; images with no code are not an error.
fn code_scan(images: Vec<PathBuf>, decoder: &str, repeat: u16) -> ExitCode {
    use sibi::credential::qr::{DecoderKind, load_luma};
    let Some(kind) = DecoderKind::parse(decoder) else {
        eprintln!("error: --decoder `{decoder}`: use zxing or rqrr");
        return ExitCode::from(2);
    };
    #[derive(serde::Serialize)]
    struct Line {
        file: String,
        codes: Vec<String>,
        ms: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    }
    let decoder = kind.decoder();
    let mut status = ExitCode::SUCCESS;
    for path in images {
        let file = path.display().to_string();
        let line = match load_luma(&path) {
            Err(e) => {
                status = ExitCode::from(2);
                Line { file, codes: vec![], ms: 0.0, error: Some(e) }
            }
            Ok(frame) => {
                let mut times = Vec::with_capacity(usize::from(repeat));
                let mut result = Ok(Vec::new());
                for _ in 0..repeat {
                    let t = std::time::Instant::now();
                    result = decoder.decode(&frame);
                    times.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                times.sort_by(f64::total_cmp);
                let ms = times[times.len() / 2];
                match result {
                    Ok(codes) => Line { file, codes, ms, error: None },
                    Err(e) => Line { file, codes: vec![], ms, error: Some(e.to_string()) },
                }
            }
        };
        match serde_json::to_string(&line) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("error: cannot print the result for {}: {e}", line.file),
        }
    }
    status
}

fn check_config(path: PathBuf) -> ExitCode {
    match sibi::config::load(&path) {
        Ok(c) => {
            let tier = c.policy.tier_at(sibi::hw::now());
            println!("ok: {}", path.display());
            println!("  gate        {} ({}), community {}", c.gate.id, c.gate.name, c.gate.community);
            println!("  state       {}", c.gate.state_dir.display());
            println!("  database    {}", c.db_path.display());
            println!(
                "  policy      {}; threshold {}; tier now {} since {}",
                c.policy.version,
                c.policy.fever_threshold,
                tier.tier.as_str(),
                tier.effective
            );
            for line in c.devices.describe() {
                println!("  {line}");
            }
            match &c.mask {
                None => println!("  mask        by the operator (no [mask] section)"),
                Some(m) => match sibi::mask::Models::locate(m.models.as_deref()) {
                    Ok(dir) => println!("  mask        by the camera, models in {}", dir.display()),
                    Err(e) => println!("  mask        by the operator for now: {e}"),
                },
            }
            if c.devices.idcard.is_some() {
                let health = if c.credentials.gateway.is_some() { "by ID through the gateway" } else { "unverified" };
                println!(
                    "  id cards    {} residents on the roster by keyed hash; health status {health}",
                    c.idcard.roster.len()
                );
            }
            match &c.sync {
                Some(s) => println!(
                    "  sync        {} every {} s, report at {}:00, policy bundles {}; personal data {}, kept {} days",
                    s.settings.office,
                    s.settings.interval_secs,
                    s.settings.report_hour,
                    if s.office_key.is_some() { "verified with the office key" } else { "not fetched (no office_key)" },
                    if c.seal_key.is_some() { "sealed to the office" } else { "not kept (masks only)" },
                    c.retention_ms / 86_400_000
                ),
                None => println!("  sync        none: records stay on this gate"),
            }
            if let Some(s) = &c.script {
                println!("  script      {} ({} events, speed {})", s.file.display(), s.script.events.len(), s.speed);
            }
            if let Some(console) = &c.console {
                println!(
                    "  console     http://{}/ ({} operator(s), lock after {} wrong PINs for {} s, {} roster entries{})",
                    console.listen,
                    console.operators.len(),
                    console.lockout_failures,
                    console.lockout.as_secs(),
                    console.roster.len(),
                    if console.simulator { ", simulator on" } else { "" }
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn decide(config: PathBuf, input: PathBuf, pretty: bool, at: Option<String>) -> ExitCode {
    let policy = match sibi::config::load_policy(&config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let now = match at {
        None => sibi::hw::now(),
        Some(s) => match Timestamp::parse(&s) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: --at {e}");
                return ExitCode::from(2);
            }
        },
    };
    let text = if input.as_os_str() == "-" {
        let mut s = String::new();
        match std::io::Read::read_to_string(&mut std::io::stdin(), &mut s) {
            Ok(_) => s,
            Err(e) => {
                eprintln!("error: cannot read the case from standard input: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        match std::fs::read_to_string(&input) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot read `{}`: {e}", input.display());
                return ExitCode::from(2);
            }
        }
    };
    match sibi::dryrun::run(&policy, &text, now) {
        Ok(decision) => {
            let out = if pretty { serde_json::to_string_pretty(&decision) } else { serde_json::to_string(&decision) };
            match out {
                Ok(s) => {
                    println!("{s}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: cannot print the decision: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Err(e) => {
            eprintln!("error: bad input in `{}`: {e}", input.display());
            ExitCode::from(2)
        }
    }
}

//! The `sibi` command line. Exit codes: 0 success, 1 failure while running, 2 bad usage, input or config.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use sibi::cli::Outcome;

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
    /// Enrol gates (or child offices) from a CSV file `id,name,community,public_key[,kind]`: all rows or, if any is
    /// bad, none (each bad row is named by line).
    Enroll {
        /// The office config.
        #[arg(long)]
        config: PathBuf,
        /// The CSV file (a header row, then one signer per line; the key as in its `.pub` file or bare hex).
        #[arg(long)]
        csv: PathBuf,
    },
    /// 四级联动: this office's roll-up of a day (counts only) as JSON; `--send` sends it to `[upstream]`.
    Rollup {
        /// The office config.
        #[arg(long)]
        config: PathBuf,
        /// The day, YYYY-MM-DD (China Standard Time); default today.
        #[arg(long)]
        date: Option<String>,
        /// Send it to the parent office now.
        #[arg(long)]
        send: bool,
    },
    /// A district (or city) designates a community's risk tier, signed; its streets republish it to their gates.
    Designate {
        /// The office config (with `signing_key`).
        #[arg(long)]
        config: PathBuf,
        /// The community.
        #[arg(long)]
        community: String,
        /// low, medium or high.
        #[arg(long)]
        tier: String,
        /// When it takes effect (default now).
        #[arg(long)]
        effective: Option<String>,
    },
    /// The tiers designated for this office's communities; `--apply` fetches them from `[upstream]` first and
    /// republishes the newer ones to the gates.
    Designations {
        /// The office config.
        #[arg(long)]
        config: PathBuf,
        /// Fetch and apply now.
        #[arg(long)]
        apply: bool,
    },
    /// The 问题清单: open problems (a missing report, a silent gate, a fever to follow up, a failed self-check).
    Problems {
        /// The office config.
        #[arg(long)]
        config: PathBuf,
        /// Closed ones too.
        #[arg(long)]
        all: bool,
    },
    /// Close a problem with who closed it and what was done (journaled; the levels above see it at the next roll-up).
    CloseProblem {
        /// The office config.
        #[arg(long)]
        config: PathBuf,
        /// The problem's key (from `sibi office problems`).
        #[arg(long)]
        key: String,
        /// Who closed it.
        #[arg(long)]
        by: String,
        /// What was done.
        #[arg(long)]
        note: String,
    },
    /// List the enrolled gates and child offices (office.toml's and the database's, revoked ones too).
    Gates {
        /// The office config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Revoke an enrolment: the signer's requests are refused from now on.
    Revoke {
        /// The office config.
        #[arg(long)]
        config: PathBuf,
        /// The gate's (or child office's) id.
        #[arg(long)]
        id: String,
    },
    /// Export entries or daily reports for a date range as CSV or XLSX (by the file's extension). Personal data is
    /// opened with `office.seal_key`; without it the masked forms are written.
    Export {
        /// The office config.
        #[arg(long)]
        config: PathBuf,
        /// `entries`, `reports`, or `rollups` (any level: one row per day and unit, counts only).
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
    if !matches!(cli.command, Command::Run { .. } | Command::Office { command: OfficeCommand::Serve { .. } }) {
        // SAFETY: restoring the default disposition of SIGPIPE before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if !failure.message().is_empty() {
                eprintln!("error: {failure}");
            }
            ExitCode::from(failure.status())
        }
    }
}

/// Each command's body lives beside the module it drives.
fn dispatch(command: Command) -> Outcome {
    use sibi::{app, config, console, credential, dryrun, hw, keys, mask, office, probe, report, sync};
    match command {
        Command::Run { config } => app::run_command(&config),
        Command::CheckConfig { file } => config::check_command(&file),
        Command::Decide { config, input, pretty, at } => dryrun::command(&config, &input, pretty, at.as_deref()),
        Command::Keygen { out, name, kind } => keys::keygen_command(&out, &name, &kind),
        Command::Pass {
            command: PassCommand::Issue { key, community, community_name, id, category, holder, from, until, out },
        } => credential::cli::issue(credential::cli::IssueArgs {
            key,
            community,
            community_name,
            id,
            category,
            holder,
            from,
            until,
            out,
        }),
        Command::Mask { command: MaskCommand::Scan { images, models } } => mask::scan::run(&images, models.as_deref()),
        Command::Idcard { command } => match command {
            IdcardCommand::Read { port, baud, timeout, at } => {
                hw::idcard::cli::read_command(port, baud, timeout, at.as_deref())
            }
            IdcardCommand::RosterKey { out } => hw::idcard::cli::roster_key_command(&out),
            IdcardCommand::Roster { key, input } => hw::idcard::cli::roster_command(&key, &input),
        },
        Command::Probe { command } => match command {
            ProbeCommand::Thermometer { config, port, protocol, baud, count, reference, tolerance } => {
                let target = match (config, port) {
                    (Some(path), _) => probe::ThermometerTarget::Config(path),
                    (None, Some(port)) => probe::ThermometerTarget::Port { port, protocol, baud },
                    (None, None) => return Err(sibi::cli::Failure::usage("give --config or --port")),
                };
                probe::thermometer_command(target, count, reference, tolerance)
            }
            ProbeCommand::Gpio { config } => probe::gpio_command(config.as_deref()),
            ProbeCommand::Audio { config } => probe::audio_command(&config),
            ProbeCommand::Camera { config } => probe::camera_command(&config),
            ProbeCommand::Idcard { config, timeout } => {
                probe::idcard_command(&config, std::time::Duration::from_secs(timeout))
            }
        },
        Command::Sync { config, now } => sync::command(&config, now),
        Command::Report { config, date, json, out, queue } => {
            report::command(&config, date, json, out.as_deref(), queue)
        }
        Command::Office { command } => match command {
            OfficeCommand::Serve { config } => office::cli::serve(&config),
            OfficeCommand::Publish {
                config,
                community,
                tier,
                effective,
                revoke,
                quarantine,
                quarantine_list,
                release,
                courier,
                issuer,
                dcc_signer,
            } => office::cli::publish(
                &config,
                office::cli::PublishArgs {
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
            ),
            OfficeCommand::Enroll { config, csv } => office::cli::enroll(&config, &csv),
            OfficeCommand::Gates { config } => office::cli::gates(&config),
            OfficeCommand::Problems { config, all } => office::cli::problems(&config, all),
            OfficeCommand::CloseProblem { config, key, by, note } => {
                office::cli::close_problem(&config, &key, &by, &note)
            }
            OfficeCommand::Designate { config, community, tier, effective } => {
                office::cli::designate(&config, &community, &tier, effective.as_deref())
            }
            OfficeCommand::Designations { config, apply } => office::cli::designations(&config, apply),
            OfficeCommand::Rollup { config, date, send } => office::cli::rollup(&config, date.as_deref(), send),
            OfficeCommand::Revoke { config, id } => office::cli::revoke(&config, &id),
            OfficeCommand::Export { config, what, from, to, out } => {
                office::cli::export(&config, &what, &from, to.as_deref(), &out)
            }
        },
        Command::VoiceList => {
            for v in sibi::policy::Voice::ALL {
                println!("{}\t{}", v.key(), v.zh());
            }
            Ok(())
        }
        Command::Console { command: ConsoleCommand::HashPin { pin } } => {
            let hash = console::auth::hash_pin_command(pin, &mut std::io::stdin().lock())?;
            println!("{hash}");
            Ok(())
        }
        Command::Code { command: CodeCommand::Scan { images, decoder, repeat } } => {
            credential::cli::scan(&images, &decoder, repeat)
        }
        Command::Code { command: CodeCommand::Verify { text, image, trust, at, config } } => {
            let input = match (text, image) {
                (Some(t), _) => credential::cli::VerifyInput::Text(t),
                (None, Some(p)) => credential::cli::VerifyInput::Image(p),
                (None, None) => return Err(sibi::cli::Failure::usage("give --text or --image")),
            };
            credential::cli::verify(input, &trust, at.as_deref(), config.as_deref())
        }
    }
}

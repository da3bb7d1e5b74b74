//! `sibi probe`: commissioning checks a technician runs at the gate, each on the real driver the daemon uses.
//!
//! Output is for the technician on site: plain lines, English with the Chinese term where a volunteer would say it.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::{Config, GateBackend, OperatorBackend, ThermometerBackend};
use crate::hw::gpio;
use crate::hw::serial::{Reader, ReaderMsg, SerialSettings};
use crate::hw::{GateCommand, GateOutput, Lights};

/// Serial ports the system lists (and the stable by-id names).
pub fn list_ports() -> Vec<String> {
    let mut out: Vec<String> =
        serialport::available_ports().map(|ports| ports.into_iter().map(|p| p.port_name).collect()).unwrap_or_default();
    if let Ok(dir) = std::fs::read_dir("/dev/serial/by-id") {
        out.extend(dir.flatten().map(|e| e.path().display().to_string()));
    }
    out.sort();
    out
}

/// Read `count` frames from the configured thermometer, printing each raw frame and the body temperature it gives.
/// Returns the in-range body temperatures (empty if nothing arrived within `timeout`).
pub fn thermometer(settings: &SerialSettings, count: usize, timeout: Duration) -> Vec<crate::domain::Celsius> {
    println!("ports: {}", list_ports().join(", "));
    println!("reading {} ({:?} at {} baud)…", settings.port.display(), settings.protocol, settings.baud);
    let reader = match Reader::start(settings) {
        Ok(r) => r,
        Err(e) => {
            println!("cannot start the reader: {e}");
            return Vec::new();
        }
    };
    let mut bodies = Vec::new();
    let end = Instant::now() + timeout;
    let mut got = 0;
    while got < count {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match reader.rx.recv_timeout(left) {
            Ok(ReaderMsg::Reading(r)) => {
                got += 1;
                let hex: Vec<String> = r.frame.iter().map(|b| format!("{b:02X}")).collect();
                let body = match settings.calibration.body(&r) {
                    Ok(b) => {
                        bodies.push(b);
                        format!("body {b}")
                    }
                    Err(_) => "out of range (nobody in front of the sensor?)".into(),
                };
                let ambient = r.ambient.map(|a| format!(" ambient {a}")).unwrap_or_default();
                println!("{got:2}. [{}] surface {}{ambient} → {body}", hex.join(" "), r.object);
            }
            Ok(ReaderMsg::Rejected(why)) => println!("    frame without a reading: {why}"),
            Ok(ReaderMsg::Fault(why)) => println!("    fault: {why}"),
            Ok(ReaderMsg::Restored(gap)) => println!("    back after {} ms", gap.as_millis()),
            Err(_) => break,
        }
    }
    if got == 0 {
        println!("no reading within {} s: check wiring (TX↔RX), power, baud rate and protocol", timeout.as_secs());
    }
    bodies
}

/// The daily self-check against a reference (a blackbody, or a person whose temperature is known): the median of
/// `bodies` within `tolerance` of `reference`. Prints the verdict; returns (passed, a line for the journal).
pub fn self_check(
    bodies: &[crate::domain::Celsius],
    reference: crate::domain::Celsius,
    tolerance: crate::domain::Celsius,
) -> (bool, String) {
    let mut v = bodies.to_vec();
    v.sort();
    let Some(&median) = v.get(v.len() / 2) else {
        return (false, format!("reference {reference}: no reading"));
    };
    let ok = crate::hw::thermo::self_check(reference, median, tolerance);
    let line = format!(
        "reference {reference}, median of {} readings {median}, tolerance {tolerance}: {}",
        v.len(),
        if ok { "pass" } else { "FAIL" }
    );
    println!("self-check {line}{}", if ok { " (自检通过)" } else { " (自检未通过：请校准 calibration.offset)" });
    (ok, line)
}

/// Click the relay and blink each light, on the configured pins. Returns the error message if there is no GPIO.
pub fn gpio(config: Option<&Config>) -> Result<(), String> {
    let board = gpio::pi::probe()?;
    println!("GPIO: {board}");
    let Some(GateBackend::Gpio { settings, pulse }) = config.map(|c| &c.devices.gate) else {
        println!("no `[devices.gate] backend = \"gpio\"` in the config given: nothing to click");
        return Ok(());
    };
    let mut g = gpio::pi::gate(settings)?;
    let step = |g: &mut dyn GateOutput, what: &str, cmd: GateCommand, hold: Duration| -> Result<(), String> {
        println!("{what}");
        g.apply(&cmd).map_err(|e| e.0)?;
        std::thread::sleep(hold);
        Ok(())
    };
    let second = Duration::from_secs(1);
    step(&mut g, "green light (绿灯)", GateCommand::Lights(Lights { green: true, ..Lights::default() }), second)?;
    step(&mut g, "red light (红灯)", GateCommand::Lights(Lights { red: true, ..Lights::default() }), second)?;
    step(&mut g, "amber light (黄灯)", GateCommand::Lights(Lights { amber: true, ..Lights::default() }), second)?;
    step(&mut g, "buzzer (蜂鸣器)", GateCommand::Buzz { pattern: crate::hw::Buzz::Short }, second)?;
    step(
        &mut g,
        &format!("relay open for {} ms (闸机开)", pulse.as_millis()),
        GateCommand::RelayOpen { seq: 0 },
        *pulse,
    )?;
    step(&mut g, "everything off, relay closed (闸机关)", GateCommand::Safe, Duration::ZERO)?;
    if let OperatorBackend::Gpio(_) = config.map(|c| &c.devices.operator).unwrap_or(&OperatorBackend::Script) {
        println!("buttons: run the daemon and press each; the log names every press");
    }
    Ok(())
}

/// The thermometer settings from a config, if it has a serial one.
pub fn serial_of(config: &Config) -> Option<&SerialSettings> {
    match &config.devices.thermometer {
        ThermometerBackend::Serial(s) => Some(s),
        ThermometerBackend::Script => None,
    }
}

/// Grab frames from the configured V4L2 camera and try to decode them; prints what it found.
/// Grab `frames` frames from the camera, decode QR codes in each and, with a mask judge, show its live verdict on the
/// largest face (for aiming the camera and checking the light at commissioning).
pub fn camera(
    settings: crate::hw::camera::CameraSettings,
    frames: usize,
    judge: Option<&crate::mask::MaskJudge>,
) -> bool {
    use crate::hw::frames::FrameSource;
    println!(
        "camera {} {}x{} @ {} fps {:?}",
        settings.device.display(),
        settings.width,
        settings.height,
        settings.fps,
        settings.format
    );
    let mut cam = match crate::hw::camera::V4l2Camera::start(settings) {
        Ok(c) => c,
        Err(e) => {
            println!("cannot start the camera thread: {e}");
            return false;
        }
    };
    let decoder = crate::credential::qr::DecoderKind::Zxing.decoder();
    cam.keep_colour(judge.is_some());
    let mut got = 0;
    let end = Instant::now() + Duration::from_secs(10);
    while got < frames && Instant::now() < end {
        match cam.next_frame(Duration::from_millis(500)) {
            Ok(crate::hw::Polled::Item(f)) => {
                got += 1;
                let codes = decoder.decode(&f).unwrap_or_default();
                let mask = match (judge, cam.colour()) {
                    (Some(j), Some(picture)) => match j.judge(&picture) {
                        Ok(faces) => match faces.first() {
                            Some(face) => format!(
                                ", face {} px: 口罩 {} (score {:.3})",
                                face.size_px(),
                                face.mask.as_str(),
                                face.score
                            ),
                            None => ", no face".to_string(),
                        },
                        Err(e) => format!(", mask judge failed: {e:#}"),
                    },
                    (Some(_), None) => ", no colour frame yet".to_string(),
                    _ => String::new(),
                };
                println!("frame {got}: {}x{}, {} QR code(s){mask}", f.width(), f.height(), codes.len());
            }
            Ok(_) => {}
            Err(e) => {
                println!("camera fault: {e}");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    got > 0
}

/// Load a config for a probe, or say why not.
pub fn load(path: &Path) -> Result<Config, String> {
    crate::config::load(path).map_err(|e| e.to_string())
}

/// Play every prompt through the configured player, one after another, printing what each should say.
pub fn audio(settings: &crate::hw::voice::VoiceSettings) -> Result<(), String> {
    use crate::hw::voice::{VoiceSettings, clip};
    let VoiceSettings::Player { command, clips } = settings else {
        return Err("`[devices.voice]` is the silent sim backend: nothing to play".into());
    };
    let (program, args) = command.split_first().ok_or("`devices.voice.command` is empty")?;
    for v in crate::policy::Voice::ALL {
        let path = clip(clips, v);
        println!("{:15} {}", v.key(), v.zh());
        let status = std::process::Command::new(program)
            .args(args)
            .arg(&path)
            .status()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if !status.success() {
            return Err(format!("{program} {} failed ({status}): check the speaker and `aplay -l`", path.display()));
        }
    }
    Ok(())
}

/// The thermometer `sibi probe thermometer` reads: a config's `[devices.thermometer]`, or a port given by hand.
pub enum ThermometerTarget {
    /// The gate config (its self-check is then recorded in the gate's journal).
    Config(std::path::PathBuf),
    /// A port, protocol and baud rate.
    Port { port: std::path::PathBuf, protocol: String, baud: u32 },
}

/// `sibi probe thermometer`: lists the ports, reads `count` temperatures, and with `reference` (℃, with
/// `tolerance`) runs the daily self-check. Exit 1 when the thermometer did not answer or the check failed.
pub fn thermometer_command(
    target: ThermometerTarget,
    count: usize,
    reference: Option<f64>,
    tolerance: f64,
) -> crate::cli::Outcome {
    use crate::cli::Failure;
    use crate::domain::Celsius;
    let mut gate = None;
    let settings = match target {
        ThermometerTarget::Config(path) => {
            let c = load(&path).map_err(Failure::Usage)?;
            let s = serial_of(&c).cloned().ok_or_else(|| {
                Failure::usage(format!("{} has no `[devices.thermometer] backend = \"serial\"`", path.display()))
            })?;
            gate = Some(c);
            s
        }
        ThermometerTarget::Port { port, protocol, baud } => {
            let toml = format!("port = {:?}\nbaud = {baud}\nprotocol = {protocol:?}\n", port.display().to_string());
            toml::from_str::<SerialSettings>(&toml).map_err(|e| Failure::usage(e.message()))?
        }
    };
    let check = match reference.map(|r| (Celsius::from_f64(r), Celsius::from_f64(tolerance))) {
        None => None,
        Some((Some(r), Some(t))) if (30.0..=45.0).contains(&r.as_f64()) && (0.0..=2.0).contains(&t.as_f64()) => {
            Some((r, t))
        }
        Some(_) => return Err(Failure::usage("--reference is 30–45 ℃ and --tolerance 0–2 ℃")),
    };
    let bodies = thermometer(&settings, count, Duration::from_secs(10));
    let Some((r, t)) = check else {
        return crate::cli::ok_if(!bodies.is_empty());
    };
    let (ok, line) = self_check(&bodies, r, t);
    if let Some(c) = gate {
        match crate::store::Store::open(&c.db_path, &c.gate.id)
            .and_then(|mut s| s.journal(crate::hw::now(), "thermometer_self_check", &line))
        {
            Ok(()) => println!("recorded in {}", c.db_path.display()),
            Err(e) => eprintln!("error: could not record the self-check in {}: {e}", c.db_path.display()),
        }
    }
    crate::cli::ok_if(ok)
}

/// `sibi probe gpio [--config F]`.
pub fn gpio_command(config: Option<&Path>) -> crate::cli::Outcome {
    let config = config.map(load).transpose().map_err(crate::cli::Failure::Usage)?;
    gpio(config.as_ref()).map_err(|e| {
        println!("{e}");
        crate::cli::Failure::quiet()
    })
}

/// `sibi probe audio --config F`.
pub fn audio_command(config: &Path) -> crate::cli::Outcome {
    let c = load(config).map_err(crate::cli::Failure::Usage)?;
    audio(&c.devices.voice).map_err(|e| {
        println!("{e}");
        crate::cli::Failure::quiet()
    })
}

/// `sibi probe idcard --config F --timeout S`.
pub fn idcard_command(config: &Path, timeout: Duration) -> crate::cli::Outcome {
    let c = load(config).map_err(crate::cli::Failure::Usage)?;
    let Some(crate::config::IdCardBackend::Serial(settings)) = c.devices.idcard else {
        return Err(crate::cli::Failure::usage(format!(
            "{} has no `[devices.idcard] backend = \"serial\"`",
            config.display()
        )));
    };
    crate::cli::ok_if(crate::hw::idcard::cli::probe(&settings, timeout))
}

/// `sibi probe camera --config F`: ten frames from the V4L2 camera, decoded, with the live mask verdict when the
/// config has a `[mask]` section.
pub fn camera_command(config: &Path) -> crate::cli::Outcome {
    let c = load(config).map_err(crate::cli::Failure::Usage)?;
    let crate::config::CredentialBackend::V4l2 { settings, .. } = c.devices.credentials else {
        return Err(crate::cli::Failure::usage(format!(
            "{} has no `[devices.credentials] backend = \"v4l2\"`",
            config.display()
        )));
    };
    let judge = c.mask.as_ref().and_then(|m| match crate::mask::MaskJudge::open(m.models.as_deref()) {
        Ok(j) => Some(j),
        Err(e) => {
            println!("mask judge: {e}");
            None
        }
    });
    crate::cli::ok_if(camera(settings, 10, judge.as_ref()))
}

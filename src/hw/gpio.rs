//! The gate's relay, lights, buzzer and buttons on GPIO: the logic over embedded-hal 1.0 pin traits, and the
//! Raspberry Pi backend through rppal.
//!
//! Invariants: the relay is energised only between a `RelayOpen` and the next `RelayClose`/`Safe` (the gate
//! controller in [`crate::app`] closes it when the pulse ends, and puts everything safe on every exit path); dropping
//! a [`GpioGate`] also de-energises the relay. The wiring must be normally-open (see `hardware/`), so a dead box or a
//! killed process leaves the gate closed.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use embedded_hal::digital::{InputPin, OutputPin, PinState};
use serde::Deserialize;

use super::{Buzz, DeviceFault, GateCommand, GateOutput, OperatorInput, OperatorSource, Polled};
use crate::checkpoint::Button;

/// `[devices.gate]` with `backend = "gpio"`: BCM pin numbers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioGateSettings {
    /// Relay input pin.
    pub relay: u8,
    /// Is the relay energised by a high level (default true; many opto-isolated boards are active-low)?
    #[serde(default = "yes")]
    pub relay_active_high: bool,
    /// How long the relay holds the gate open, in ms (default 3000).
    pub pulse_ms: Option<i64>,
    /// Green light.
    pub green: u8,
    /// Red light.
    pub red: u8,
    /// Amber light.
    pub amber: u8,
    /// Active buzzer (switched, no PWM).
    pub buzzer: Option<u8>,
}

/// `[devices.operator]` with `backend = "gpio"`: buttons to ground (internal pull-ups), BCM pin numbers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioButtonSettings {
    /// 口罩已戴 (mask confirmed).
    pub mask: Option<u8>,
    /// 紧急放行 (emergency open).
    pub emergency: Option<u8>,
    /// 呼叫 (call for help).
    pub help: Option<u8>,
    /// A press must hold this long, in ms (default 30).
    #[serde(default = "default_debounce")]
    pub debounce_ms: u64,
}

fn yes() -> bool {
    true
}
fn default_debounce() -> u64 {
    30
}

/// BCM pins usable for gate I/O on the 40-pin header (0 and 1 are the HAT ID EEPROM bus).
pub const USABLE_PINS: std::ops::RangeInclusive<u8> = 2..=27;

/// Check a pin map: every pin usable, none used twice (across gate outputs and buttons).
pub fn pin_problems(gate: Option<&GpioGateSettings>, buttons: Option<&GpioButtonSettings>) -> Vec<String> {
    let mut used: BTreeMap<u8, Vec<&'static str>> = BTreeMap::new();
    if let Some(g) = gate {
        for (name, pin) in [("relay", Some(g.relay)), ("green", Some(g.green)), ("red", Some(g.red))]
            .into_iter()
            .chain([("amber", Some(g.amber)), ("buzzer", g.buzzer)])
        {
            if let Some(p) = pin {
                used.entry(p).or_default().push(name);
            }
        }
    }
    if let Some(b) = buttons {
        for (name, pin) in [("mask", b.mask), ("emergency", b.emergency), ("help", b.help)] {
            if let Some(p) = pin {
                used.entry(p).or_default().push(name);
            }
        }
    }
    let mut problems = Vec::new();
    for (pin, names) in &used {
        if !USABLE_PINS.contains(pin) {
            problems.push(format!("BCM pin {pin} ({}) is not a usable GPIO: use 2–27", names.join(", ")));
        }
        if names.len() > 1 {
            problems.push(format!("BCM pin {pin} is used twice: {}", names.join(" and ")));
        }
    }
    problems
}

/// The message when there is no Raspberry Pi GPIO (an x86 machine, a container without /dev/gpiomem).
pub const NO_GPIO: &str = "no Raspberry Pi GPIO found (未找到树莓派 GPIO)";

enum BuzzerCmd {
    Play(Buzz),
    Off,
}

/// Relay, lights and buzzer on output pins.
pub struct GpioGate<P: OutputPin + Send + 'static> {
    relay: P,
    relay_active_high: bool,
    green: P,
    red: P,
    amber: P,
    buzzer: Option<mpsc::Sender<BuzzerCmd>>,
}

fn level(on: bool, active_high: bool) -> PinState {
    if on == active_high { PinState::High } else { PinState::Low }
}

fn fault<E: core::fmt::Debug>(what: &str) -> impl FnOnce(E) -> DeviceFault + '_ {
    move |e| DeviceFault(format!("GPIO {what}: {e:?}"))
}

impl<P: OutputPin + Send + 'static> GpioGate<P> {
    /// A gate over these pins, all set safe at once (relay de-energised, lights and buzzer off).
    pub fn new(relay: P, relay_active_high: bool, lights: [P; 3], buzzer: Option<P>) -> Result<Self, DeviceFault> {
        let [green, red, amber] = lights;
        let buzzer = buzzer.map(|pin| {
            let (tx, rx) = mpsc::channel();
            std::thread::Builder::new()
                .name("buzzer".into())
                .spawn(move || buzzer_loop(pin, &rx))
                .map(|_| tx)
                .map_err(|e| DeviceFault(format!("cannot start the buzzer thread: {e}")))
        });
        let buzzer = buzzer.transpose()?;
        let mut g = GpioGate { relay, relay_active_high, green, red, amber, buzzer };
        g.apply(&GateCommand::Safe)?;
        Ok(g)
    }

    fn relay(&mut self, on: bool) -> Result<(), DeviceFault> {
        self.relay.set_state(level(on, self.relay_active_high)).map_err(fault("relay"))
    }
}

/// Buzzer patterns: (on ms, off ms) steps.
fn pattern(p: Buzz) -> &'static [(u64, u64)] {
    match p {
        Buzz::Short => &[(120, 0)],
        Buzz::Alarm => &[(400, 200), (400, 200), (400, 0)],
    }
}

/// Wait `ms` for a command: `Ok(None)` when the time passed quietly, `Ok(Some(c))` when a new command arrived,
/// `Err(())` when the gate went away.
fn hold(rx: &mpsc::Receiver<BuzzerCmd>, ms: u64) -> Result<Option<BuzzerCmd>, ()> {
    match rx.recv_timeout(Duration::from_millis(ms)) {
        Ok(c) => Ok(Some(c)),
        Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(()),
    }
}

fn buzzer_loop<P: OutputPin>(mut pin: P, rx: &mpsc::Receiver<BuzzerCmd>) {
    let _ = pin.set_low();
    let mut next = rx.recv().ok();
    'commands: while let Some(cmd) = next.take() {
        let _ = pin.set_low();
        if let BuzzerCmd::Play(p) = cmd {
            for &(on, off) in pattern(p) {
                // A new command cuts the pattern short; the gate going away ends the thread.
                for (level, ms) in [(true, on), (false, off)] {
                    let _ = if level { pin.set_high() } else { pin.set_low() };
                    match hold(rx, ms) {
                        Ok(None) => {}
                        Ok(Some(c)) => {
                            next = Some(c);
                            continue 'commands;
                        }
                        Err(()) => break 'commands,
                    }
                }
            }
        }
        let _ = pin.set_low();
        next = rx.recv().ok();
    }
    let _ = pin.set_low();
}

impl<P: OutputPin + Send + 'static> GateOutput for GpioGate<P> {
    fn apply(&mut self, cmd: &GateCommand) -> Result<(), DeviceFault> {
        match cmd {
            GateCommand::RelayOpen { .. } => self.relay(true),
            GateCommand::RelayClose => self.relay(false),
            GateCommand::Lights(l) => {
                self.green.set_state(PinState::from(l.green)).map_err(fault("green light"))?;
                self.red.set_state(PinState::from(l.red)).map_err(fault("red light"))?;
                self.amber.set_state(PinState::from(l.amber)).map_err(fault("amber light"))
            }
            GateCommand::Buzz { pattern } => {
                if let Some(b) = &self.buzzer {
                    let _ = b.send(BuzzerCmd::Play(*pattern));
                }
                Ok(())
            }
            GateCommand::Safe => {
                // The relay first: whatever else fails, the gate must close.
                let relay = self.relay(false);
                let _ = self.green.set_low();
                let _ = self.red.set_low();
                let _ = self.amber.set_low();
                if let Some(b) = &self.buzzer {
                    let _ = b.send(BuzzerCmd::Off);
                }
                relay
            }
        }
    }
}

impl<P: OutputPin + Send + 'static> Drop for GpioGate<P> {
    fn drop(&mut self) {
        let _ = self.relay(false);
        let _ = self.green.set_low();
        let _ = self.red.set_low();
        let _ = self.amber.set_low();
    }
}

/// Debounced buttons on input pins (active low: a press connects the pin to ground).
pub struct GpioButtons<I: InputPin + Send> {
    buttons: Vec<(Button, I, Debounce)>,
    debounce: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Debounce {
    pressed: bool,
    since: Option<Instant>,
}

impl<I: InputPin + Send> GpioButtons<I> {
    /// Buttons on these pins.
    pub fn new(pins: Vec<(Button, I)>, debounce: Duration) -> GpioButtons<I> {
        let buttons = pins.into_iter().map(|(b, p)| (b, p, Debounce { pressed: false, since: None })).collect();
        GpioButtons { buttons, debounce }
    }

    /// Sample every pin once at `now`; returns a button whose press has held for the debounce time.
    pub fn sample(&mut self, now: Instant) -> Result<Option<Button>, DeviceFault> {
        let debounce = self.debounce;
        for (button, pin, d) in &mut self.buttons {
            let down = pin.is_low().map_err(fault("button"))?;
            if down == d.pressed {
                d.since = None;
                continue;
            }
            let since = *d.since.get_or_insert(now);
            if now.duration_since(since) >= debounce {
                d.pressed = down;
                d.since = None;
                if down {
                    return Ok(Some(*button));
                }
            }
        }
        Ok(None)
    }
}

const SAMPLE_EVERY: Duration = Duration::from_millis(5);

impl<I: InputPin + Send> OperatorSource for GpioButtons<I> {
    fn poll(&mut self, wait: Duration) -> Result<Polled<OperatorInput>, DeviceFault> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(b) = self.sample(Instant::now())? {
                return Ok(Polled::Item(OperatorInput::Button(b)));
            }
            if Instant::now() >= deadline {
                return Ok(Polled::Idle);
            }
            std::thread::sleep(SAMPLE_EVERY);
        }
    }
}

/// The Raspberry Pi backend (rppal): `/dev/gpiomem` on Pi 4, `/dev/gpiochip*` on Pi 5.
pub mod pi {
    use super::*;

    fn gpio() -> Result<rppal::gpio::Gpio, String> {
        rppal::gpio::Gpio::new().map_err(|e| format!("{NO_GPIO}: {e}"))
    }

    fn output(g: &rppal::gpio::Gpio, pin: u8) -> Result<rppal::gpio::OutputPin, String> {
        g.get(pin).map(|p| p.into_output_low()).map_err(|e| format!("BCM pin {pin}: {e}"))
    }

    /// Open the gate outputs.
    pub fn gate(s: &GpioGateSettings) -> Result<GpioGate<rppal::gpio::OutputPin>, String> {
        let g = gpio()?;
        let mut relay = g.get(s.relay).map_err(|e| format!("BCM pin {}: {e}", s.relay))?.into_output();
        // Never glitch the relay on: start at its de-energised level.
        relay.write(if s.relay_active_high { rppal::gpio::Level::Low } else { rppal::gpio::Level::High });
        let lights = [output(&g, s.green)?, output(&g, s.red)?, output(&g, s.amber)?];
        let buzzer = s.buzzer.map(|p| output(&g, p)).transpose()?;
        GpioGate::new(relay, s.relay_active_high, lights, buzzer).map_err(|e| e.0)
    }

    /// Open the buttons.
    pub fn buttons(s: &GpioButtonSettings) -> Result<GpioButtons<rppal::gpio::InputPin>, String> {
        let g = gpio()?;
        let mut pins = Vec::new();
        for (button, pin) in
            [(Button::MaskConfirmed, s.mask), (Button::EmergencyOpen, s.emergency), (Button::CallHelp, s.help)]
        {
            if let Some(p) = pin {
                pins.push((button, g.get(p).map_err(|e| format!("BCM pin {p}: {e}"))?.into_input_pullup()));
            }
        }
        Ok(GpioButtons::new(pins, Duration::from_millis(s.debounce_ms)))
    }

    /// For `sibi probe gpio`: the board, or why there is none.
    pub fn probe() -> Result<String, String> {
        let _ = gpio()?;
        rppal::system::DeviceInfo::new().map(|d| format!("{}", d.model())).map_err(|e| format!("{NO_GPIO}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::hw::Lights;

    /// A pin that records its level changes with the time they happened (the seam: embedded-hal's traits).
    #[derive(Clone, Default)]
    pub(crate) struct Probe {
        pub(crate) log: Arc<Mutex<Vec<(bool, Instant)>>>,
    }

    impl Probe {
        fn level(&self) -> Option<bool> {
            self.log.lock().unwrap().last().map(|x| x.0)
        }
    }

    impl embedded_hal::digital::ErrorType for Probe {
        type Error = core::convert::Infallible;
    }

    impl OutputPin for Probe {
        fn set_low(&mut self) -> Result<(), Self::Error> {
            self.log.lock().unwrap().push((false, Instant::now()));
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Self::Error> {
            self.log.lock().unwrap().push((true, Instant::now()));
            Ok(())
        }
    }

    fn gate(active_high: bool) -> (GpioGate<Probe>, [Probe; 5]) {
        let pins: [Probe; 5] = Default::default();
        let g = GpioGate::new(
            pins[0].clone(),
            active_high,
            [pins[1].clone(), pins[2].clone(), pins[3].clone()],
            Some(pins[4].clone()),
        )
        .unwrap();
        (g, pins)
    }

    #[test]
    fn commands_drive_the_pins_and_an_active_low_relay_is_inverted() {
        let (mut g, p) = gate(false);
        assert_eq!(p[0].level(), Some(true), "active-low relay starts de-energised (high)");
        g.apply(&GateCommand::RelayOpen { seq: 1 }).unwrap();
        assert_eq!(p[0].level(), Some(false));
        g.apply(&GateCommand::Lights(Lights { red: true, ..Lights::default() })).unwrap();
        assert_eq!((p[1].level(), p[2].level(), p[3].level()), (Some(false), Some(true), Some(false)));
        g.apply(&GateCommand::Buzz { pattern: Buzz::Short }).unwrap();
        std::thread::sleep(Duration::from_millis(250));
        let buzz: Vec<bool> = p[4].log.lock().unwrap().iter().map(|x| x.0).collect();
        assert!(buzz.contains(&true) && buzz.last() == Some(&false), "{buzz:?}");
        g.apply(&GateCommand::Safe).unwrap();
        assert_eq!((p[0].level(), p[2].level()), (Some(true), Some(false)));
        g.apply(&GateCommand::RelayOpen { seq: 2 }).unwrap();
        drop(g);
        assert_eq!(p[0].level(), Some(true), "dropping the gate de-energises the relay");
    }

    #[tokio::test]
    async fn the_relay_closes_when_its_pulse_ends_and_at_once_when_stopped_mid_pulse() {
        let (g, p) = gate(true);
        let (handle, task) = crate::app::GateHandle::spawn(Box::new(g), Duration::from_millis(300));
        let opened = Instant::now();
        handle.open(1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let log = p[0].log.lock().unwrap().clone();
        let on = log.iter().rposition(|x| x.0).expect("energised");
        let off = log[on + 1..].iter().find(|x| !x.0).expect("de-energised after the pulse");
        let held = off.1.duration_since(log[on].1);
        assert!(held >= Duration::from_millis(290) && held < Duration::from_millis(450), "held {held:?}");
        assert!(log[on].1 >= opened);
        // Stop mid-pulse: the last handle goes away 50 ms into a 300 ms pulse.
        handle.open(2).await.unwrap();
        let open_at = Instant::now();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(handle);
        task.await.unwrap();
        let log = p[0].log.lock().unwrap().clone();
        let (level, at) = *log.last().unwrap();
        assert!(!level, "relay de-energised on stop");
        assert!(at.duration_since(open_at) < Duration::from_millis(200), "closed at stop, not at pulse end");
    }

    #[derive(Clone)]
    struct Switch(Arc<Mutex<bool>>);

    impl embedded_hal::digital::ErrorType for Switch {
        type Error = core::convert::Infallible;
    }

    impl InputPin for Switch {
        fn is_high(&mut self) -> Result<bool, Self::Error> {
            Ok(!*self.0.lock().unwrap())
        }
        fn is_low(&mut self) -> Result<bool, Self::Error> {
            Ok(*self.0.lock().unwrap())
        }
    }

    #[test]
    fn a_press_counts_once_and_only_after_it_held_for_the_debounce_time() {
        let down = Arc::new(Mutex::new(false));
        let mut b = GpioButtons::new(vec![(Button::MaskConfirmed, Switch(down.clone()))], Duration::from_millis(30));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Contact bounce: 10 ms down, up, down again.
        *down.lock().unwrap() = true;
        assert_eq!(b.sample(at(0)).unwrap(), None);
        assert_eq!(b.sample(at(10)).unwrap(), None);
        *down.lock().unwrap() = false;
        assert_eq!(b.sample(at(12)).unwrap(), None);
        *down.lock().unwrap() = true;
        assert_eq!(b.sample(at(15)).unwrap(), None);
        assert_eq!(b.sample(at(40)).unwrap(), None, "held only 25 ms since the bounce");
        assert_eq!(b.sample(at(46)).unwrap(), Some(Button::MaskConfirmed));
        assert_eq!(b.sample(at(200)).unwrap(), None, "held down: one press");
        *down.lock().unwrap() = false;
        assert_eq!(b.sample(at(210)).unwrap(), None);
        assert_eq!(b.sample(at(250)).unwrap(), None);
        *down.lock().unwrap() = true;
        b.sample(at(300)).unwrap();
        assert_eq!(b.sample(at(331)).unwrap(), Some(Button::MaskConfirmed), "a second press");
    }

    #[test]
    fn pin_maps_are_checked() {
        let g = GpioGateSettings {
            relay: 17,
            relay_active_high: true,
            pulse_ms: None,
            green: 22,
            red: 27,
            amber: 17,
            buzzer: Some(1),
        };
        let b = GpioButtonSettings { mask: Some(5), emergency: Some(22), help: None, debounce_ms: 30 };
        let p = pin_problems(Some(&g), Some(&b));
        assert!(p.iter().any(|m| m.contains("pin 1 ") && m.contains("not a usable")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("pin 17 is used twice: relay and amber")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("pin 22 is used twice: green and emergency")), "{p:?}");
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn without_a_pi_the_error_says_so() {
        if std::path::Path::new("/dev/gpiomem").exists() {
            return; // on a real Pi this machine has GPIO
        }
        let e = pi::probe().unwrap_err();
        assert!(e.starts_with(NO_GPIO), "{e}");
    }
}

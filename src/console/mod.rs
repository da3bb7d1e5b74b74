//! The operator console: a web page served by the daemon for the box's touch screen or a phone on the gate's network.
//! A live panel (通行 / 禁止 / 请处理 with the reason, the four musts, temperature, masked name and what to do),
//! exceptions in two taps, the offline registration lane, vehicle mode and a status strip — in Chinese, with no
//! external fonts, scripts or CDNs.
//!
//! Invariants: every request but the login page needs a live session (operators log in with a PIN, see [`auth`]);
//! every operator action is journaled with the operator's id before it reaches the checkpoint; a registration or
//! plate that does not validate never reaches the checkpoint or the store; the console only *sends events* to the
//! checkpoint — it decides nothing and opens nothing itself.

pub mod auth;
mod page;
pub mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::checkpoint::{DeviceKind, EmergencyKind, Event, OperatorAction, Outcome};
use crate::domain::{Category, CodeStatus, IdentityMust, MaskState, TemperatureMust, Timestamp, Verdict};
use crate::hw::{SourceMsg, Stamped};
use crate::store::StoreHandle;

/// `[console]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsole {
    /// Address to serve on (`127.0.0.1:8080`; `0.0.0.0:8080` for a tablet on the gate's own network).
    listen: String,
    /// Lock the console after this many wrong PINs in a row (default 5).
    lockout_failures: Option<u32>,
    /// For this many seconds (default 300).
    lockout_secs: Option<u64>,
    /// A login lasts this many hours (default 12: one shift).
    session_hours: Option<u64>,
    /// Residents for the lookup by building and room: CSV `building,room,name` with masked names (王*华).
    roster: Option<PathBuf>,
    /// Let the console inject device events (`/sim/...`): only with simulated devices, for the demo and the tests.
    #[serde(default)]
    simulator: bool,
    #[serde(default)]
    operator: Vec<RawOperator>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperator {
    id: String,
    name: String,
    /// `sibi console hash-pin` output.
    pin_hash: String,
}

/// An operator who may log in.
#[derive(Debug, Clone)]
pub struct Operator {
    /// Display name (张阿姨).
    pub name: String,
    /// Argon2id PHC string.
    pub pin_hash: String,
}

/// One household member in the roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RosterEntry {
    /// 楼栋 (3).
    pub building: String,
    /// 房号 (201).
    pub room: String,
    /// Masked name.
    pub name: String,
}

/// The console's validated settings.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Operators by id.
    pub operators: BTreeMap<String, Operator>,
    /// Wrong PINs before the lock.
    pub lockout_failures: u32,
    /// How long the lock lasts.
    pub lockout: Duration,
    /// How long a login lasts.
    pub session: Duration,
    /// The resident roster.
    pub roster: Vec<RosterEntry>,
    /// `/sim/...` enabled.
    pub simulator: bool,
}

impl ConsoleConfig {
    /// Validate `[console]`; `simulated` says whether every device is simulated (the simulator needs that).
    pub fn load(raw: RawConsole, base: &Path, simulated: bool, problems: &mut Vec<String>) -> Option<ConsoleConfig> {
        let listen = raw.listen.parse::<SocketAddr>().map_err(|e| problems.push(format!("`console.listen`: {e}"))).ok();
        let mut operators = BTreeMap::new();
        for (i, o) in raw.operator.into_iter().enumerate() {
            if let Err(e) = auth::check_hash(&o.pin_hash) {
                problems.push(format!("`console.operator[{i}].pin_hash`: {e}"));
            }
            if operators.insert(o.id.clone(), Operator { name: o.name, pin_hash: o.pin_hash }).is_some() {
                problems.push(format!("`console.operator[{i}]`: operator `{}` appears twice", o.id));
            }
        }
        if operators.is_empty() {
            problems.push("`console`: add at least one `[[console.operator]]` (id, name, pin_hash)".into());
        }
        let lockout_failures = raw.lockout_failures.unwrap_or(5);
        if !(3..=20).contains(&lockout_failures) {
            problems.push(format!("`console.lockout_failures` = {lockout_failures}: use 3–20"));
        }
        let lockout_secs = raw.lockout_secs.unwrap_or(300);
        if !(10..=1_800).contains(&lockout_secs) {
            problems.push(format!(
                "`console.lockout_secs` = {lockout_secs}: use 10–1800. Longer locks the volunteers out of the console \
                 for hours, and with it every registration the elderly without a phone need to get through"
            ));
        }
        let session_hours = raw.session_hours.unwrap_or(12);
        if !(1..=24).contains(&session_hours) {
            problems.push(format!("`console.session_hours` = {session_hours}: use 1–24"));
        }
        if raw.simulator && !simulated {
            problems.push("`console.simulator` = true: only with simulated devices (script / sim backends)".into());
        }
        let roster = match raw.roster {
            None => Vec::new(),
            Some(p) => load_roster(&base.join(&p)).unwrap_or_else(|e| {
                problems.push(format!("`console.roster`: {e}"));
                Vec::new()
            }),
        };
        Some(ConsoleConfig {
            listen: listen?,
            operators,
            lockout_failures,
            lockout: Duration::from_secs(lockout_secs),
            session: Duration::from_secs(session_hours * 3600),
            roster,
            simulator: raw.simulator,
        })
    }
}

fn load_roster(path: &Path) -> Result<Vec<RosterEntry>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let row = row.map_err(|e| format!("{} row {}: {e}", path.display(), i + 2))?;
        let (Some(b), Some(r), Some(n)) = (row.get(0), row.get(1), row.get(2)) else {
            return Err(format!("{} row {}: expected building,room,name", path.display(), i + 2));
        };
        let name = n.trim().trim_start_matches('\u{feff}');
        if name.chars().count() > 1 && !name.contains('*') {
            return Err(format!("{} row {}: names in the roster must be masked (王*华)", path.display(), i + 2));
        }
        out.push(RosterEntry { building: b.trim().into(), room: r.trim().into(), name: name.into() });
    }
    Ok(out)
}

/// One of the four musts on the panel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MustView {
    /// 身份必问, 信息必录, 体温必测, 口罩必戴.
    pub name: &'static str,
    /// Holds.
    pub ok: bool,
    /// How it was met, when that matters to the operator: 自动 (the camera) or 人工 (an operator) for the mask.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<&'static str>,
}

/// What the live panel shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Panel {
    /// Increases with every change.
    pub update: u64,
    /// The presentation shown.
    pub presentation: Option<u64>,
    /// `idle`, `pass`, `deny` or `refer`.
    pub state: &'static str,
    /// 等待 / 通行 / 禁止 / 请处理.
    pub headline: &'static str,
    /// The reason, for the operator.
    pub message: String,
    /// The four musts.
    pub musts: Vec<MustView>,
    /// ℃, one decimal.
    pub temperature: Option<String>,
    /// Masked name.
    pub holder: String,
    /// What to do.
    pub actions: Vec<&'static str>,
    /// The deciding rule id.
    pub rule: &'static str,
    /// When decided (ms since the epoch; the browser compares it with its clock).
    pub decided_at_ms: i64,
    /// The presentation has ended.
    pub is_final: bool,
    /// A prompt since the decision (请出示健康码...).
    pub prompt: Option<String>,
    /// The health code could not be checked online: the operator may record the colour they see.
    pub colour_check: bool,
    /// A fever was measured: the re-measurement can be started.
    pub fever: bool,
    /// The vehicle being checked, if any.
    pub vehicle: Option<VehicleView>,
    /// What an ID card tap already recorded (masked): the registration form takes it and asks only for the rest.
    pub card: Option<CardView>,
}

/// An ID card's data on the panel, masked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CardView {
    /// 王*英.
    pub name: String,
    /// 1101**********0020.
    pub id: String,
    /// The roster's 3栋201 for a resident.
    pub destination: Option<String>,
}

/// The vehicle in vehicle mode.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VehicleView {
    /// Plate.
    pub plate: String,
    /// Category (Chinese).
    pub category: &'static str,
    /// Occupants the guard counted.
    pub expected: u8,
    /// Occupants decided so far.
    pub decided: usize,
}

impl Panel {
    /// The panel for a recorded outcome.
    pub fn of(o: &Outcome, recorded: bool) -> Panel {
        let occupant = o.vehicle.as_ref().is_some_and(|v| v.occupant);
        let (state, headline) = match (o.decision.verdict, o.is_final && o.note.is_some(), occupant) {
            (_, true, _) => ("idle", "已结束"),
            // An occupant's result is not the vehicle's: the gate waits for the last occupant.
            (Verdict::Pass, _, true) => ("pass", "乘员合格"),
            (Verdict::Deny, _, true) => ("deny", "乘员不合格"),
            (Verdict::Refer, _, true) => ("refer", "乘员待处理"),
            (Verdict::Pass, _, false) => ("pass", "通行"),
            (Verdict::Deny, _, false) => ("deny", "禁止"),
            (Verdict::Refer, _, false) => ("refer", "请处理"),
        };
        let pd = o.decision.people.first();
        let musts = pd.map(|p| p.musts);
        let must = |name, ok| MustView { name, ok, by: None };
        let mask_ok = musts.is_some_and(|m| m.mask == MaskState::Worn);
        let mask_by = match o.mask_by {
            Some(crate::domain::MaskBy::Detected(_)) => "自动",
            Some(crate::domain::MaskBy::Operator) => "人工",
            None => "",
        };
        let mut actions: Vec<&'static str> = o.decision.actions.iter().map(|a| a.zh()).collect();
        for a in pd.map(|p| p.actions.clone()).unwrap_or_default() {
            if !actions.contains(&a.zh()) {
                actions.push(a.zh());
            }
        }
        let holder = match (&o.credential, &o.registration) {
            (Some(c), _) if !c.holder.is_empty() => c.holder.clone(),
            (_, Some(r)) => crate::domain::mask_name(&r.name),
            _ => String::new(),
        };
        let fever = musts.is_some_and(|m| m.temperature == TemperatureMust::Fever);
        let (musts, holder) = match &o.vehicle {
            // The vehicle's own panel: its occupants, not one person's musts.
            Some(v) if !v.occupant => {
                let ok = o.decision.people.iter().filter(|p| p.verdict == Verdict::Pass).count();
                let summary = format!("车辆 {}：乘员 {} 人，{} 人合格", v.plate, o.decision.people.len(), ok);
                (Vec::new(), summary)
            }
            _ => (
                vec![
                    must("身份必问", musts.is_some_and(|m| m.identity == IdentityMust::Asked)),
                    must("信息必录", recorded),
                    must("体温必测", musts.is_some_and(|m| m.temperature == TemperatureMust::Normal)),
                    MustView {
                        name: "口罩必戴", ok: mask_ok, by: (mask_ok && !mask_by.is_empty()).then_some(mask_by)
                    },
                ],
                holder,
            ),
        };
        Panel {
            update: 0,
            presentation: Some(o.presentation),
            state,
            headline,
            message: o.decision.message_zh.to_string(),
            musts,
            temperature: o.person.temperature.map(|t| t.celsius.to_string()),
            holder,
            actions,
            rule: o.decision.rule.id(),
            decided_at_ms: o.at.0,
            is_final: o.is_final,
            prompt: None,
            colour_check: matches!(o.person.code, CodeStatus::Unverified | CodeStatus::Timeout),
            fever,
            vehicle: None,
            card: match (&o.credential, &o.registration) {
                (Some(c), Some(r)) if c.identity == crate::domain::IdentityKind::IdCard => Some(CardView {
                    name: crate::domain::mask_name(&r.name),
                    id: r.id_number.as_deref().map(crate::domain::mask_id_number).unwrap_or_default(),
                    destination: r.destination.clone(),
                }),
                _ => None,
            },
        }
    }
}

/// Device health and the tier, as the daemon knows them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GateView {
    /// `low`, `medium`, `high`.
    pub tier: &'static str,
    /// 低风险...
    pub tier_zh: &'static str,
    /// Since (RFC 3339).
    pub tier_since: String,
    /// Device → working.
    pub devices: BTreeMap<&'static str, bool>,
}

/// Everything live: the panel and the gate's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Live {
    /// The panel.
    pub panel: Panel,
    /// The gate.
    pub gate: GateView,
}

/// The daemon's side of the live channel.
pub type LiveSender = watch::Sender<Live>;

/// Mark a device working or not.
pub fn device_health(live: &LiveSender, device: DeviceKind, ok: bool) {
    live.send_modify(|l| {
        l.gate.devices.insert(device.zh(), ok);
    });
}

/// The console's shared state.
pub struct Console {
    config: ConsoleConfig,
    sessions: Mutex<auth::Sessions>,
    tx: mpsc::Sender<SourceMsg>,
    live: watch::Receiver<Live>,
    store: StoreHandle,
    db: PathBuf,
    gate_id: String,
    /// A read connection for the status strip, opened on first use and kept.
    reader: Arc<Mutex<Option<crate::store::Store>>>,
    /// The scripted ID card reader's taps, for the simulator.
    card_taps: Option<crate::hw::idcard::CardTaps>,
}

impl Console {
    /// A console sending events on `tx`, showing `live`, journaling to `store`, reading status from `db`; its
    /// simulator taps cards through `card_taps` (the scripted ID card reader's), if given.
    pub fn new(
        config: ConsoleConfig,
        tx: mpsc::Sender<SourceMsg>,
        live: watch::Receiver<Live>,
        store: StoreHandle,
        db: PathBuf,
        gate_id: String,
        card_taps: Option<crate::hw::idcard::CardTaps>,
    ) -> Arc<Console> {
        let sessions = auth::Sessions::new(config.lockout_failures, config.lockout, config.session);
        Arc::new(Console {
            config,
            sessions: Mutex::new(sessions),
            tx,
            live,
            store,
            db,
            gate_id,
            reader: Arc::new(Mutex::new(None)),
            card_taps,
        })
    }

    fn operator(&self, headers: &HeaderMap) -> Option<String> {
        self.sessions.lock().ok()?.operator(&session_token(headers)?, crate::hw::now())
    }

    async fn send(&self, operator: &str, what: String, event: Event) -> Response {
        let now = crate::hw::now();
        self.store.journal(now, "operator_action", format!("{operator}: {what}")).await;
        tracing::info!(operator, action = %what, "operator action");
        match self.tx.send(SourceMsg::Event(Stamped { event, at: now })).await {
            Ok(()) => axum::Json(serde_json::json!({ "ok": true })).into_response(),
            Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "闸口程序正在停止，请稍后"),
        }
    }
}

/// The session cookie's token, if the request carries one.
fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("sibi_session="))
        .map(String::from)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

fn need_login() -> Response {
    error(StatusCode::UNAUTHORIZED, "请先登录")
}

/// The routes.
pub fn router(console: Arc<Console>) -> Router {
    let mut r = Router::new()
        .route("/", get(index))
        .route("/login", get(login_page))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/status", get(status))
        .route("/api/action", post(action))
        .route("/api/register", post(register))
        .route("/api/roster", get(roster))
        .route("/api/vehicle", post(vehicle))
        .route("/events", get(events));
    if console.config.simulator {
        r = r.route("/sim", post(simulate));
    }
    r.with_state(console)
}

async fn index(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if c.operator(&headers).is_none() {
        return Redirect::to("/login").into_response();
    }
    Html(page::console(c.config.simulator)).into_response()
}

async fn login_page(State(c): State<Arc<Console>>) -> Response {
    let ops: Vec<(&str, &str)> = c.config.operators.iter().map(|(id, o)| (id.as_str(), o.name.as_str())).collect();
    Html(page::login(&ops)).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    operator: String,
    pin: String,
}

async fn login(State(c): State<Arc<Console>>, body: Bytes) -> Response {
    let Ok(form) = serde_json::from_slice::<LoginForm>(&body) else {
        return error(StatusCode::BAD_REQUEST, "请选择工号并输入 PIN");
    };
    let now = crate::hw::now();
    if let Some(until) = c.sessions.lock().ok().and_then(|s| s.locked(now)) {
        c.store.journal(now, "operator_login_refused", format!("{} (locked)", form.operator)).await;
        return error(StatusCode::LOCKED, &auth::Refusal::Locked { until }.zh(now));
    }
    let hash = c.config.operators.get(&form.operator).map(|o| o.pin_hash.clone());
    let pin = form.pin;
    // Argon2 takes tens of milliseconds: off the async workers. An unknown operator costs the same as a wrong PIN.
    let ok = tokio::task::spawn_blocking(move || {
        let dummy = "$argon2id$v=19$m=19456,t=2,p=1$Ze5HCKmqZN2AQ4WtQ5HPVw$ERaj8Zk33GrWDwdcYcWHuNA2t8J4v5GnRNkBvvboMtU";
        let matched = auth::pin_matches(&pin, hash.as_deref().unwrap_or(dummy));
        matched && hash.is_some()
    })
    .await
    .unwrap_or(false);
    let now = crate::hw::now();
    let result = match c.sessions.lock() {
        Ok(mut s) => s.attempt(&form.operator, ok, now),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "系统错误"),
    };
    match result {
        Ok(token) => {
            c.store.journal(now, "operator_login", form.operator.clone()).await;
            let cookie = format!("sibi_session={token}; HttpOnly; SameSite=Strict; Path=/");
            let mut resp = axum::Json(serde_json::json!({ "ok": true })).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        Err(refusal) => {
            tracing::warn!(operator = %form.operator, "console login refused");
            c.store.journal(now, "operator_login_refused", form.operator.clone()).await;
            let status = if matches!(refusal, auth::Refusal::Locked { .. }) {
                StatusCode::LOCKED
            } else {
                StatusCode::UNAUTHORIZED
            };
            error(status, &refusal.zh(now))
        }
    }
}

async fn logout(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if let (Some(t), Ok(mut s)) = (session_token(&headers), c.sessions.lock()) {
        s.logout(&t);
    }
    axum::Json(serde_json::json!({ "ok": true })).into_response()
}

async fn events(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
) -> Result<Sse<impl tokio_stream::Stream<Item = Result<SseEvent, std::convert::Infallible>>>, Response> {
    if c.operator(&headers).is_none() {
        return Err(need_login());
    }
    use tokio_stream::StreamExt;
    let stream = tokio_stream::wrappers::WatchStream::new(c.live.clone()).map(|live| {
        Ok(SseEvent::default().event("live").data(serde_json::to_string(&live).unwrap_or_else(|_| "{}".into())))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10))))
}

/// The status strip's slow part: sync backlog, last contact and today's counts, read from the database.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    /// Entries not yet at the office.
    pub backlog: i64,
    /// Last successful contact (RFC 3339), if any.
    pub last_contact: Option<String>,
    /// The last sync error.
    pub last_error: Option<String>,
    /// Today's final decisions by verdict.
    pub today: BTreeMap<String, i64>,
}

async fn status(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if c.operator(&headers).is_none() {
        return need_login();
    }
    let (db, gate, reader) = (c.db.clone(), c.gate_id.clone(), c.reader.clone());
    let read = tokio::task::spawn_blocking(move || -> Result<StatusView, String> {
        let mut guard = reader.lock().map_err(|_| "status reader poisoned".to_string())?;
        if guard.is_none() {
            *guard = Some(crate::store::Store::open(&db, &gate).map_err(|e| e.to_string())?);
        }
        let store = guard.as_ref().ok_or("no status reader")?;
        let s = store.sync_status().map_err(|e| e.to_string())?;
        let now = crate::hw::now();
        let today = now.to_rfc3339()[..10].to_string();
        let (start, end) = crate::report::day_bounds(&today).ok_or("date")?;
        let today = store.verdict_counts(start, end).map_err(|e| e.to_string())?;
        Ok(StatusView {
            backlog: s.backlog,
            last_contact: s.last_success_ms.map(|m| Timestamp(m).to_rfc3339()),
            last_error: s.last_error,
            today,
        })
    })
    .await;
    match read {
        Ok(Ok(v)) => axum::Json(v).into_response(),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("状态读取失败：{e}")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("状态读取失败：{e}")),
    }
}

#[derive(Deserialize)]
struct ActionForm {
    action: String,
    #[serde(default)]
    value: String,
}

async fn action(State(c): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(op) = c.operator(&headers) else { return need_login() };
    let Ok(f) = serde_json::from_slice::<ActionForm>(&body) else {
        return error(StatusCode::BAD_REQUEST, "无法识别的操作");
    };
    let action = match (f.action.as_str(), f.value.as_str()) {
        ("mask", "worn") => OperatorAction::Mask(MaskState::Worn),
        ("mask", "not_worn") => OperatorAction::Mask(MaskState::NotWorn),
        ("colour", "green") => OperatorAction::CodeColour(CodeStatus::Green),
        ("colour", "yellow") => OperatorAction::CodeColour(CodeStatus::Yellow),
        ("colour", "red") => OperatorAction::CodeColour(CodeStatus::Red),
        ("remeasure", _) => OperatorAction::Remeasure,
        ("cancel", _) => OperatorAction::Cancel,
        ("emergency", kind) => {
            let kind = match kind {
                "fever_patient" => EmergencyKind::FeverPatient,
                "acute" => EmergencyKind::Acute,
                "pregnant" => EmergencyKind::Pregnant,
                "ambulance" => EmergencyKind::Ambulance,
                _ => return error(StatusCode::BAD_REQUEST, "请选择紧急通行的类别"),
            };
            OperatorAction::Emergency(kind)
        }
        ("approve", reason) if !reason.trim().is_empty() && reason.chars().count() <= 40 => {
            OperatorAction::Approve { reason: reason.trim().to_string() }
        }
        ("approve", _) => return error(StatusCode::BAD_REQUEST, "请填写放行事由（40字以内）"),
        _ => return error(StatusCode::BAD_REQUEST, "无法识别的操作"),
    };
    let what = format!("{} {}", f.action, f.value).trim().to_string();
    c.send(&op, what, Event::Operator(action)).await
}

async fn register(State(c): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(op) = c.operator(&headers) else { return need_login() };
    let form: validate::RegistrationForm = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(_) => return error(StatusCode::BAD_REQUEST, "登记信息格式错误"),
    };
    match form.check() {
        Ok(reg) => {
            let what = format!(
                "register {} (phone {})",
                crate::domain::mask_name(&reg.name),
                reg.phone.as_deref().map(crate::domain::mask_phone).unwrap_or_default()
            );
            c.send(&op, what, Event::Operator(OperatorAction::Register(reg))).await
        }
        Err(problems) => {
            (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(serde_json::json!({ "errors": problems }))).into_response()
        }
    }
}

#[derive(Deserialize)]
struct RosterQuery {
    building: String,
    #[serde(default)]
    room: String,
}

async fn roster(State(c): State<Arc<Console>>, headers: HeaderMap, Query(q): Query<RosterQuery>) -> Response {
    if c.operator(&headers).is_none() {
        return need_login();
    }
    let hits: Vec<&RosterEntry> = c
        .config
        .roster
        .iter()
        .filter(|e| e.building == q.building.trim() && (q.room.trim().is_empty() || e.room == q.room.trim()))
        .take(50)
        .collect();
    axum::Json(hits).into_response()
}

#[derive(Deserialize)]
struct VehicleForm {
    /// `start` or `finish`.
    step: String,
    #[serde(default)]
    plate: String,
    #[serde(default)]
    category: Option<Category>,
    #[serde(default)]
    occupants: u8,
}

async fn vehicle(State(c): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(op) = c.operator(&headers) else { return need_login() };
    let Ok(f) = serde_json::from_slice::<VehicleForm>(&body) else {
        return error(StatusCode::BAD_REQUEST, "车辆信息格式错误");
    };
    match f.step.as_str() {
        "start" => {
            let mut errors = serde_json::Map::new();
            if let Some(e) = validate::plate_problem(&f.plate) {
                errors.insert("plate".into(), e.into());
            }
            if !(1..=9).contains(&f.occupants) {
                errors.insert("occupants".into(), "请填写车内人数（1–9）".into());
            }
            if !errors.is_empty() {
                return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(serde_json::json!({ "errors": errors })))
                    .into_response();
            }
            let plate: String =
                f.plate.trim().to_uppercase().chars().filter(|c| !matches!(c, ' ' | '·' | '-')).collect();
            let category = f.category.unwrap_or(Category::Visitor);
            let occupants = f.occupants;
            let what = format!("vehicle start {plate} {} x{occupants}", category.as_str());
            c.send(&op, what, Event::Operator(OperatorAction::VehicleStart { plate, category, occupants })).await
        }
        "finish" => c.send(&op, "vehicle finish".into(), Event::Operator(OperatorAction::VehicleFinish)).await,
        _ => error(StatusCode::BAD_REQUEST, "无法识别的车辆操作"),
    }
}

/// What the simulator injects (demo and tests only).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SimForm {
    credential: Option<crate::hw::script::SimCredential>,
    temperature: Option<f64>,
    /// A card tapped on the scripted ID card reader (it goes through the reader's lane: roster, validity, sealing).
    card: Option<crate::hw::script::SimCard>,
}

async fn simulate(State(c): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    if c.operator(&headers).is_none() {
        return need_login();
    }
    let form: SimForm = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("simulator: {e}")),
    };
    let event = match (form.credential, form.temperature, form.card) {
        (Some(cred), None, None) => Event::Credential(cred.read()),
        (None, Some(t), None) => match crate::domain::Celsius::from_f64(t) {
            Some(c) => Event::Temperature(c),
            None => return error(StatusCode::BAD_REQUEST, "simulator: not a temperature"),
        },
        (None, None, Some(card)) => {
            let Some(taps) = &c.card_taps else {
                return error(StatusCode::BAD_REQUEST, "simulator: no scripted ID card reader ([devices.idcard])");
            };
            let text = match card.text() {
                Ok(t) => t,
                Err(e) => return error(StatusCode::BAD_REQUEST, &format!("simulator: {e}")),
            };
            return match taps.try_send(text) {
                Ok(()) => axum::Json(serde_json::json!({ "ok": true })).into_response(),
                Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "simulator: the reader is busy"),
            };
        }
        _ => return error(StatusCode::BAD_REQUEST, "simulator: give one credential, temperature or card"),
    };
    match c.tx.send(SourceMsg::Event(Stamped { event, at: crate::hw::now() })).await {
        Ok(()) => axum::Json(serde_json::json!({ "ok": true })).into_response(),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "stopping"),
    }
}

/// Serve the console until `shutdown` resolves.
pub async fn serve(
    console: Arc<Console>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(console)).with_graceful_shutdown(shutdown).await
}

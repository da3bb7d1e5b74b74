//! The health-code verification gateway (`POST /v1/health-code/verify`) that every gate's health-code client calls.
//! The office forwards each check to the provincial endpoint configured for the code's region and relays the colour;
//! during an emergency drill (应急演练) the drill roster answers for the codes it lists, so that exercises never
//! touch the provincial systems.
//!
//! Invariants: only enrolled gates are answered; a provincial endpoint that is slow, down or answers nonsense gives
//! the gate an error status (which it turns into "unverified": the operator checks the colour), never a colour the
//! province did not give; roster answers are marked `drill`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::credential::health_code::VerifyRequest;

/// `[health_code]` in office.toml, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// How long to wait for a provincial endpoint (default 2000 ms).
    timeout_ms: Option<u64>,
    #[serde(default)]
    provincial: Vec<RawProvincial>,
    drill: Option<RawDrill>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvincial {
    /// Region code (420000).
    region: String,
    /// The provincial verification endpoint (POST, JSON).
    url: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrill {
    /// CSV of `code,status` (green / yellow / red / expired), relative to office.toml.
    roster: std::path::PathBuf,
}

/// The gateway's validated settings.
#[derive(Debug, Clone, Default)]
pub struct GatewayConfig {
    /// Provincial endpoints by region.
    pub provincial: BTreeMap<String, String>,
    /// Wait at most this long for one.
    pub timeout: Duration,
    /// Drill codes and their colours.
    pub drill: BTreeMap<String, String>,
}

const STATUSES: [&str; 5] = ["green", "yellow", "red", "expired", "not_found"];

impl GatewayConfig {
    /// Validate `[health_code]`; `base` is office.toml's folder.
    pub fn load(raw: Option<RawGateway>, base: &Path) -> Result<GatewayConfig, String> {
        let Some(raw) = raw else {
            return Ok(GatewayConfig { timeout: Duration::from_millis(2000), ..Default::default() });
        };
        let mut provincial = BTreeMap::new();
        for (i, p) in raw.provincial.into_iter().enumerate() {
            if !(p.url.starts_with("http://") || p.url.starts_with("https://")) {
                return Err(format!("`health_code.provincial[{i}].url`: an http(s) URL is required"));
            }
            if provincial.insert(p.region.clone(), p.url).is_some() {
                return Err(format!("`health_code.provincial[{i}]`: region {} appears twice", p.region));
            }
        }
        let mut drill = BTreeMap::new();
        if let Some(d) = raw.drill {
            let path = base.join(&d.roster);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("`health_code.drill.roster`: cannot read {}: {e}", path.display()))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim().trim_start_matches('\u{feff}');
                if line.is_empty() || line.starts_with('#') || line == "code,status" {
                    continue;
                }
                let Some((code, status)) = line.rsplit_once(',') else {
                    return Err(format!("{} line {}: expected `code,status`", path.display(), n + 1));
                };
                let status = status.trim();
                if !STATUSES.contains(&status) {
                    return Err(format!(
                        "{} line {}: status `{status}`: use {}",
                        path.display(),
                        n + 1,
                        STATUSES.join(", ")
                    ));
                }
                drill.insert(code.trim().to_string(), status.to_string());
            }
        }
        Ok(GatewayConfig {
            provincial,
            timeout: Duration::from_millis(raw.timeout_ms.unwrap_or(2000).clamp(100, 30_000)),
            drill,
        })
    }
}

/// The gateway's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// HTTP status to send.
    #[serde(skip)]
    pub http: u16,
    /// The colour (green / yellow / red / expired / not_found), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// True when the drill roster answered.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub drill: bool,
    /// Why there is no colour.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Answer {
    fn colour(status: &str, drill: bool) -> Answer {
        let http = if status == "not_found" { 404 } else { 200 };
        Answer { http, status: Some(status.to_string()), drill, error: None }
    }

    fn error(http: u16, why: String) -> Answer {
        tracing::warn!(http, %why, "health-code check not answered");
        Answer { http, status: None, drill: false, error: Some(why) }
    }
}

#[derive(Deserialize)]
struct Provincial {
    status: String,
}

/// The HTTP client for the provincial endpoints (kept by the office: connections are reused).
pub fn agent(config: &GatewayConfig) -> ureq::Agent {
    ureq::Agent::config_builder().timeout_global(Some(config.timeout)).http_status_as_error(false).build().into()
}

/// Answer one check with `agent` (blocking: the provincial call waits up to the timeout).
pub fn check(config: &GatewayConfig, agent: &ureq::Agent, req: &VerifyRequest) -> Answer {
    if let Some(status) = config.drill.get(req.code.trim()) {
        tracing::info!(gate = %req.gate, status = %status, "health-code check answered by the drill roster");
        return Answer::colour(status, true);
    }
    let Some(url) = config.provincial.get(&req.region) else {
        return Answer::error(502, format!("no provincial endpoint for region {} ({})", req.region, req.issuer));
    };
    let mut resp = match agent.post(url).send_json(req) {
        Ok(r) => r,
        Err(ureq::Error::Timeout(_)) => {
            return Answer::error(504, format!("the provincial endpoint for {} did not answer in time", req.region));
        }
        Err(e) => return Answer::error(502, format!("the provincial endpoint for {} is unreachable: {e}", req.region)),
    };
    let http = resp.status().as_u16();
    if http == 404 {
        return Answer::colour("not_found", false);
    }
    if !(200..300).contains(&http) {
        return Answer::error(502, format!("the provincial endpoint for {} answered HTTP {http}", req.region));
    }
    match resp.body_mut().with_config().limit(64 * 1024).read_json::<Provincial>() {
        Ok(p) if STATUSES.contains(&p.status.as_str()) => Answer::colour(&p.status, false),
        Ok(p) => Answer::error(502, format!("the provincial endpoint gave an unknown status `{}`", p.status)),
        Err(e) => Answer::error(502, format!("the provincial endpoint's answer is unreadable: {e}")),
    }
}

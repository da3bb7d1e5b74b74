//! Provincial health codes (健康码): opaque URLs or tokens whose colour only the issuer knows (GB/T 38961/38963: the
//! check is an online 验码 request). An issuer registry recognises a code by its prefix; the street office's gateway
//! does the check; this client asks it with a bounded timeout.
//!
//! Outcomes: green / yellow / red / expired / not found / failed from the gateway; `timeout` when it does not answer
//! in time; `unverified` when it cannot be reached or answers nonsense — the policy turns both into an operator
//! colour check (the operator looks at the phone), recorded as such.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::CodeStatus;

/// One issuer in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Issuer {
    /// Name (湖北健康码).
    pub name: String,
    /// Region code (420000).
    pub region: String,
    /// Text prefixes that identify this issuer's codes (a URL or a token prefix).
    pub prefixes: Vec<String>,
}

/// The issuer name an ID-number query carries (the gateway answers it like a code).
pub const ID_ISSUER: &str = "身份证";

/// The issuer registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    /// Issuers, in order.
    pub issuers: Vec<Issuer>,
}

impl Registry {
    /// The issuer of `text`, if any. Texts longer than a QR code can hold are no health code.
    pub fn classify(&self, text: &str) -> Option<&Issuer> {
        if text.len() > 4096 || text.trim().is_empty() {
            return None;
        }
        self.issuers.iter().find(|i| i.prefixes.iter().any(|p| !p.is_empty() && text.starts_with(p.as_str())))
    }
}

/// The request the gateway receives.
#[derive(Debug, Serialize, Deserialize)]
pub struct VerifyRequest {
    /// Issuer name.
    pub issuer: String,
    /// Region code.
    pub region: String,
    /// The code text.
    pub code: String,
    /// The asking gate.
    pub gate: String,
}

#[derive(Debug, Deserialize)]
struct VerifyResponse {
    status: String,
}

/// Asks the street office's gateway.
pub struct HealthCodeClient {
    agent: ureq::Agent,
    url: String,
    gate: String,
}

impl HealthCodeClient {
    /// A client for `gateway` (base URL), answering within `timeout`.
    pub fn new(gateway: &str, timeout: Duration, gate: &str) -> HealthCodeClient {
        let agent: ureq::Agent =
            ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build().into();
        let url = format!("{}/v1/health-code/verify", gateway.trim_end_matches('/'));
        HealthCodeClient { agent, url, gate: gate.to_string() }
    }

    /// The health status of the holder of `id_number` (卡码合一: an ID query that the gateway forwards to the
    /// provincial platform of `region`). Never fails, like [`HealthCodeClient::verify`]; the number is not logged.
    pub fn verify_id(&self, region: &str, id_number: &str) -> CodeStatus {
        let issuer = Issuer { name: ID_ISSUER.into(), region: region.into(), prefixes: Vec::new() };
        self.verify(&issuer, id_number)
    }

    /// Verify `code` of `issuer`. Never fails: every problem maps to a status the policy understands.
    pub fn verify(&self, issuer: &Issuer, code: &str) -> CodeStatus {
        let req = VerifyRequest {
            issuer: issuer.name.clone(),
            region: issuer.region.clone(),
            code: code.to_string(),
            gate: self.gate.clone(),
        };
        let mut resp = match self.agent.post(&self.url).send_json(&req) {
            Ok(r) => r,
            Err(ureq::Error::Timeout(_)) => {
                tracing::warn!(issuer = %issuer.name, "health-code check timed out; the operator checks the colour");
                return CodeStatus::Timeout;
            }
            Err(e) => {
                tracing::warn!(issuer = %issuer.name, error = %e, "health-code gateway unreachable; unverified");
                return CodeStatus::Unverified;
            }
        };
        let http = resp.status().as_u16();
        if http == 404 {
            return CodeStatus::NotFound;
        }
        if !(200..300).contains(&http) {
            tracing::warn!(issuer = %issuer.name, http, "health-code gateway answered with an error; unverified");
            return CodeStatus::Unverified;
        }
        match resp.body_mut().with_config().limit(64 * 1024).read_json::<VerifyResponse>() {
            Ok(v) => match v.status.as_str() {
                "green" => CodeStatus::Green,
                "yellow" => CodeStatus::Yellow,
                "red" => CodeStatus::Red,
                "expired" => CodeStatus::Expired,
                "not_found" => CodeStatus::NotFound,
                "failed" => CodeStatus::Failed,
                other => {
                    tracing::warn!(status = other, "health-code gateway gave an unknown status; unverified");
                    CodeStatus::Unverified
                }
            },
            Err(ureq::Error::Timeout(_)) => CodeStatus::Timeout,
            Err(e) => {
                tracing::warn!(error = %e, "health-code gateway answer unreadable; unverified");
                CodeStatus::Unverified
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_classifies_by_prefix_and_ignores_garbage() {
        let reg = Registry {
            issuers: vec![
                Issuer {
                    name: "湖北健康码".into(),
                    region: "420000".into(),
                    prefixes: vec!["https://jkm.hubei.example/".into()],
                },
                Issuer { name: "测试码".into(), region: "000000".into(), prefixes: vec!["HCT:".into(), "".into()] },
            ],
        };
        assert_eq!(reg.classify("https://jkm.hubei.example/q?t=abc").unwrap().region, "420000");
        assert_eq!(reg.classify("HCT:123").unwrap().name, "测试码");
        assert!(reg.classify("https://shop.example/pay").is_none(), "an empty prefix matches nothing");
        assert!(reg.classify(&"HCT:".repeat(2000)).is_none());
        let mut seed = 1u64;
        for len in 0..4200 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let s: String = (0..len % 300).map(|i| char::from(b' ' + ((seed >> (i % 50)) as u8 % 90))).collect();
            let _ = reg.classify(&s);
        }
    }
}

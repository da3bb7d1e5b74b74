//! The camera credential source: frames → change detection → QR decode (contained) → verification → a
//! [`CredentialRead`] for the checkpoint.
//!
//! - A frame that looks like the previous decoded one is not decoded again, so an empty gate costs almost no CPU.
//! - A forged, expired or revoked pass is still a presentation: it reaches the checkpoint with the matching code
//!   status (failed / expired), so the operator sees why, and it is recorded.
//! - A QR code that is no credential (an advert, a payment code) is logged and ignored.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::pass::PassStage;
use super::qr::Contained;
use super::{Trust, classify, dcc};
use crate::checkpoint::CredentialRead;
use crate::domain::{Category, CodeStatus, IdentityKind, Timestamp, mask_name};
use crate::hw::frames::{FrameSource, difference, thumbnail};
use crate::hw::{CredentialSource, DeviceFault, Polled, now};

/// Below this mean thumbnail difference a frame is "the same scene" and is not decoded again.
const SAME_SCENE: f64 = 2.0;

/// Reads credentials from a frame source.
pub struct CameraCredentials {
    frames: Box<dyn FrameSource>,
    decoder: Contained,
    trust: super::SharedTrust,
    last_thumb: Vec<u8>,
    last_found: bool,
    /// Frames decoded and skipped (for the log and the benchmark).
    pub decoded: u64,
    /// Frames skipped as unchanged.
    pub skipped: u64,
}

impl CameraCredentials {
    /// A reader over `frames`, decoding with `decoder`, verifying with `trust`.
    pub fn new(frames: Box<dyn FrameSource>, decoder: Contained, trust: Trust) -> CameraCredentials {
        CameraCredentials::with_shared(frames, decoder, trust.shared())
    }

    /// A reader verifying with `trust`, which the sync thread updates as the office's bundles arrive.
    pub fn with_shared(
        frames: Box<dyn FrameSource>,
        decoder: Contained,
        trust: super::SharedTrust,
    ) -> CameraCredentials {
        CameraCredentials { frames, decoder, trust, last_thumb: Vec::new(), last_found: false, decoded: 0, skipped: 0 }
    }
}

fn digest_key(prefix: &str, text: &str) -> String {
    let d = Sha256::digest(text.as_bytes());
    format!("{prefix}:{}", crate::keys::hex(&d[..8]))
}

fn read(identity: IdentityKind, category: Category, code: CodeStatus, key: String, holder: String) -> CredentialRead {
    CredentialRead::new(key, identity, category, code, holder)
}

/// Turn one QR text into what the checkpoint needs, or `None` for a code that is no credential.
pub fn credential_of(text: &str, trust: &Trust, at: Timestamp) -> Option<CredentialRead> {
    match classify(text, &trust.registry) {
        super::Format::Pass => Some(match trust.pass.verify(text, at) {
            Ok(p) => {
                let mut c = read(
                    IdentityKind::Pass,
                    p.category,
                    CodeStatus::None,
                    format!("pass:{}", p.id),
                    mask_name(&p.holder),
                );
                c.quarantined = trust.quarantined.contains(&p.id);
                c.courier_registered = trust.couriers.contains(&p.id);
                c
            }
            Err(e) => {
                tracing::warn!(stage = e.stage.as_str(), "community pass refused: {}", e.stage.zh());
                let code = match e.stage {
                    PassStage::Expired | PassStage::NotYetValid => CodeStatus::Expired,
                    _ => CodeStatus::Failed,
                };
                read(IdentityKind::Pass, Category::Resident, code, digest_key("pass-refused", text), String::new())
            }
        }),
        super::Format::Dcc => Some(match dcc::verify(text, &trust.dcc, at) {
            Ok(v) => {
                let mut c = read(
                    IdentityKind::Dcc,
                    Category::Visitor,
                    CodeStatus::Green,
                    digest_key("dcc", text),
                    mask_name(&v.cwt.holder()),
                );
                c.inbound = true;
                c
            }
            Err(e) => {
                tracing::warn!(stage = e.stage.as_str(), "international certificate refused");
                let code = match e.stage {
                    dcc::Stage::Expired | dcc::Stage::NotYetValid => CodeStatus::Expired,
                    _ => CodeStatus::Failed,
                };
                let mut c = read(IdentityKind::Dcc, Category::Visitor, code, digest_key("dcc", text), String::new());
                c.inbound = true;
                c
            }
        }),
        super::Format::HealthCode => {
            let status = match (&trust.health, trust.registry.classify(text)) {
                (Some(client), Some(issuer)) => client.verify(issuer, text),
                _ => CodeStatus::Unverified,
            };
            Some(read(
                IdentityKind::HealthCode,
                trust.health_code_category,
                status,
                digest_key("hc", text),
                String::new(),
            ))
        }
        super::Format::Unknown => {
            tracing::debug!(len = text.len(), "a QR code that is no credential; ignored");
            None
        }
    }
}

impl CredentialSource for CameraCredentials {
    fn poll(&mut self, wait: Duration) -> Result<Polled<CredentialRead>, DeviceFault> {
        let frame = match self.frames.next_frame(wait)? {
            Polled::Item(f) => f,
            Polled::Idle => return Ok(Polled::Idle),
            Polled::Done => return Ok(Polled::Done),
        };
        let thumb = thumbnail(&frame);
        // An unchanged scene with no code in it is not decoded again; one with a code is, so a person who keeps
        // showing their code stays "seen" (the checkpoint de-duplicates).
        if !self.last_found && difference(&thumb, &self.last_thumb) < SAME_SCENE {
            self.skipped += 1;
            return Ok(Polled::Idle);
        }
        self.last_thumb = thumb;
        self.decoded += 1;
        let texts = self.decoder.decode(&frame).unwrap_or_default();
        let at = now();
        let trust = self.trust.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let found = texts.iter().find_map(|t| credential_of(t, &trust, at));
        drop(trust);
        self.last_found = found.is_some();
        Ok(found.map_or(Polled::Idle, Polled::Item))
    }
}

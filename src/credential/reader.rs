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
use crate::hw::frames::{FrameSource, SAME_SCENE, difference, thumbnail};
use crate::hw::{CredentialSource, DeviceFault, Polled, now};

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
    /// The mask judge's tap: colour frames are handed over while a presentation is open.
    tap: Option<crate::mask::source::MaskTap>,
    /// The scene changed with no presentation open: offer the next colour frame (a face may have appeared).
    probe_armed: bool,
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
        CameraCredentials {
            frames,
            decoder,
            trust,
            last_thumb: Vec::new(),
            last_found: false,
            decoded: 0,
            skipped: 0,
            tap: None,
            probe_armed: false,
        }
    }

    /// Hand colour frames to the mask judge through `tap` while it wants them.
    pub fn with_mask_tap(mut self, tap: crate::mask::source::MaskTap) -> CameraCredentials {
        self.tap = Some(tap);
        self
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
        let changed = difference(&thumb, &self.last_thumb) >= SAME_SCENE;
        // Before the decode skip: a person standing still is still judged while their presentation is open; with
        // none open, the frame after a changed scene goes to the judge (a face appears, before any code).
        if let Some(tap) = &self.tap
            && let Some(picture) = tap.pick(&mut *self.frames, changed, &mut self.probe_armed)
        {
            tap.offer(picture);
        }
        // An unchanged scene with no code in it is not decoded again; one with a code is, so a person who keeps
        // showing their code stays "seen" (the checkpoint de-duplicates).
        if !self.last_found && !changed {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::pass::{Pass, PassVerifier};

    #[test]
    fn the_offices_lists_flag_quarantined_and_courier_passes_and_a_newer_bundle_replaces_them() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let text = |id: &str| {
            Pass {
                community: "c1".into(),
                id: id.into(),
                category: Category::Resident,
                holder: "王五".into(),
                valid_from: 0,
                valid_until: 4_000_000_000,
            }
            .encode(&key)
        };
        let mut trust = Trust {
            pass: PassVerifier {
                keys: vec![key.verifying_key()],
                community: Some("c1".into()),
                revoked: ["P-0".to_string()].into(),
            },
            ..Default::default()
        };
        let at = Timestamp(1_790_000_000_000);
        let mut bundle = crate::bundle::Bundle {
            version: 1,
            revoked_passes: vec!["P-1".into()],
            quarantine: vec!["P-2".into()],
            couriers: vec!["P-3".into()],
            ..crate::bundle::Bundle::empty("c1")
        };
        trust.apply_bundle(&bundle).unwrap();
        let read = |t: &Trust, id: &str| credential_of(&text(id), t, at).unwrap();
        assert_eq!(read(&trust, "P-0").code, CodeStatus::Failed, "the config's revocation");
        assert_eq!(read(&trust, "P-1").code, CodeStatus::Failed, "the office's revocation");
        assert!(read(&trust, "P-2").quarantined && !read(&trust, "P-2").courier_registered);
        assert!(read(&trust, "P-3").courier_registered && !read(&trust, "P-3").quarantined);
        let plain = read(&trust, "P-4");
        assert!(plain.code == CodeStatus::None && !plain.quarantined && !plain.courier_registered);
        // The next bundle un-revokes P-1 (the office's list is the whole list), releases P-2; the config's P-0 stays.
        bundle.version = 2;
        bundle.revoked_passes.clear();
        bundle.quarantine.clear();
        trust.apply_bundle(&bundle).unwrap();
        assert_eq!(read(&trust, "P-0").code, CodeStatus::Failed);
        assert_eq!(read(&trust, "P-1").code, CodeStatus::None);
        assert!(!read(&trust, "P-2").quarantined);
        // A bundle whose signer does not parse changes nothing.
        bundle.quarantine = vec!["P-9".into()];
        bundle.dcc_signers = vec!["bm90IGEgY2VydA==".into()];
        assert!(trust.apply_bundle(&bundle).is_err());
        assert!(!read(&trust, "P-9").quarantined);
    }
}

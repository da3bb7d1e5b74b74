//! The mask thread on the frame path, off the decision path.
//!
//! The camera's reader holds a [`MaskTap`]: while the driver says a presentation is open (and the mask thread is not
//! busy with the previous frame), it hands the frame's colour picture over. With no presentation open, a frame is
//! handed over only when the scene has changed (someone stepped up: "a face appears"), at most once a
//! [`PROBE_EVERY`]; an empty gate's unchanged scene costs nothing. The thread ([`MaskSource`], run by
//! [`crate::hw::spawn_source`] like any input device) judges the largest face and emits a [`MaskObservation`] when
//! the verdict changes, or at most once a second while it stays the same. A frame with no face emits nothing. The
//! picture is dropped as soon as it is judged.
//!
//! Where the box has a second camera for faces (`[devices.face_camera]`), the mask thread reads that camera itself
//! ([`camera`]) under the same rules, and the QR camera hands nothing over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::RgbImage;

use super::MaskJudge;
use crate::checkpoint::MaskObservation;
use crate::hw::{DeviceFault, Polled};

/// The same verdict is repeated at most this often.
const REPEAT: Duration = Duration::from_secs(1);

/// With no presentation open, a changed scene is judged at most this often.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The camera side: offers frames to the mask thread.
#[derive(Clone, Debug)]
pub struct MaskTap {
    wanted: Arc<AtomicBool>,
    busy: Arc<AtomicBool>,
    last_probe: Arc<Mutex<Option<Instant>>>,
    tx: Option<mpsc::SyncSender<RgbImage>>,
}

impl MaskTap {
    /// The driver says whether a presentation is open (frames are wanted).
    pub fn set_wanted(&self, on: bool) {
        self.wanted.store(on, Ordering::SeqCst);
    }

    /// True while a presentation is open.
    pub fn is_wanted(&self) -> bool {
        self.wanted.load(Ordering::SeqCst)
    }

    /// True when a frame would be taken now: a presentation is open and the thread is free.
    pub fn wants_frame(&self) -> bool {
        self.wanted.load(Ordering::SeqCst) && !self.busy.load(Ordering::SeqCst)
    }

    /// True when a changed scene would be judged now: no presentation is open, the thread is free and the last
    /// such look was at least [`PROBE_EVERY`] ago.
    pub fn may_probe(&self) -> bool {
        let last = *self.last_probe.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        !self.wanted.load(Ordering::SeqCst)
            && !self.busy.load(Ordering::SeqCst)
            && last.is_none_or(|at| at.elapsed() >= PROBE_EVERY)
    }

    /// For whoever reads a camera for the judge, once per frame after change detection (`changed`): the colour
    /// picture the judge should take from this frame, if any — every frame while a presentation is open, and with
    /// none open the first colour frame after a changed scene (`armed` remembers the change until colour comes), at
    /// most once a [`PROBE_EVERY`]. Also tells `frames` whether to keep colour for the frames that follow.
    pub fn pick(
        &self,
        frames: &mut dyn crate::hw::frames::FrameSource,
        changed: bool,
        armed: &mut bool,
    ) -> Option<RgbImage> {
        let probing = !self.is_wanted();
        let take = self.wants_frame() || (*armed && self.may_probe());
        let picture = if take { frames.colour() } else { None };
        if picture.is_some() {
            *armed = false;
            if probing {
                *self.last_probe.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
            }
        } else {
            *armed |= changed && self.may_probe();
        }
        frames.keep_colour(self.is_wanted() || *armed);
        picture
    }

    /// Hand a picture from [`MaskTap::pick`] to the mask thread (dropped if it is still busy).
    pub fn offer(&self, picture: RgbImage) {
        if let Some(tx) = &self.tx
            && tx.try_send(picture).is_ok()
        {
            self.busy.store(true, Ordering::SeqCst);
        }
    }
}

/// The face camera, read by the mask thread itself.
struct FaceCamera {
    frames: Box<dyn crate::hw::frames::FrameSource>,
    last_thumb: Vec<u8>,
    /// The scene changed with no presentation open: judge the next colour frame.
    armed: bool,
    tap: MaskTap,
}

impl FaceCamera {
    /// The next picture to judge, if any (as [`MaskTap::pick`] chooses).
    fn next(&mut self, wait: Duration) -> Result<Polled<RgbImage>, DeviceFault> {
        let frame = match self.frames.next_frame(wait)? {
            Polled::Item(f) => f,
            Polled::Idle => return Ok(Polled::Idle),
            Polled::Done => return Ok(Polled::Done),
        };
        let thumb = crate::hw::frames::thumbnail(&frame);
        let changed = crate::hw::frames::difference(&thumb, &self.last_thumb) >= crate::hw::frames::SAME_SCENE;
        self.last_thumb = thumb;
        Ok(self.tap.pick(&mut *self.frames, changed, &mut self.armed).map_or(Polled::Idle, Polled::Item))
    }
}

/// Where the mask thread's pictures come from.
enum Feed {
    /// The camera's frames, through a [`MaskTap`].
    Tap(mpsc::Receiver<RgbImage>),
    /// The scripted camera's faces (demo and tests), at their times.
    Script(crate::hw::script::ScriptedFaces),
    /// A second camera of its own.
    Camera(Box<FaceCamera>),
}

/// The thread side: judges the pictures it is handed.
pub struct MaskSource {
    judge: MaskJudge,
    feed: Feed,
    wanted: Arc<AtomicBool>,
    busy: Arc<AtomicBool>,
    last: Option<(crate::domain::MaskSeen, Instant)>,
    /// Pictures judged (for the log and the benchmark).
    pub judged: u64,
}

/// A tap and its thread side.
pub fn channel(judge: MaskJudge) -> (MaskTap, MaskSource) {
    let (tx, rx) = mpsc::sync_channel(1);
    let wanted = Arc::new(AtomicBool::new(false));
    let busy = Arc::new(AtomicBool::new(false));
    let tap = MaskTap { wanted: wanted.clone(), busy: busy.clone(), last_probe: Default::default(), tx: Some(tx) };
    (tap, MaskSource { judge, feed: Feed::Tap(rx), wanted, busy, last: None, judged: 0 })
}

/// A mask thread reading its own camera (`[devices.face_camera]`). The tap goes to the driver (which says when a
/// presentation is open); it hands nothing over itself.
pub fn camera(judge: MaskJudge, frames: Box<dyn crate::hw::frames::FrameSource>) -> (MaskTap, MaskSource) {
    let wanted = Arc::new(AtomicBool::new(false));
    let busy = Arc::new(AtomicBool::new(false));
    let tap = MaskTap { wanted: wanted.clone(), busy: busy.clone(), last_probe: Default::default(), tx: None };
    let feed = Feed::Camera(Box::new(FaceCamera { frames, last_thumb: Vec::new(), armed: false, tap: tap.clone() }));
    (tap, MaskSource { judge, feed, wanted, busy, last: None, judged: 0 })
}

/// A mask thread judging the scripted camera's faces.
pub fn scripted(judge: MaskJudge, faces: crate::hw::script::ScriptedFaces) -> MaskSource {
    let wanted = Arc::new(AtomicBool::new(true));
    let busy = Arc::new(AtomicBool::new(false));
    MaskSource { judge, feed: Feed::Script(faces), wanted, busy, last: None, judged: 0 }
}

impl MaskSource {
    /// True when it plays a script's faces (and so ends with the script); a camera-fed one runs until stopped.
    pub fn is_scripted(&self) -> bool {
        matches!(self.feed, Feed::Script(_))
    }

    /// Wait at most `wait` for a picture; judge it.
    pub fn poll(&mut self, wait: Duration) -> Result<Polled<MaskObservation>, DeviceFault> {
        if !self.wanted.load(Ordering::SeqCst) {
            self.last = None; // the next presentation starts afresh
        }
        let picture = match &mut self.feed {
            Feed::Tap(rx) => match rx.recv_timeout(wait) {
                Ok(picture) => Arc::new(picture),
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(Polled::Idle),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(Polled::Done),
            },
            Feed::Script(faces) => match faces.poll(wait) {
                Polled::Item(picture) => {
                    self.last = None; // every scripted face is someone
                    picture
                }
                Polled::Idle => return Ok(Polled::Idle),
                Polled::Done => return Ok(Polled::Done),
            },
            Feed::Camera(camera) => match camera.next(wait)? {
                Polled::Item(picture) => Arc::new(picture),
                Polled::Idle => return Ok(Polled::Idle),
                Polled::Done => {
                    // A played folder of frames: the thread stays, idle, until the daemon stops.
                    std::thread::sleep(wait);
                    return Ok(Polled::Idle);
                }
            },
        };
        let judged = self.judge.judge_largest(&picture);
        drop(picture);
        // The picture is gone here: only the verdict, score and size leave.
        self.busy.store(false, Ordering::SeqCst);
        self.judged += 1;
        // A judgement's buffers (the picture's tensors, the networks' activations: several MB) are freed by now;
        // give the pages back so the daemon's resident set stays at its models' size between presentations.
        super::trim_heap();
        let judged = judged.map_err(|e| DeviceFault(format!("mask judge: {e:#}")))?;
        let Some(face) = judged else { return Ok(Polled::Idle) };
        let now = Instant::now();
        if let Some((seen, at)) = self.last
            && seen == face.mask
            && now.duration_since(at) < REPEAT
        {
            return Ok(Polled::Idle);
        }
        self.last = Some((face.mask, now));
        Ok(Polled::Item(MaskObservation { seen: face.mask, score: face.score, face_px: face.size_px() }))
    }
}

//! Frame sources: where camera frames come from. The folder replay stands where no camera is attached (demo, tests);
//! the V4L2 camera backend plugs in behind the same trait.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::GrayImage;

use super::{DeviceFault, Polled};

/// Below this mean thumbnail difference a frame is "the same scene": not decoded again, and no face is looked for.
pub const SAME_SCENE: f64 = 2.0;

/// A source of grayscale frames.
pub trait FrameSource: Send {
    /// Wait at most `wait` for the next frame.
    fn next_frame(&mut self, wait: Duration) -> Result<Polled<GrayImage>, DeviceFault>;

    /// Keep colour with the frames from now on (`on`) or stop (the mask judge wants it only while a presentation is
    /// open). Sources without colour ignore it.
    fn keep_colour(&mut self, _on: bool) {}

    /// The last frame in colour, if kept (taken: a second call gives `None`).
    fn colour(&mut self) -> Option<image::RgbImage> {
        None
    }
}

/// Replays the images of a folder (sorted by name) at a fixed frame rate, optionally in a loop. Images are decoded
/// once, at start.
pub struct FolderFrames {
    frames: Vec<GrayImage>,
    /// Where each frame came from: colour is decoded again from the file only when asked for.
    paths: Vec<PathBuf>,
    last: Option<usize>,
    interval: Duration,
    next_due: Instant,
    index: usize,
    repeat: bool,
}

impl FolderFrames {
    /// Load every PNG, JPEG or WebP image in `dir`.
    pub fn open(dir: &Path, fps: f64, repeat: bool) -> Result<FolderFrames, String> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read the frame folder {}: {e}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
                ["png", "jpg", "jpeg", "webp"].contains(&ext.as_str())
            })
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(format!("the frame folder {} holds no PNG, JPEG or WebP image", dir.display()));
        }
        let frames = paths
            .iter()
            .map(|p| crate::credential::qr::load_luma(p).map_err(|e| format!("{}: {e}", p.display())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FolderFrames {
            frames,
            paths,
            last: None,
            interval: Duration::from_secs_f64(1.0 / fps.clamp(0.1, 120.0)),
            next_due: Instant::now(),
            index: 0,
            repeat,
        })
    }
}

impl FrameSource for FolderFrames {
    fn colour(&mut self) -> Option<image::RgbImage> {
        let i = self.last.take()?;
        image::open(&self.paths[i]).ok().map(|p| p.into_rgb8())
    }

    fn next_frame(&mut self, wait: Duration) -> Result<Polled<GrayImage>, DeviceFault> {
        if self.index >= self.frames.len() {
            if !self.repeat {
                return Ok(Polled::Done);
            }
            self.index = 0;
        }
        let now = Instant::now();
        if self.next_due > now {
            let nap = (self.next_due - now).min(wait);
            std::thread::sleep(nap);
            if Instant::now() < self.next_due {
                return Ok(Polled::Idle);
            }
        }
        self.next_due += self.interval;
        let frame = self.frames[self.index].clone();
        self.last = Some(self.index);
        self.index += 1;
        Ok(Polled::Item(frame))
    }
}

/// A tiny signature of a frame for change detection: for each cell of a 16 × 12 grid, its mean brightness and its
/// contrast (mean absolute deviation). Contrast matters: a QR code can average the same grey as the wall behind it,
/// but never has the same contrast.
pub fn thumbnail(frame: &GrayImage) -> Vec<u8> {
    const W: u32 = 16;
    const H: u32 = 12;
    let (fw, fh) = frame.dimensions();
    let mut means = Vec::with_capacity((W * H) as usize);
    let mut contrasts = Vec::with_capacity((W * H) as usize);
    let mut samples = Vec::new();
    for gy in 0..H {
        for gx in 0..W {
            let (x0, x1) = (gx * fw / W, ((gx + 1) * fw / W).max(gx * fw / W + 1).min(fw));
            let (y0, y1) = (gy * fh / H, ((gy + 1) * fh / H).max(gy * fh / H + 1).min(fh));
            samples.clear();
            // Every 3rd pixel: enough to see a phone or a card arrive, a fraction of the cost of a decode.
            for y in (y0..y1).step_by(3) {
                for x in (x0..x1).step_by(3) {
                    samples.push(u32::from(frame.get_pixel(x, y).0[0]));
                }
            }
            let n = samples.len() as u32;
            let mean = samples.iter().sum::<u32>().checked_div(n).unwrap_or(0);
            let dev = samples.iter().map(|v| v.abs_diff(mean)).sum::<u32>().checked_div(n).unwrap_or(0);
            means.push(mean.min(255) as u8);
            contrasts.push(dev.min(255) as u8);
        }
    }
    means.extend(contrasts);
    means
}

/// Mean absolute difference of two thumbnails (0–255); different sizes count as changed.
pub fn difference(a: &[u8], b: &[u8]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return 255.0;
    }
    a.iter().zip(b).map(|(x, y)| f64::from(x.abs_diff(*y))).sum::<f64>() / a.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_frames_do_not_differ_and_a_new_object_does() {
        let empty = GrayImage::from_pixel(640, 480, image::Luma([120]));
        let mut card = empty.clone();
        for y in 100..380 {
            for x in 200..440 {
                card.put_pixel(x, y, image::Luma([if (x / 8 + y / 8) % 2 == 0 { 0 } else { 255 }]));
            }
        }
        assert_eq!(difference(&thumbnail(&empty), &thumbnail(&empty)), 0.0);
        assert!(difference(&thumbnail(&empty), &thumbnail(&card)) > 10.0);
    }

    #[test]
    fn a_folder_replays_its_images_in_order_and_ends() {
        let dir = tempfile::tempdir().unwrap();
        for (i, v) in [10u8, 200, 90].iter().enumerate() {
            GrayImage::from_pixel(8, 8, image::Luma([*v])).save(dir.path().join(format!("{i}.png"))).unwrap();
        }
        let mut f = FolderFrames::open(dir.path(), 100.0, false).unwrap();
        let mut seen = Vec::new();
        loop {
            match f.next_frame(Duration::from_millis(50)).unwrap() {
                Polled::Item(img) => seen.push(img.get_pixel(0, 0).0[0]),
                Polled::Idle => {}
                Polled::Done => break,
            }
        }
        assert_eq!(seen, vec![10, 200, 90]);
        assert!(FolderFrames::open(&dir.path().join("none"), 1.0, false).is_err());
    }
}

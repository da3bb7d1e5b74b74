//! The real camera: V4L2 through nokhwa (a USB UVC camera is the reference device; the Pi camera module through its
//! V4L2 compatibility). Device, resolution, frame rate and pixel format come from config.
//!
//! Frames become luma without a colour round trip: YUYV keeps every other byte (the Y samples), GRAY is taken as is,
//! MJPEG is decoded. When the camera is unplugged, every poll reports a [`DeviceFault`] (the source runner logs it
//! once and the checkpoint prompts the operator) and the camera is reopened by its path about once a second until it
//! comes back — by a stable `/dev/v4l/by-id/...` path if configured, so a replug under another number still works.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use image::{GrayImage, RgbImage};
use nokhwa::pixel_format::LumaFormat;
use nokhwa::utils::{CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution};

use super::frames::FrameSource;
use super::{DeviceFault, Polled};

/// Pixel format requested from the camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// Motion JPEG (most USB cameras at 640×480 and up).
    Mjpeg,
    /// YUYV 4:2:2 (uncompressed; luma is every other byte).
    Yuyv,
}

/// Camera settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraSettings {
    /// Device path (`/dev/video0` or a stable `/dev/v4l/by-id/...` link).
    pub device: PathBuf,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Pixel format.
    pub format: PixelFormat,
}

/// A V4L2 camera that reopens itself. The device is owned by a capture thread of its own (the nokhwa handle cannot
/// move between threads); frames reach the decoder through a bounded channel that drops frames when decoding lags.
pub struct V4l2Camera {
    rx: mpsc::Receiver<Result<Captured, DeviceFault>>,
    stop: Arc<AtomicBool>,
    /// Set while the mask judge wants colour: the capture thread then converts each frame to RGB as well.
    colour: Arc<AtomicBool>,
    last_colour: Option<RgbImage>,
}

/// A captured frame: luma always, colour only while asked for.
type Captured = (GrayImage, Option<RgbImage>);

const RETRY: Duration = Duration::from_secs(1);

impl V4l2Camera {
    /// Start the capture thread; the device is opened (and reopened) there.
    pub fn start(settings: CameraSettings) -> std::io::Result<V4l2Camera> {
        let (tx, rx) = mpsc::sync_channel(2);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let colour = Arc::new(AtomicBool::new(false));
        let want = colour.clone();
        std::thread::Builder::new().name("camera".into()).spawn(move || capture(settings, tx, flag, want))?;
        Ok(V4l2Camera { rx, stop, colour, last_colour: None })
    }
}

impl Drop for V4l2Camera {
    fn drop(&mut self) {
        // The thread sees the flag after its current frame (or sees the channel closed) and ends; not joined, so a
        // hung driver cannot hold up shutdown.
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn device_index(device: &Path) -> Result<u32, DeviceFault> {
    let real = std::fs::canonicalize(device)
        .map_err(|e| DeviceFault(format!("camera {}: not present ({e})", device.display())))?;
    real.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("video"))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| DeviceFault(format!("camera {}: not a /dev/videoN device", real.display())))
}

fn open(s: &CameraSettings) -> Result<nokhwa::Camera, DeviceFault> {
    let index = device_index(&s.device)?;
    let frame_format = match s.format {
        PixelFormat::Mjpeg => FrameFormat::MJPEG,
        PixelFormat::Yuyv => FrameFormat::YUYV,
    };
    let wanted = CameraFormat::new(Resolution::new(s.width, s.height), frame_format, s.fps);
    let requested = RequestedFormat::new::<LumaFormat>(RequestedFormatType::Closest(wanted));
    let mut cam = nokhwa::Camera::new(CameraIndex::Index(index), requested)
        .map_err(|e| DeviceFault(format!("camera {}: cannot open: {e}", s.device.display())))?;
    cam.open_stream().map_err(|e| DeviceFault(format!("camera {}: cannot start: {e}", s.device.display())))?;
    tracing::info!(device = %s.device.display(), format = %cam.camera_format(), "camera opened");
    Ok(cam)
}

fn capture(
    s: CameraSettings,
    tx: mpsc::SyncSender<Result<Captured, DeviceFault>>,
    stop: Arc<AtomicBool>,
    colour: Arc<AtomicBool>,
) {
    let mut camera: Option<nokhwa::Camera> = None;
    while !stop.load(Ordering::SeqCst) {
        let cam = match camera.as_mut() {
            Some(c) => c,
            None => match open(&s) {
                Ok(c) => camera.insert(c),
                Err(fault) => {
                    if let Err(mpsc::TrySendError::Disconnected(_)) = tx.try_send(Err(fault)) {
                        return;
                    }
                    std::thread::sleep(RETRY);
                    continue;
                }
            },
        };
        match cam.frame() {
            Ok(buffer) => {
                let res = buffer.resolution();
                let format = buffer.source_frame_format();
                match to_luma(format, res.width(), res.height(), buffer.buffer()) {
                    Ok(img) => {
                        let rgb = if colour.load(Ordering::SeqCst) {
                            to_rgb(format, res.width(), res.height(), buffer.buffer()).ok()
                        } else {
                            None
                        };
                        if let Err(mpsc::TrySendError::Disconnected(_)) = tx.try_send(Ok((img, rgb))) {
                            return;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "camera frame skipped"),
                }
            }
            Err(e) => {
                // Unplugged (or the driver gave up): drop the handle, report, and reopen after a pause.
                camera = None;
                let fault = DeviceFault(format!("camera {}: {e}", s.device.display()));
                if let Err(mpsc::TrySendError::Disconnected(_)) = tx.try_send(Err(fault)) {
                    return;
                }
                std::thread::sleep(RETRY);
            }
        }
    }
}

/// Luma from a raw frame, without needless copies.
pub fn to_luma(format: FrameFormat, width: u32, height: u32, data: &[u8]) -> Result<GrayImage, String> {
    let pixels = (width as usize) * (height as usize);
    match format {
        FrameFormat::YUYV if data.len() >= pixels * 2 => {
            let y: Vec<u8> = data.iter().step_by(2).take(pixels).copied().collect();
            GrayImage::from_raw(width, height, y).ok_or_else(|| "bad YUYV frame".into())
        }
        FrameFormat::GRAY if data.len() >= pixels => {
            GrayImage::from_raw(width, height, data[..pixels].to_vec()).ok_or_else(|| "bad GRAY frame".into())
        }
        FrameFormat::MJPEG => image::load_from_memory_with_format(data, image::ImageFormat::Jpeg)
            .map(|i| i.into_luma8())
            .map_err(|e| format!("bad MJPEG frame: {e}")),
        other => Err(format!("{other} frames of {} bytes at {width}×{height} are not supported", data.len())),
    }
}

/// Colour from a raw frame (BT.601, full range), for the mask judge: YUYV, GRAY (as grey RGB), MJPEG.
pub fn to_rgb(format: FrameFormat, width: u32, height: u32, data: &[u8]) -> Result<RgbImage, String> {
    let pixels = (width as usize) * (height as usize);
    match format {
        FrameFormat::YUYV if data.len() >= pixels * 2 && width.is_multiple_of(2) => {
            let mut out = Vec::with_capacity(pixels * 3);
            for quad in data[..pixels * 2].chunks_exact(4) {
                let (u, v) = (f32::from(quad[1]) - 128.0, f32::from(quad[3]) - 128.0);
                for y in [quad[0], quad[2]] {
                    let y = f32::from(y);
                    out.push((y + 1.402 * v).clamp(0.0, 255.0) as u8);
                    out.push((y - 0.344_136 * u - 0.714_136 * v).clamp(0.0, 255.0) as u8);
                    out.push((y + 1.772 * u).clamp(0.0, 255.0) as u8);
                }
            }
            RgbImage::from_raw(width, height, out).ok_or_else(|| "bad YUYV frame".into())
        }
        FrameFormat::GRAY if data.len() >= pixels => {
            let out: Vec<u8> = data[..pixels].iter().flat_map(|&g| [g, g, g]).collect();
            RgbImage::from_raw(width, height, out).ok_or_else(|| "bad GRAY frame".into())
        }
        FrameFormat::MJPEG => image::load_from_memory_with_format(data, image::ImageFormat::Jpeg)
            .map(|i| i.into_rgb8())
            .map_err(|e| format!("bad MJPEG frame: {e}")),
        other => Err(format!("{other} frames of {} bytes at {width}×{height} are not supported", data.len())),
    }
}

impl FrameSource for V4l2Camera {
    fn keep_colour(&mut self, on: bool) {
        self.colour.store(on, Ordering::SeqCst);
        if !on {
            self.last_colour = None;
        }
    }

    fn colour(&mut self) -> Option<RgbImage> {
        self.last_colour.take()
    }

    fn next_frame(&mut self, wait: Duration) -> Result<Polled<GrayImage>, DeviceFault> {
        match self.rx.recv_timeout(wait) {
            Ok(Ok((frame, rgb))) => {
                self.last_colour = rgb;
                Ok(Polled::Item(frame))
            }
            Ok(Err(fault)) => Err(fault),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(Polled::Idle),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(DeviceFault("the camera thread has stopped".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_luma_is_every_other_byte_and_short_frames_are_refused() {
        let data = [10u8, 128, 20, 128, 30, 128, 40, 128];
        let img = to_luma(FrameFormat::YUYV, 2, 2, &data).unwrap();
        assert_eq!(img.into_raw(), vec![10, 20, 30, 40]);
        assert!(to_luma(FrameFormat::YUYV, 4, 4, &data).is_err());
        assert!(to_luma(FrameFormat::MJPEG, 2, 2, b"not a jpeg").is_err());
        assert!(to_luma(FrameFormat::NV12, 2, 2, &data).is_err());
        // Colour: a grey pair stays grey; a short frame is refused.
        let grey = [100u8, 128, 100, 128];
        assert_eq!(to_rgb(FrameFormat::YUYV, 2, 1, &grey).unwrap().as_raw(), &vec![100u8; 6]);
        // Strong red: V high.
        let red = to_rgb(FrameFormat::YUYV, 2, 1, &[76, 85, 76, 255]).unwrap();
        assert!(red.get_pixel(0, 0).0[0] > 240 && red.get_pixel(0, 0).0[2] < 20, "{:?}", red.get_pixel(0, 0));
        assert!(to_rgb(FrameFormat::YUYV, 4, 4, &data).is_err());
    }

    #[test]
    fn a_missing_device_is_a_fault_then_a_retry_not_a_panic() {
        let mut cam = V4l2Camera::start(CameraSettings {
            device: "/dev/v4l/by-id/usb-no-such-camera-video-index0".into(),
            width: 640,
            height: 480,
            fps: 15,
            format: PixelFormat::Mjpeg,
        })
        .unwrap();
        let e = cam.next_frame(Duration::from_millis(500)).unwrap_err();
        assert!(e.0.contains("not present"), "{e}");
        // It keeps trying about once a second, reporting each failed attempt; between attempts the gate is idle.
        assert_eq!(cam.next_frame(Duration::from_millis(100)).unwrap(), Polled::Idle);
        let e = cam.next_frame(Duration::from_millis(1500)).unwrap_err();
        assert!(e.0.contains("not present"), "{e}");
    }
}

//! QR decoding behind one small trait, with a measured choice of backend (see README "Performance"):
//! - `zxing` (default): the zxing-cpp library through its Rust crate, built from its bundled sources;
//! - `rqrr`: pure Rust, with a little preprocessing (inverted and downscaled retries).
//!
//! A decoder that panics on a strange image must not take the daemon down: every backend runs inside
//! [`Contained`], which turns a panic into [`DecodeError::Panicked`] and counts it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};

use image::GrayImage;

/// Which decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecoderKind {
    /// zxing-cpp.
    Zxing,
    /// rqrr.
    Rqrr,
}

impl DecoderKind {
    /// Every backend.
    pub const ALL: [DecoderKind; 2] = [DecoderKind::Zxing, DecoderKind::Rqrr];

    /// The name used in config and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            DecoderKind::Zxing => "zxing",
            DecoderKind::Rqrr => "rqrr",
        }
    }

    /// Parse a name.
    pub fn parse(s: &str) -> Option<DecoderKind> {
        DecoderKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// A contained decoder of this kind.
    pub fn decoder(self) -> Contained {
        let inner: Box<dyn QrDecoder> = match self {
            DecoderKind::Zxing => Box::new(Zxing),
            DecoderKind::Rqrr => Box::new(Rqrr),
        };
        Contained::new(inner)
    }
}

/// Why a frame gave no text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The backend reported an error.
    #[error("{0}")]
    Backend(String),
    /// The backend panicked; the panic was contained.
    #[error("the decoder panicked on this image (contained): {0}")]
    Panicked(String),
}

/// A QR decoder: all QR texts found in a grayscale frame.
pub trait QrDecoder: Send + Sync {
    /// Decode.
    fn decode(&self, frame: &GrayImage) -> Result<Vec<String>, DecodeError>;
}

/// zxing-cpp, QR only, in two passes. The first binarizes with one global histogram threshold at the given
/// resolution only: phone screens and printed passes are evenly lit, high-contrast and read at once, for about a
/// quarter of the cost of the adaptive binarizer. Only if it finds nothing does the second pass run, with the anchor's
/// own configuration (local-average binarizer, try harder, inverted, rotated, downscaled), so the decode rate is never
/// below the anchor's. Measured by `scripts/bench-decode`.
pub struct Zxing;

impl Zxing {
    fn pass(view: &zxingcpp::ImageView<'_>, harder: bool) -> Result<Vec<String>, DecodeError> {
        // Plain text mode: the payload the symbol holds, control characters and all (the default mode escapes them
        // for display as <SOH>…, which is not what the credential parsers or `sibi code scan` must see).
        let reader = zxingcpp::read().formats([zxingcpp::BarcodeFormat::QRCode]).text_mode(zxingcpp::TextMode::Plain);
        let reader = if harder {
            reader.try_harder(true).try_invert(true).try_rotate(true).try_downscale(true)
        } else {
            reader
                .binarizer(zxingcpp::Binarizer::GlobalHistogram)
                .try_harder(false)
                .try_invert(false)
                .try_rotate(false)
                .try_downscale(false)
        };
        let found = reader.from(view).map_err(|e| DecodeError::Backend(e.to_string()))?;
        // The payload's bytes when they are UTF-8 (the common case, and zxing's charset guess can go wrong once control
        // characters are in it); otherwise its text in the declared (ECI) or guessed charset.
        Ok(found
            .into_iter()
            .filter(|b| b.is_valid())
            .map(|b| String::from_utf8(b.bytes()).unwrap_or_else(|_| b.text()))
            .collect())
    }
}

impl QrDecoder for Zxing {
    fn decode(&self, frame: &GrayImage) -> Result<Vec<String>, DecodeError> {
        let view =
            zxingcpp::ImageView::from_slice(frame.as_raw(), frame.width(), frame.height(), zxingcpp::ImageFormat::Lum)
                .map_err(|e| DecodeError::Backend(e.to_string()))?;
        let fast = Zxing::pass(&view, false)?;
        if !fast.is_empty() {
            return Ok(fast);
        }
        Zxing::pass(&view, true)
    }
}

/// rqrr with retries: as is, inverted, and halved when large.
pub struct Rqrr;

impl Rqrr {
    fn once(frame: &GrayImage) -> Vec<String> {
        let mut prepared = rqrr::PreparedImage::prepare(frame.clone());
        prepared.detect_grids().into_iter().filter_map(|g| g.decode().ok().map(|(_, text)| text)).collect()
    }
}

impl QrDecoder for Rqrr {
    fn decode(&self, frame: &GrayImage) -> Result<Vec<String>, DecodeError> {
        let found = Rqrr::once(frame);
        if !found.is_empty() {
            return Ok(found);
        }
        let mut inverted = frame.clone();
        image::imageops::invert(&mut inverted);
        let found = Rqrr::once(&inverted);
        if !found.is_empty() || frame.width().max(frame.height()) < 1000 {
            return Ok(found);
        }
        let half = image::imageops::resize(
            frame,
            frame.width() / 2,
            frame.height() / 2,
            image::imageops::FilterType::Triangle,
        );
        Ok(Rqrr::once(&half))
    }
}

/// A decoder whose panics are caught and counted.
pub struct Contained {
    inner: Box<dyn QrDecoder>,
    panics: AtomicU64,
}

impl Contained {
    /// Wrap a decoder.
    pub fn new(inner: Box<dyn QrDecoder>) -> Contained {
        Contained { inner, panics: AtomicU64::new(0) }
    }

    /// How many panics were contained so far.
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// Decode, containing a panic.
    pub fn decode(&self, frame: &GrayImage) -> Result<Vec<String>, DecodeError> {
        // Silence the default hook's message for this call only would race with other threads; the panic message
        // still reaches stderr once, which is what an operator's log should show anyway.
        match catch_unwind(AssertUnwindSafe(|| self.inner.decode(frame))) {
            Ok(r) => r,
            Err(payload) => {
                self.panics.fetch_add(1, Ordering::Relaxed);
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::warn!(panic = %msg, "QR decoder panicked; frame skipped");
                Err(DecodeError::Panicked(msg))
            }
        }
    }
}

/// Render `text` as a QR code image: zxing-cpp's writer, error-correction level M (sturdy on paper and screens),
/// `scale` pixels per module, with quiet zones. Used for printed passes, and by tests and benchmarks to make frames.
/// Text beyond ASCII goes in as its UTF-8 bytes (the writer would otherwise pick Shift_JIS for 汉字 and lose them).
pub fn render(text: &str, scale: i32) -> Result<GrayImage, String> {
    let creator = zxingcpp::create(zxingcpp::BarcodeFormat::QRCode).options("ecLevel=M");
    let code = if text.is_ascii() { creator.from_str(text) } else { creator.from_slice(text.as_bytes()) }
        .map_err(|e| format!("cannot encode the QR code: {e}"))?;
    let img = code.to_image_with(&zxingcpp::write().scale(scale)).map_err(|e| format!("cannot render it: {e}"))?;
    GrayImage::from_raw(img.width() as u32, img.height() as u32, img.data()).ok_or_else(|| "bad QR image".into())
}

/// Load an image file as 8-bit luma.
pub fn load_luma(path: &std::path::Path) -> Result<GrayImage, String> {
    let img = image::ImageReader::open(path)
        .map_err(|e| format!("cannot open: {e}"))?
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?
        .decode()
        .map_err(|e| format!("not an image this build can read: {e}"))?;
    Ok(img.into_luma8())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Panicky;
    impl QrDecoder for Panicky {
        fn decode(&self, _: &GrayImage) -> Result<Vec<String>, DecodeError> {
            panic!("index out of bounds in a strange image")
        }
    }

    fn qr_frame(text: &str) -> GrayImage {
        render(text, 4).unwrap()
    }

    #[test]
    fn both_backends_read_a_clean_code() {
        let frame = qr_frame("SIBI-TEST-1234");
        for kind in DecoderKind::ALL {
            assert_eq!(kind.decoder().decode(&frame).unwrap(), vec!["SIBI-TEST-1234".to_string()], "{kind:?}");
        }
    }

    #[test]
    fn a_payload_with_control_characters_comes_back_as_the_symbol_holds_it() {
        let text = "\u{1}\u{10}AD:SUB:阿;;";
        let frame = qr_frame(text);
        for kind in DecoderKind::ALL {
            assert_eq!(kind.decoder().decode(&frame).unwrap(), vec![text.to_string()], "{kind:?}: not escaped");
        }
    }

    #[test]
    fn an_empty_frame_has_no_code_and_a_panic_is_contained_and_counted() {
        let blank = GrayImage::from_pixel(64, 48, image::Luma([200]));
        for kind in DecoderKind::ALL {
            assert!(kind.decoder().decode(&blank).unwrap().is_empty());
        }
        let c = Contained::new(Box::new(Panicky));
        assert!(matches!(c.decode(&blank), Err(DecodeError::Panicked(m)) if m.contains("strange")));
        assert!(c.decode(&blank).is_err());
        assert_eq!(c.panics(), 2);
    }
}

//! Reading credentials: camera frames → QR text ([`qr`]) → a verified credential.
//!
//! The three credential kinds of DESIGN.md §3 (community pass, health code, EU DCC) plug in here; today this module
//! holds the QR decoding with its measured choice of backend.

pub mod dcc;
pub mod qr;

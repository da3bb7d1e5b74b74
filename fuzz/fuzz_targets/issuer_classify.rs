//! Issuer classification and the full format classification on any text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sibi::credential::health_code::{Issuer, Registry};

fuzz_target!(|data: &[u8]| {
    let registry = Registry {
        issuers: vec![
            Issuer { name: "湖北".into(), region: "420000".into(), prefixes: vec!["https://jkm.hubei.example/".into()] },
            Issuer { name: "测试".into(), region: "000000".into(), prefixes: vec!["HCT:".into(), "".into(), "健康".into()] },
        ],
    };
    let text = String::from_utf8_lossy(data);
    let _ = registry.classify(&text);
    let _ = sibi::credential::classify(&text, &registry);
});

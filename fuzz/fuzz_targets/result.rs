//! Delegate results: any JSON, any source and target version. What converts must
//! parse back in the target version, and converting again changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multus::cni::CniResult;
use multus::cni::version::SUPPORTED_VERSIONS;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, json)) = data.split_first() else { return };
    let from = SUPPORTED_VERSIONS[(sel & 7) as usize % SUPPORTED_VERSIONS.len()];
    let to = SUPPORTED_VERSIONS[(sel >> 3) as usize % SUPPORTED_VERSIONS.len()];
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(json) else { return };
    if let Ok(out) = CniResult::convert(&value, from, to) {
        let back = CniResult::from_value(&out, to).expect("a converted result parses back");
        assert_eq!(back.cni_version, to);
        let again = CniResult::convert(&out, to, to).expect("converts again");
        assert_eq!(again, out, "conversion to the same version is stable");
    }
});

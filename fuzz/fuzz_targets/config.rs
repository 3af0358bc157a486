//! The config loader, both formats: any text gives a config or an error naming the file (and,
//! when it can, line and field), never a panic. An accepted config serializes and parses back.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match synapsor::config::parse(text, Path::new("fuzz.yaml")) {
        Ok(loaded) => {
            // What `synapsor check` prints must load again as the same config.
            let again = serde_yaml::to_string(&loaded.config).expect("serializable");
            synapsor::config::parse(&again, Path::new("again.yaml"))
                .unwrap_or_else(|e| panic!("printed config does not load: {e}\n{again}"));
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.starts_with("fuzz.yaml"), "{shown}");
        }
    }
});

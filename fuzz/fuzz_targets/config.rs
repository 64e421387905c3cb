//! Configuration text: parsing and validation never panic; a valid
//! configuration survives being written back as TOML.
#![no_main]

use std::path::Path;

use flow_store::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut config) = Config::from_toml_str(text) else {
        return;
    };
    let valid = config.validate();
    let _ = (config.listen_addr(), config.log_level());
    if let Err(e) = &valid {
        let _ = e.to_string();
    }
    if let Ok(written) = toml::to_string(&config) {
        let reread = Config::from_toml_str(&written).expect("our own TOML parses");
        assert_eq!(reread, config, "round trip changed the configuration");
        assert_eq!(reread.validate().is_ok(), valid.is_ok());
    }
    config.resolve_paths(Path::new("/etc/flow-store"));
    let _ = config.validate();
});

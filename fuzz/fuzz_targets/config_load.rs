//! Fuzz target: the configuration loader (`config::load_str`: YAML parsing, `${VAR}` and
//! `$file`/`$env` substitution, validation with key paths). Nothing may panic, and an error
//! report never contains the substituted secret.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzz-secret-value-7f3a";

fuzz_target!(|data: &[u8]| {
    let Ok(yaml) = std::str::from_utf8(data) else {
        return;
    };
    let env: HashMap<String, String> = HashMap::from([("S".to_owned(), SECRET.to_owned())]);
    // base_dir points nowhere readable, so `$file` references fail instead of reading files.
    let dir = std::path::Path::new("/nonexistent-token-broker-fuzz");
    if let Err(e) = token_broker::config::load_str(yaml, &env, dir) {
        let text = e.to_string();
        assert!(
            !text.contains(SECRET),
            "an error report leaked a substituted secret"
        );
    }
});

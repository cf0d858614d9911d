//! Config loading (SPEC §3, §10a): any TOML text, plus environment
//! overrides, must load or be refused with a `ConfigError`, never panic.
//!
//! Input layout: TOML text, optionally followed by a NUL byte and
//! `KEY=VALUE` lines that become `WSGATE__KEY=VALUE` overrides.
//!
//! Checked, beyond "no panic": an error names its source and has a
//! message; a config that loads renders (`wsgate check`) to TOML that
//! loads again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::config::{load_with_env, ConfigSource};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (toml, env_text) = text.split_once('\0').unwrap_or((text, ""));
    let env: Vec<(String, String)> = env_text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("WSGATE__{k}"), v.to_string()))
        .collect();
    match load_with_env(&ConfigSource::BuiltIn(toml.to_string()), env) {
        Err(e) => {
            assert!(!e.source.is_empty());
            assert!(!e.message.is_empty(), "empty message for key {:?}", e.key);
        }
        Ok(settings) => {
            let printed = settings.to_redacted_toml();
            assert!(!printed.starts_with("# cannot render"), "{printed}");
            if let Err(e) = load_with_env(&ConfigSource::BuiltIn(printed.clone()), Vec::new()) {
                panic!("`check` output does not load again: {e}\n--- input\n{toml}\n--- printed\n{printed}");
            }
        }
    }
});

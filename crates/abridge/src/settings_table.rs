//! README.md's settings table against the settings the code reads: a setting added without a
//! row, or a row whose setting is gone or misspelt, fails this test.

use std::collections::BTreeSet;

use abridge_core::settings::{Settings, SettingsSource};
use clap::CommandFactory;

/// Every `ABRIDGE_*` variable the loaders ask for, with each summarizer backend configured
/// (some keys are read only for the backend in use).
fn read_by_loaders() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for backend in ["extractive", "openai", "anthropic"] {
        let src = SettingsSource::from_vars([
            ("ABRIDGE_SUMMARIZER", backend),
            ("ABRIDGE_OPENAI_API_KEY", "sk-test"),
            ("ABRIDGE_ANTHROPIC_API_KEY", "sk-test"),
        ]);
        let settings = Settings::from_source(&src).expect("core settings");
        abridge_summarize::config::SummarizeConfig::from_source(&src, &settings)
            .expect("summarizer settings");
        abridge_api::settings::ApiSettings::from_source(&src).expect("API settings");
        abridge_youtube::YoutubeConfig::from_source(&src).expect("YouTube settings");
        keys.extend(src.keys_asked().iter().map(|k| SettingsSource::env_name(k)));
    }
    keys
}

/// The variables the command line reads (`env = ...` on an argument).
fn read_by_the_command_line() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                out.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&crate::cli::Cli::command(), &mut out);
    out
}

/// The variables named in the first column of README's table rows (one row may name two:
/// "`ABRIDGE_X_BASE_MS` / `ABRIDGE_X_MAX_MS`").
fn documented() -> BTreeSet<String> {
    let readme = include_str!("../../../README.md");
    readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `ABRIDGE_"))
        .filter_map(|rest| rest.split_once(" |").map(|(first, _)| first))
        .flat_map(|first| {
            format!("`ABRIDGE_{first}")
                .split('`')
                .filter(|part| part.starts_with("ABRIDGE_"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn every_setting_read_has_a_readme_row_and_every_row_a_setting() {
    let read: BTreeSet<String> = read_by_loaders()
        .into_iter()
        .chain(read_by_the_command_line())
        .collect();
    let documented = documented();
    let undocumented: Vec<_> = read.difference(&documented).collect();
    let unread: Vec<_> = documented.difference(&read).collect();
    assert!(
        undocumented.is_empty() && unread.is_empty(),
        "read but not in README's settings table: {undocumented:?}; in the table but read by nothing: {unread:?}"
    );
}

#[test]
fn the_known_keys_are_the_ones_read() {
    let known: BTreeSet<String> = abridge_core::settings::KNOWN_KEYS
        .iter()
        .map(|k| SettingsSource::env_name(k))
        .collect();
    let read: BTreeSet<String> = read_by_loaders()
        .into_iter()
        .chain(read_by_the_command_line())
        .collect();
    assert_eq!(
        known, read,
        "KNOWN_KEYS (abridge-core) must list exactly the settings the loaders and the command line read"
    );
}

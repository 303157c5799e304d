//! The mechanism under `Config::from_sources`: one value per setting from
//! a flag or the environment, every error collected, and the effective
//! value of each setting recorded for `berth config`.

use std::collections::HashMap;
use std::time::Duration;

use super::values::{fmt_duration, positive_duration};
use super::{ConfigError, Effective, SETTINGS, Setting, Source};

/// Resolves settings from flags and environment, collecting every error and
/// the effective value of each setting.
pub(super) struct Resolver<'a> {
    flags: &'a HashMap<&'static str, String>,
    env: &'a dyn Fn(&str) -> Option<String>,
    pub(super) errors: Vec<ConfigError>,
    pub(super) effective: Vec<Effective>,
}

impl<'a> Resolver<'a> {
    pub(super) fn new(
        flags: &'a HashMap<&'static str, String>,
        env: &'a dyn Fn(&str) -> Option<String>,
    ) -> Self {
        Self {
            flags,
            env,
            errors: Vec::new(),
            effective: Vec::new(),
        }
    }

    pub(super) fn setting(name: &str) -> &'static Setting {
        SETTINGS
            .iter()
            .find(|s| s.env == name)
            .unwrap_or_else(|| panic!("setting {name} is missing from config::SETTINGS"))
    }

    /// The raw value and its source, keeping an empty environment value.
    pub(super) fn raw_keep_empty(&self, name: &str) -> Option<(String, Source)> {
        if let Some(v) = self.flags.get(name) {
            return Some((v.clone(), Source::Flag));
        }
        (self.env)(name).map(|v| (v, Source::Env))
    }

    /// The raw value, an empty one counting as unset.
    pub(super) fn raw(&self, name: &str) -> Option<String> {
        self.raw_with_source(name).map(|(v, _)| v)
    }

    pub(super) fn raw_with_source(&self, name: &str) -> Option<(String, Source)> {
        self.raw_keep_empty(name)
            .filter(|(v, _)| !v.trim().is_empty())
    }

    pub(super) fn show(&mut self, name: &'static str, value: String, source: Source) {
        let setting = Self::setting(name);
        self.effective.push(Effective {
            name: setting.env,
            value,
            source,
        });
    }

    pub(super) fn bad(&mut self, name: &'static str, raw: String, message: String) {
        let setting = Self::setting(name);
        let value = if setting.secret { "***".into() } else { raw };
        self.errors.push(ConfigError {
            name: setting.env,
            value: Some(value),
            message,
        });
    }

    pub(super) fn conflict(&mut self, name: &'static str, message: String) {
        self.errors.push(ConfigError {
            name: Self::setting(name).env,
            value: None,
            message,
        });
    }

    /// A setting with a default (given in its raw form, `""` for a default
    /// the parser produces from an empty input).
    pub(super) fn value<T>(
        &mut self,
        name: &'static str,
        default: &str,
        parse: impl Fn(&str) -> Result<T, String>,
        show: impl Fn(&T) -> String,
    ) -> Option<T> {
        let (raw, source) = self
            .raw_with_source(name)
            .unwrap_or_else(|| (default.to_string(), Source::Default));
        match parse(raw.trim()) {
            Ok(v) => {
                let shown = if Self::setting(name).secret {
                    "***".into()
                } else {
                    show(&v)
                };
                self.show(name, shown, source);
                Some(v)
            }
            Err(message) => {
                self.bad(name, raw, message);
                None
            }
        }
    }

    /// A setting that may be unset. `Some(None)` is unset, `None` invalid.
    pub(super) fn optional<T>(
        &mut self,
        name: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
        show: impl Fn(&T) -> String,
    ) -> Option<Option<T>> {
        match self.raw_with_source(name) {
            None => {
                self.show(name, "(unset)".into(), Source::Default);
                Some(None)
            }
            Some((raw, source)) => match parse(raw.trim()) {
                Ok(v) => {
                    let shown = show(&v);
                    self.show(name, shown, source);
                    Some(Some(v))
                }
                Err(message) => {
                    self.bad(name, raw, message);
                    None
                }
            },
        }
    }

    pub(super) fn required<T>(
        &mut self,
        name: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
        show: impl Fn(&T) -> String,
    ) -> Option<T> {
        match self.optional(name, parse, show)? {
            Some(v) => Some(v),
            None => {
                self.conflict(name, "is required".into());
                None
            }
        }
    }

    pub(super) fn duration(&mut self, name: &'static str, default: &str) -> Option<Duration> {
        self.value(name, default, positive_duration, fmt_duration)
    }
}

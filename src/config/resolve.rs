//! The mechanism under `Config::from_sources`: one value per setting from
//! a flag or the environment, every error collected, and the effective
//! value of each setting recorded for `berth config`.

use std::collections::HashMap;
use std::time::Duration;

use super::mask::mask_url;
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

    /// Records the effective value `berth config` shows, a URL's user info
    /// masked.
    pub(super) fn show(&mut self, name: &'static str, value: String, source: Source) {
        let setting = Self::setting(name);
        let value = if setting.url { mask_url(&value) } else { value };
        self.effective.push(Effective {
            name: setting.env,
            value,
            source,
        });
    }

    /// Records a bad value; the error echoes it as `berth config` would
    /// show it (a secret as `***`, a URL's user info masked).
    pub(super) fn bad(&mut self, name: &'static str, raw: String, message: String) {
        let setting = Self::setting(name);
        let value = if setting.secret {
            "***".into()
        } else if setting.url {
            mask_url(&raw)
        } else {
            raw
        };
        self.errors.push(ConfigError {
            name: setting.env,
            value: Some(value),
            message,
            from_flag: self.flags.contains_key(name),
        });
    }

    pub(super) fn conflict(&mut self, name: &'static str, message: String) {
        self.errors.push(ConfigError {
            name: Self::setting(name).env,
            value: None,
            message,
            from_flag: false,
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::config::{Config, ConfigErrors};

    const DB: &str = "postgres://berth:s3cret-pw@db.internal:5432/berth";

    fn from_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_sources(&HashMap::new(), move |name| env.get(name).cloned())
    }

    #[test]
    fn a_bad_repo_prefix_is_echoed_with_its_user_info_masked() {
        for (raw, shown) in [
            (
                "https://tok-123@git.example/org /tpl-",
                "https://***@git.example/org /tpl-",
            ),
            (
                "https://bob:pw-123@git.example/org /tpl-",
                "https://bob:***@git.example/org /tpl-",
            ),
            ("tok-123@git.example/org/tpl-", "***@git.example/org/tpl-"),
        ] {
            let Err(errors) = from_env(&[
                ("DATABASE_URL", DB),
                ("MOLECULE_LOCAL_TEMPLATE_REPO_PREFIX", raw),
            ]) else {
                panic!("{raw} is accepted");
            };
            let text = errors.to_string();
            assert!(
                text.contains("MOLECULE_LOCAL_TEMPLATE_REPO_PREFIX"),
                "{text}"
            );
            assert!(text.contains(&format!("{shown:?}")), "{text}");
            assert!(
                !text.contains("tok-123") && !text.contains("pw-123"),
                "{text}"
            );
        }
    }

    #[test]
    fn berth_config_shows_a_repo_prefix_without_its_user_info() {
        for (raw, masked) in [
            (
                "https://tok-123@git.example/org/tpl-",
                "https://***@git.example/org/tpl-",
            ),
            (
                "https://bob:pw-123@git.example/org/tpl-",
                "https://bob:***@git.example/org/tpl-",
            ),
        ] {
            let c = from_env(&[
                ("DATABASE_URL", DB),
                ("MOLECULE_LOCAL_TEMPLATE_REPO_PREFIX", raw),
            ])
            .unwrap();
            let shown = c
                .effective
                .iter()
                .find(|e| e.name == "MOLECULE_LOCAL_TEMPLATE_REPO_PREFIX")
                .unwrap();
            assert_eq!(shown.value, masked);
            let all = format!("{:?} {c:?} {}", c.effective, c.images.describe());
            assert!(!all.contains("tok-123") && !all.contains("pw-123"), "{all}");
        }
    }
}

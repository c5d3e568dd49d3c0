//! Layering a system's settings: flags and `GIRDER_*` variables (merged by clap)
//! over the system's `[<slug>]` table of the TOML file. Defaults are the system's own,
//! applied when it resolves its settings.

use clap::ArgMatches;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// A value is out of range or malformed.
    #[error("{setting}: {reason}")]
    Invalid {
        /// The setting, as named in the TOML file (`bitly.codes`).
        setting: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// The flags could not be read (a bug in a system's settings type).
    #[error("reading flags")]
    Flags(#[source] clap::Error),
    /// The system's TOML table does not have the expected shape.
    #[error("[{table}] in the config file")]
    File {
        /// The table.
        table: &'static str,
        /// What toml reported: an unknown key, a wrong type.
        #[source]
        source: toml::de::Error,
    },
}

impl SettingsError {
    /// `setting` is invalid because of `reason`.
    pub fn invalid(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid { setting: setting.into(), reason: reason.into() }
    }

    /// `Ok` when `value` is in `min..=max`, else `setting` is invalid, saying the range.
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] naming `setting`.
    pub fn check_range(setting: &str, value: i64, min: i64, max: i64) -> Result<(), Self> {
        if (min..=max).contains(&value) {
            Ok(())
        } else {
            Err(Self::invalid(setting, format!("must be {min}..={max}, got {value}")))
        }
    }
}

/// The settings of the system with slug `table`: the flags in `matches` over the
/// file's `[table]` section.
///
/// # Errors
/// The section does not fit `S`.
pub(crate) fn layered<S>(
    table: &'static str,
    matches: &ArgMatches,
    file: Option<&toml::Table>,
) -> Result<S, SettingsError>
where
    S: clap::Args + Serialize + DeserializeOwned + Default,
{
    let flags = S::from_arg_matches(matches).map_err(SettingsError::Flags)?;
    let Some(section) = file.and_then(|f| f.get(table)) else { return Ok(flags) };
    let mut merged = match section {
        toml::Value::Table(t) => t.clone(),
        other => {
            return Err(SettingsError::File {
                table,
                source: <toml::de::Error as serde::de::Error>::custom(format!(
                    "expected a table, found {}",
                    other.type_str()
                )),
            });
        }
    };
    // toml leaves unset (None) fields out, so only what a flag set replaces the file's.
    let set_by_flags = toml::Table::try_from(&flags).map_err(|e| SettingsError::File {
        table,
        source: <toml::de::Error as serde::de::Error>::custom(e.to_string()),
    })?;
    merged.extend(set_by_flags);
    toml::Value::Table(merged).try_into().map_err(|source| SettingsError::File { table, source })
}

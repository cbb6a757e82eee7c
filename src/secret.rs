//! Passwords: read from a file or the environment, never from a flag, never printed.

use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// A password or other secret. `Debug` and `Display` print `***`, so a secret that ends up in a
/// log line or an error message by accident reveals nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Why a secret could not be read.
#[derive(Debug, Error)]
pub enum SecretError {
    /// The password file could not be read.
    #[error("cannot read password file {path}: {source}")]
    Read {
        /// The file named on the command line.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file or variable was empty (after removing the trailing newline).
    #[error("{0} is empty")]
    Empty(String),
    /// Neither a file nor the environment variable was given.
    #[error("no password given: use {flag} FILE or set {env}")]
    Missing {
        /// The flag that names a password file.
        flag: &'static str,
        /// The environment variable that may hold the password.
        env: &'static str,
    },
}

/// Reads a password from `path`: the whole file minus one trailing line break, so both
/// `echo secret > file` and editors that add no newline work. Inner whitespace is kept.
pub fn read_file(path: &Path) -> Result<Secret, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    from_text(&text, || format!("password file {}", path.display()))
}

/// The password from `file` if given, else from the environment variable `env`.
pub fn from_file_or_env(
    file: Option<&Path>,
    flag: &'static str,
    env: &'static str,
) -> Result<Secret, SecretError> {
    match file {
        Some(path) => read_file(path),
        None => match std::env::var(env) {
            Ok(text) => from_text(&text, || format!("environment variable {env}")),
            Err(_) => Err(SecretError::Missing { flag, env }),
        },
    }
}

fn from_text(text: &str, what: impl FnOnce() -> String) -> Result<Secret, SecretError> {
    let line = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text);
    if line.is_empty() {
        Err(SecretError::Empty(what()))
    } else {
        Ok(Secret::new(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn file_loses_one_trailing_newline_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        for (content, expected) in [
            ("secret\n", "secret"),
            ("secret", "secret"),
            ("secret\r\n", "secret"),
            (" two words \n", " two words "),
        ] {
            std::fs::write(&path, content).unwrap();
            assert_eq!(read_file(&path).unwrap().expose(), expected);
        }
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(read_file(&path), Err(SecretError::Empty(_))));
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = read_file(Path::new("/nonexistent/pw")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/pw"), "{err}");
    }

    #[test]
    fn missing_everywhere_says_how_to_give_it() {
        let err =
            from_file_or_env(None, "--password-file", "MQTT2XMPP_TEST_UNSET_VARIABLE").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no password given: use --password-file FILE or set MQTT2XMPP_TEST_UNSET_VARIABLE"
        );
    }
}

#![allow(dead_code)]
//! Files the tests hand to the program under test (password files, say).

use std::path::Path;

/// Writes `password` to a file in `dir` and returns its path as a string.
pub fn password_file(dir: &Path, name: &str, password: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{password}\n")).expect("write password file");
    path.to_string_lossy().into_owned()
}
